"""Sweeps on Dask (issue 15): the dataset layout, resume after a kill -9, refusal of a mismatched store,
each cell against the direct single-(p, q) computation and the paper's prediction, hostile CLI values;
the cooccurrence and ntp_order sweeps against their direct runs, resume of ntp_order, the figures, and the
removal of a store's stale `.NAME.partial-PID` folder left by a kill -9 during its creation.

Small grids, few starts, threads (``processes=False``) where a process pool is not the point.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):  # CI installs the dask extra: there it must run
    for _name in ("distributed", "xarray", "zarr"):
        pytest.importorskip(_name)

from flowlab.cli import main
from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.sweep import MANIFEST, open_dataset, read_manifest
from flowlab.systems.sweeps import sweep

#: p + q < 1 and p + q > 1 cells, and p = 0.5, q = 0.5 (degenerate: p + q = 1).
P, Q = [0.2, 0.5, 0.8], [0.3, 0.5, 0.7]
SMALL = {"p": P, "q": Q, "sigma": [0.02], "starts": 40, "seed": 7}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    store = tmp_path_factory.mktemp("sweep") / "small.zarr"
    result = sweep("markov", store, workers=1, processes=False, **SMALL)
    return result, open_dataset(store)


def test_dataset_layout(small):
    result, ds = small
    assert ds.sizes == {"sigma": 1, "p": 3, "q": 3}
    for dim, values in (("p", P), ("q", Q), ("sigma", [0.02])):
        assert ds[dim].dtype == np.float64 and ds[dim].values.tolist() == values
    assert set(ds.data_vars) == {"prob_global", "ci_low", "ci_high", "n_global", "n_nonglobal", "n_undetermined",
                                 "seed", "status"}
    assert all(ds[v].dims == ("sigma", "p", "q") for v in ds.data_vars)
    assert json.loads(ds.attrs["settings"]) == {"model": "ew", "starts": 40, "seed": 7, "method": "flow"}
    assert {"flowlab", "numpy", "dask", "xarray", "zarr"} <= set(json.loads(ds.attrs["versions"]))
    codes = json.loads(ds["status"].attrs["codes"])
    # the degenerate chain p = q = 0.5 (p + q = 1) is reported as such, with fill values
    cell = ds.sel(p=0.5, q=0.5, sigma=0.02)
    assert int(cell.status) == codes["degenerate"] and np.isnan(float(cell.prob_global)) and int(cell.n_global) == -1
    ok = ds.status.values == codes["ok"]
    assert ok.sum() == 8
    n = ds.n_global + ds.n_nonglobal + ds.n_undetermined
    assert (n.values[ok] == 40).all()
    assert result.counts == {"ok": 8, "degenerate": 1, "total": 9}
    manifest = read_manifest(Path(result.store))
    assert manifest["complete"] and manifest["tiles_done"] == [0]


def test_cells_equal_direct_computation_and_the_paper(small):
    """Each cell is gaussian_basin of its chain with its seed; near the origin the paper predicts
    global for p + q < 1 and the unigram model for p + q > 1 (MODELS.md section 3)."""
    from flowlab.engine.basins import wilson_interval
    from flowlab.systems.markov.basins import gaussian_basin
    from flowlab.systems.markov.chain import MarkovChain
    from flowlab.systems.markov.models import get_model

    _, ds = small
    model = get_model("ew")
    for p in P:
        for q in Q:
            cell = ds.sel(p=p, q=q, sigma=0.02)
            if abs(p + q - 1) < 1e-12:
                continue
            direct = gaussian_basin(model, MarkovChain(p, q), 0.02, 40, int(cell.seed))
            assert (int(cell.n_global), int(cell.n_nonglobal), int(cell.n_undetermined)) == (
                direct.n_global, direct.n_nonglobal, direct.n_undetermined)
            assert float(cell.prob_global) == direct.prob_global
            assert (float(cell.ci_low), float(cell.ci_high)) == direct.ci95
            assert float(cell.prob_global) == (1.0 if p + q < 1 else 0.0)
            assert float(cell.ci_high) <= 1 and wilson_interval(40, 40)[1] == 1.0
    seeds = ds.seed.values.ravel()
    assert len(set(seeds.tolist())) == seeds.size  # one seed per cell


def test_mismatched_store_refused_and_resume_is_a_no_op(small, tmp_path):
    result, ds = small
    with pytest.raises(FlowlabInputError, match="other settings .*starts: 40 there, 41 now"):
        sweep("markov", result.store, workers=1, processes=False, **{**SMALL, "starts": 41})
    again = sweep("markov", result.store, workers=1, processes=False, **SMALL)
    assert (again.tiles_computed, again.tiles_resumed) == (0, 1)
    import fcntl

    with open(Path(result.store) / ".flowlab-sweep.lock", "a") as fh:  # another writer holds the store
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FlowlabInputError, match="another sweep is writing"):
            sweep("markov", result.store, workers=1, processes=False, **SMALL)
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(FlowlabInputError, match="not a flowlab sweep store"):
        sweep("markov", other, workers=1, processes=False, **SMALL)
    assert (other / "mine.txt").read_text() == "keep"


KILL = ["--p", "0.1:0.9:5", "--q", "0.15:0.85:5", "--sigma", "0.01,0.05", "--starts", "30", "--seed", "3",
        "--workers", "1", "--no-processes", "--quiet"]


def _cli(store, *extra):
    return [sys.executable, "-m", "flowlab.cli.app", "sweep", "markov", *KILL, "--out", str(store), *extra]


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path):
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(_cli(store), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done, deadline = [], time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            manifest = read_manifest(store) if (store / MANIFEST).is_file() else None
            if manifest and manifest["tiles_done"]:
                done = manifest["tiles_done"]
                break
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole session: the sweep and any worker
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    manifest = read_manifest(store)
    assert done and not manifest["complete"], "the sweep was not caught mid-run"
    before = manifest["tiles_done"]
    rerun = subprocess.run(_cli(store, "--json"), check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    out = json.loads(rerun.stdout)
    assert out["tiles"] == {"total": 8, "computed": 8 - len(before), "resumed": len(before)}
    whole = sweep("markov", tmp_path / "whole.zarr", workers=1, processes=False, p=np.linspace(0.1, 0.9, 5),
                  q=np.linspace(0.15, 0.85, 5), sigma=[0.01, 0.05], starts=30, seed=3)
    a, b = open_dataset(store), open_dataset(whole.store)
    for name in a.variables:
        assert a[name].dtype == b[name].dtype and a[name].values.tobytes() == b[name].values.tobytes(), name
    assert a.attrs["flowlab_sweep"] == b.attrs["flowlab_sweep"]


@pytest.mark.parametrize("args, expected", [
    (["--p", "0.9:0.1:5"], "--p must be START:STOP:N"),
    (["--p", "a:b:3"], "--p must be START:STOP:N"),
    (["--p", "0.1:0.5:0"], "--p must be START:STOP:N"),
    (["--p", "0:0.5:3"], "p must lie strictly between 0 and 1"),
    (["--p", "0.2,0.2"], "distinct"),
    (["--p", "nan"], "finite"),
    (["--sigma", "-0.1"], "sigma must be positive"),
    (["--model", "nope"], "invalid choice"),
    (["--scheduler", "not an address"], "--scheduler must be a Dask scheduler address"),
    (["--p", "0.01:0.99:1024", "--q", "0.01:0.99:1024", "--starts", "100000"], "estimated at"),
])
def test_cli_hostile_values(args, expected, tmp_path, capsys):
    base = {"--p": "0.2,0.7", "--q": "0.3", "--starts": "5", "--sigma": "0.02"}
    argv = ["sweep", "markov", "--quiet", "--out", str(tmp_path / "s.zarr")]
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    for k, v in base.items():
        argv += [k, v]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert not (tmp_path / "s.zarr").exists()


def test_cli_unreachable_scheduler(tmp_path, capsys):
    assert main(["sweep", "markov", "--p", "0.2", "--q", "0.3", "--starts", "5", "--quiet",
                 "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "s.zarr")]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def test_cooccurrence_cells_equal_scaling(tmp_path):
    """Each cell's T1 is the one `scaling` finds for that width, L and seed; T1 falls with m (the paper: ~1/m)."""
    from flowlab.systems.cooccurrence.experiments import scaling

    small = {"n": 12, "d": 24, "m1": 32}
    r = sweep("cooccurrence", tmp_path / "co.zarr", workers=1, processes=False, m=[16, 256], L=[3], seed=[0, 1],
              **small)
    ds = r.open()
    assert ds.sizes == {"m": 2, "L": 1, "seed": 2} and r.counts["ok"] == 4
    for seed in (0, 1):
        direct = scaling((16, 256), L=3, seed=seed, **small)
        assert ds["T1"].sel(L=3, seed=seed).values.tolist() == list(direct.T1)
        assert ds["T1"].sel(m=256, L=3, seed=seed) < ds["T1"].sel(m=16, L=3, seed=seed)
    with pytest.raises(FlowlabInputError, match="m must be a non-empty list of integers"):
        sweep("cooccurrence", tmp_path / "bad.zarr", m=[16.5], L=[3], seed=[0])


