"""Sweeps on Dask (issue 15): the dataset layout, resume after a kill -9, refusal of a mismatched store,
each cell against the direct single-(p, q) computation and the paper's prediction, hostile CLI values.

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