def test_figures_draw_the_dataset(small):
    import matplotlib

    matplotlib.use("Agg")
    from flowlab.plots import sweep as plots

    _, ds = small
    ax = plots.phase_diagram(ds)
    (mesh,) = [c for c in ax.collections if c.get_gid() == "phase"]
    z = np.ma.masked_invalid(ds["prob_global"].sel(sigma=0.02).transpose("q", "p").values)
    assert np.ma.allequal(mesh.get_array().reshape(3, 3), z) and mesh.get_array().mask.sum() == 1
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "p+q=1"]
    assert np.allclose(np.sum(line.get_xydata(), axis=1), 1.0)
    with pytest.raises(FlowlabInputError, match="at least two sigmas"):
        plots.prob_vs_sigma(ds, [(0.2, 0.3)])


def test_an_existing_scheduler_gives_the_same_dataset(small, tmp_path):
    from distributed import LocalCluster

    _, ds = small
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        r = sweep("markov", tmp_path / "remote.zarr", scheduler=cluster.scheduler_address, **SMALL)
    assert r.scheduler == cluster.scheduler_address and r.tiles_computed == 1
    other = r.open()
    for name in ds.variables:
        assert ds[name].values.tobytes() == other[name].values.tobytes(), name


# ------------------------------------------------------------------ ntp_order, kill safety at creation
NTP = {"vocab": [6, 8], "sentences": [24], "seed": [0, 1], "steps1": 60, "steps2": 200}


@pytest.fixture(scope="module")
def ntp(tmp_path_factory):
    store = tmp_path_factory.mktemp("ntp") / "ntp.zarr"
    result = sweep("ntp_order", store, workers=1, processes=False, **NTP)
    return result, open_dataset(store)


def test_ntp_order_layout_and_cells_equal_direct_runs(ntp):
    """Each cell is `flowlab ntp-order run --vocab K --sentences N --seed S --steps1 60 --steps2 200`; and a fact
    independent of the code: normalised GD moves W_ov by exactly lr1 = 0.2/sqrt(K) per step, so once W_ov points
    along its (fixed) target direction the norm grows by lr1 per step: the fitted slope is just below lr1."""
    from flowlab.systems.ntp_order.data import generate
    from flowlab.systems.ntp_order.measure import run_experiment
    from flowlab.systems.ntp_order.sweep import RATES, STAGES, STATUS

    result, ds = ntp
    assert ds.sizes == {"vocab": 2, "sentences": 1, "seed": 2} and result.counts == {"completed": 4, "total": 4}
    assert all(ds[v].dims == ("vocab", "sentences", "seed") and ds[v].dtype == np.float64 for v in ds.data_vars
               if v != "status")
    assert json.loads(ds["status"].attrs["codes"]) == STATUS and ds.attrs["system"] == "ntp_order"
    assert json.loads(ds.attrs["settings"])["steps2"] == 200
    for K in (6, 8):
        for seed in (0, 1):
            cell = ds.sel(vocab=K, sentences=24, seed=seed)
            direct = run_experiment(generate(K, 24, seed), seed=seed, steps1=60, steps2=200)
            for suffix, (stage, _) in STAGES.items():
                summary = getattr(direct, stage)
                for rate in RATES:
                    fit = getattr(summary, rate)
                    assert float(cell[f"{rate}_{suffix}"]) == fit.value and float(cell[f"{rate}_{suffix}_r2"]) == fit.r2
                assert float(cell[f"cos_{suffix}"]) == summary.cos
            assert float(cell["acc_train"]) == direct.accuracy["train"]
            assert 0.98 * 0.2 / np.sqrt(K) < float(cell["norm_slope_ov"]) <= 0.2 / np.sqrt(K) + 1e-12


def test_ntp_order_resume_recomputes_only_the_lost_tile(ntp, tmp_path):
    """A crash after tile 0 was written and before tile 1 was recorded: tile 1's chunk is garbage and absent
    from the manifest. The rerun computes only it, and the store equals the uninterrupted run bit for bit."""
    import shutil

    import zarr

    from flowlab.engine.sweep import _write_manifest

    result, ds = ntp
    store = tmp_path / "crashed.zarr"
    shutil.copytree(result.store, store)
    manifest = read_manifest(store)
    group = zarr.open_group(str(store), mode="r+")
    group["cos_ov"][1:2, :, :] = 123.0  # a half-written tile
    _write_manifest(store, manifest["identity"], {0}, manifest["tiles_total"])
    again = sweep("ntp_order", store, workers=1, processes=False, **NTP)
    assert (again.tiles_computed, again.tiles_resumed) == (1, 1)
    other = open_dataset(store)
    for name in ds.variables:
        assert ds[name].values.tobytes() == other[name].values.tobytes(), name
    assert read_manifest(store)["complete"]


def test_ntp_order_rates_figure(ntp):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlab.plots import sweep as plots

    _, ds = ntp
    fig = plots.ntp_rates_figure(ds)
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if c.lines[0].get_gid() == "dir_rate_ov"]
    x, y = bars.lines[0].get_xydata().T
    assert x.tolist() == [6.0, 8.0]
    assert np.allclose(y, ds["dir_rate_ov"].sel(sentences=24).mean("seed").values)
    plt.close(fig)
    with pytest.raises(FlowlabInputError, match="unknown rate"):
        plots.ntp_rate_vs_vocab(ds, "speed")


def test_ntp_order_cli_defaults_mirror_the_definition():
    from flowlab.cli.sweep import NTP_DEFAULTS, STAGE2_LOSSES
    from flowlab.systems.ntp_order.model import STAGE2_LOSSES as LOSSES
    from flowlab.systems.ntp_order.sweep import DEFAULTS

    assert all(DEFAULTS[k] == v for k, v in NTP_DEFAULTS.items()) and STAGE2_LOSSES == LOSSES


def test_stale_partial_store_of_a_dead_process_is_removed(tmp_path):
    """A kill -9 while the store was being created leaves `.NAME.partial-PID`: the next run removes it when
    PID is gone (here a finished subprocess), keeps one whose process lives (PID 1), and proceeds."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    pid = int(dead.stdout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 0)
        pytest.skip(f"PID {pid} was reused already")
    stale, alive = tmp_path / f".s.zarr.partial-{pid}", tmp_path / ".s.zarr.partial-1"
    for folder in (stale, alive):
        (folder / "prob_global").mkdir(parents=True)
        (folder / MANIFEST).write_text("{}")
    r = sweep("markov", tmp_path / "s.zarr", workers=1, processes=False, p=[0.2], q=[0.3], sigma=[0.02], starts=5)
    assert r.tiles_computed == 1 and not stale.exists() and (alive / MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.partial-1", "s.zarr"]


def test_cli_cooccurrence_with_figure_then_resume(tmp_path, capsys):
    """`flowlab sweep cooccurrence` takes integer ranges (16:48:3 = 16, 32, 48), draws T1 against m from the
    stored Dataset, and a rerun finds every tile done."""
    import matplotlib.image

    argv = ["sweep", "cooccurrence", "--m", "16:48:3", "--L", "3", "--seed-grid", "0", "--n", "12", "--d", "24",
            "--m1", "32", "--workers", "1", "--no-processes", "--out", str(tmp_path / "c.zarr"),
            "--figure", str(tmp_path / "t1.png"), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["system"] == "cooccurrence" and out["shape"] == [3, 1, 1] and out["figure"] == str(tmp_path / "t1.png")
    assert set(out["seconds_by_phase"]) == {"prepare", "tiles", "close"} and out["cpu_seconds"]["cells"] > 0
    ds = open_dataset(tmp_path / "c.zarr")
    assert ds["m"].values.tolist() == [16.0, 32.0, 48.0] and np.isfinite(ds["T1"].values).all()
    assert matplotlib.image.imread(tmp_path / "t1.png").shape[2] in (3, 4)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["tiles"] == {"total": 3, "computed": 0, "resumed": 3} and set(again["seconds_by_phase"]) == {"prepare"}


def test_no_cache_reaches_local_workers(monkeypatch):
    """`flowlab --no-cache sweep`: the worker processes inherit FLOWLAB_NO_CACHE=1 while the sweep runs."""
    from flowlab.symbolic import cache
    from flowlab.systems.sweeps import _cache_off_in_local_workers

    monkeypatch.delenv(cache.ENV_OFF, raising=False)
    with _cache_off_in_local_workers():
        assert cache.ENV_OFF not in os.environ  # the cache is on: nothing to pass on
    monkeypatch.setattr(cache, "_state", {**cache._state, "enabled": False})
    with _cache_off_in_local_workers():
        assert os.environ[cache.ENV_OFF] == "1"
    assert cache.ENV_OFF not in os.environ
