"""System ``ntp_order`` (the project's reconstruction of Huang, Liang, Yang 2024; MODELS.md §7).

Facts checked independently of the code: cycles and reachability by a separate graph search, the
hand-solved max-margin QP of a small chain (with its KKT multipliers), the closed form of W_ov*,
finite differences of the losses, exact power/geometric/linear laws for the fits.
"""

import json
import subprocess
import sys
from collections import deque

import numpy as np
import pytest

from flowlab.engine.errors import FlowlabInputError
from flowlab.systems import ntp_order as no

# A hand-built dataset (K = 5, query 4): training shows 0 > 1 and 1 > 2 (and both above the
# query 4); the unseen sentence [0, 2, 4] needs the closure 0 > 1 > 2; [2, 3, 4] has no greatest token.
HAND = {
    "vocab": 5,
    "collocation": [1, 2, 3, 4, 0],
    "orders": [[], [], [], [], [[0, 1], [0, 4], [1, 2], [1, 4]]],
    "sentences": [[0, 1, 4], [1, 2, 4]],
    "unseen_implied": [[0, 2, 4]],
    "unseen_not_implied": [[2, 3, 4]],
}


def hand():
    return no.from_dict(json.loads(json.dumps(HAND)))


def reachable(edges, K, a):
    """Tokens reachable from a along the edges (breadth-first search; independent of Warshall)."""
    succ = {v: [b for x, b in edges if x == v] for v in range(K)}
    seen, todo = set(), deque(succ[a])
    while todo:
        v = todo.popleft()
        if v not in seen:
            seen.add(v)
            todo.extend(succ[v])
    return seen


# ------------------------------------------------------------------ data


def test_cycle_is_refused_and_named():
    obj = {**HAND, "orders": [[], [], [], [], [[0, 1], [1, 2], [2, 0], [1, 4]]]}
    with pytest.raises(FlowlabInputError, match="query 4 has a cycle") as exc:
        no.from_dict(obj)
    cycle = [int(v) for v in str(exc.value).split("cycle ")[1].split(":")[0].split(" > ")]
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == [0, 1, 2]
    pairs = set(zip(cycle[:-1], cycle[1:]))
    assert pairs <= {(0, 1), (1, 2), (2, 0)}


def test_closure_matches_graph_search():
    data = no.generate(12, 60, seed=3)
    C = data.closure
    for q in range(12):
        for a in range(12):
            assert set(np.flatnonzero(C[q, a])) == reachable(data.orders[q], 12, a)


def test_generated_training_sentences_are_realizable():
    data = no.generate(10, 80, seed=1)
    x, y = data.optima("train"), data.labels("train")
    for s, xs, ys in zip(data.sentences, x, y):
        reach = reachable(data.orders[s[-1]], 10, int(xs))
        assert all(v in reach for v in set(s) - {int(xs)})  # x* is above every other token
        assert ys == data.collocation[xs]
    for s in data.unseen_implied:  # implied by the closure, but not by the DAG edges alone
        xs = no.greatest(s, data.closure[s[-1]])
        assert xs is not None
        assert any((xs, v) not in set(data.orders[s[-1]]) for v in set(s) - {xs})
    for s in data.unseen_not_implied:
        assert no.greatest(s, data.closure[s[-1]]) is None
    assert len(data.unseen_implied) > 0 and len(data.unseen_not_implied) > 0


@pytest.mark.parametrize("change, message", [
    ({"sentences": [[0, 1, 4], [2, 3, 4]]}, "not realizable"),
    ({"sentences": [[0, 1, 9]]}, "unknown token 9"),
    ({"labels": [1, 1]}, "not realizable with label"),
    ({"collocation": [1, 2, 3]}, "collocation must map"),
    ({"unseen_implied": [[2, 3, 4]]}, "implies no greatest"),
    ({"extra": 1}, "unknown dataset fields"),
    ({"orders": [[]] * 4}, "one order"),
])
def test_bad_datasets_are_refused(change, message):
    with pytest.raises(FlowlabInputError, match=message):
        no.from_dict({**HAND, **change})


def test_json_round_trip_and_bad_files(tmp_path, monkeypatch):
    data = no.generate(8, 30, seed=2)
    path = no.save(data, tmp_path / "d.json")
    back = no.load(path)
    assert back == data and np.array_equal(back.labels("implied"), data.labels("implied"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FlowlabInputError, match="not valid JSON"):
        no.load(tmp_path / "bad.json")
    with pytest.raises(FlowlabInputError, match="cannot read"):
        no.load(tmp_path / "missing.json")
    monkeypatch.setitem(no.LIMITS, "file_bytes", 100)
    with pytest.raises(FlowlabInputError, match="limited to 100"):
        no.load(path)


# ------------------------------------------------------------------ model


def _finite_differences(f, W, h=1e-6):
    g = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        E = np.zeros_like(W)
        E[idx] = h
        g[idx] = (f(W + E) - f(W - E)) / (2 * h)
    return g


@pytest.mark.parametrize("kind", no.STAGE2_LOSSES)
def test_gradients_match_finite_differences(kind):
    data = no.generate(6, 14, seed=4, min_len=2, max_len=5)  # variable lengths: padding and masks
    batch = no.make_batch(data.sentences, data.labels(), data.optima(), 6)
    rng = np.random.default_rng(0)
    W_ov, W_kq = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    _, g_ov, g_kq = no.loss_and_grads(W_ov, W_kq, batch, kind=kind)
    fd_ov = _finite_differences(lambda W: no.loss_and_grads(W, W_kq, batch, kind=kind)[0], W_ov)
    fd_kq = _finite_differences(lambda W: no.loss_and_grads(W_ov, W, batch, kind=kind)[0], W_kq)
    assert np.max(np.abs(g_ov - fd_ov)) < 1e-8 and np.max(np.abs(g_kq - fd_kq)) < 1e-8
    assert np.max(np.abs(g_kq)) > 1e-3
    _, g0 = no.collocation_loss(W_ov, data.collocation)
    fd0 = _finite_differences(lambda W: no.collocation_loss(W, data.collocation)[0], W_ov)
    assert np.max(np.abs(g0 - fd0)) < 1e-8


def test_logits_by_explicit_sum():
    data = hand()
    rng = np.random.default_rng(1)
    W_ov, W_kq = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    z = no.logits(W_ov, W_kq, no.make_batch(data.sentences, data.labels(), data.optima(), 5))
    for s, zi in zip(data.sentences, z):
        X = np.eye(5)[:, list(s)]
        a = X.T @ W_kq @ np.eye(5)[:, s[-1]]
        phi = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        assert np.allclose(zi, W_ov @ X @ phi, atol=1e-14)


# ------------------------------------------------------------------ targets


def test_closed_form_ov_target_equals_qp():
    n = [3, 0, 4, 1, 2, 5]
    W_qp, status = no.ov_target_qp(n)
    expected = np.eye(6)[:, n] - 1.0 / 6  # column x: e_{n(x)} - 1/K
    assert status == "optimal"
    assert np.max(np.abs(W_qp - expected)) < 1e-6
    assert np.array_equal(no.ov_target(n), expected)


def test_kq_target_of_the_hand_example():
    t = no.max_margin_targets(hand())
    assert t.status == "optimal", t.message
    # hand-solved: active constraints w0-w1 = w1-w2 = w1-w4 = 1, KKT multipliers 5/2, 3/2, 3/2 >= 0
    assert np.allclose(t.W_kq[:, 4], [1.25, 0.25, -0.75, 0.0, -0.75], atol=1e-6)
    assert np.allclose(t.W_kq[:, :4], 0.0)
    assert t.solver["name"] == "CLARABEL"


# ------------------------------------------------------------------ training and claims


def test_zero_init_stage1_moves_along_the_target():
    n = [2, 0, 1, 3]
    trace = no.run_stage("s1", lambda W: no.collocation_loss(W, n), np.zeros((4, 4)), steps=50, lr=0.1,
                         method="normalized", target=no.ov_target(n))
    assert np.max(trace.dir_error[1:]) < 1e-14
    assert np.allclose(np.diff(trace.norm), 0.1)  # normalised steps along one direction: |W_t| = 0.1 t


def test_directional_convergence_on_a_tiny_instance():
    data = hand()
    t = no.max_margin_targets(data)
    run = no.train_two_stage(data, (t.W_ov, t.W_kq), steps1=300, steps2=4000, lr1=0.2, lr2=0.05)
    for stage in (run.stage1, run.stage2):
        e = stage.dir_error
        assert e[4000 if stage is run.stage2 else 300] < e[len(e) // 4] < e[len(e) // 16]
    assert 1 - run.stage1.dir_error[-1] > 0.999 and 1 - run.stage2.dir_error[-1] > 0.99
    s = no.summarise_stage(run.stage2)
    assert s.norm_slope.r2 > 0.99 and 0.9 * 0.05 < s.norm_slope.value <= 0.05 + 1e-12


def test_generalisation_through_the_closure():
    data = hand()
    t = no.max_margin_targets(data)
    run = no.train_two_stage(data, (t.W_ov, t.W_kq), steps1=300, steps2=1000, lr1=0.2, lr2=0.05)
    acc = no.accuracy(data, run.stage1.W, run.stage2.W)
    assert acc["train"] == 1.0 and acc["unseen_implied"] == 1.0
    assert acc["unseen_not_implied"] is None  # no reference label: nothing to credit
    assert run.stage2.W[0, 4] > run.stage2.W[2, 4]  # 0 > 2 only through 1


def test_gradient_flow_decreases_the_loss():
    data = hand()
    run = no.train_two_stage(data, method="flow", steps1=20, steps2=20, lr1=0.5, lr2=0.5)
    for stage in (run.stage1, run.stage2):
        assert stage.status == "completed" and np.all(np.diff(stage.loss) <= 1e-12)


def test_fits_recover_exact_laws():
    t = np.arange(0.0, 1001.0)
    tt = np.maximum(t, 1.0)
    power = no.fit_rate(t, 3.0 * tt**-1.5, "power")
    geo = no.fit_rate(t, 2.0 * 0.99**t, "geometric")
    lin = no.fit_rate(t, 0.3 * t + 2.0, "linear")
    assert abs(power.value - 1.5) < 1e-10 and abs(geo.value - 0.99) < 1e-12 and abs(lin.value - 0.3) < 1e-12
    assert min(power.r2, geo.r2, lin.r2) > 1 - 1e-12
    assert no.fit_rate(t, np.zeros_like(t), "power").status == "undetermined"


def test_bad_training_options_are_refused():
    with pytest.raises(FlowlabInputError, match="unknown method"):
        no.train_two_stage(hand(), method="adam")
    with pytest.raises(FlowlabInputError, match="unknown training options"):
        no.train_two_stage(hand(), steps=3)


# ------------------------------------------------------------------ command line


def run_cli(capsys, *args):
    """``flowlab ntp-order ARGS`` in this process (cvxpy is imported once): (exit code, stdout, stderr)."""
    from flowlab.cli.app import main

    code = main(["ntp-order", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_defaults_mirror_the_library():
    from flowlab.cli import ntp_order as ntp_order_cli

    assert ntp_order_cli.DATA_DEFAULTS == no.GENERATE_DEFAULTS
    assert ntp_order_cli.TRAIN_DEFAULTS == {k: no.DEFAULTS[k] for k in ntp_order_cli.TRAIN_DEFAULTS}
    assert ntp_order_cli.METHODS == no.METHODS and ntp_order_cli.STAGE2_LOSSES == no.STAGE2_LOSSES


def test_cli_data_targets_run(tmp_path, capsys):
    path = tmp_path / "d.json"
    code, _, err = run_cli(capsys, "data", "--vocab", "6", "--sentences", "24", "--seed", "1", "--out", str(path))
    assert code == 0, err
    data = no.load(path)
    code, out, err = run_cli(capsys, "targets", "--data", str(path), "--json")
    assert code == 0, err
    out = json.loads(out)
    assert np.allclose(out["W_ov"], np.eye(6)[:, list(data.collocation)] - 1 / 6)
    assert out["status"] == "optimal" and np.array(out["W_kq"]).shape == (6, 6)
    code, out, err = run_cli(capsys, "run", "--data", str(path), "--steps1", "100", "--steps2", "200", "--json", "--quiet")
    assert code == 0, err
    out = json.loads(out)
    assert {"settings", "stage1", "stage2", "accuracy", "solver", "status", "message"} <= set(out)
    for stage in ("stage1", "stage2"):
        assert {"final_loss", "cos", "norm_slope", "dir_rate", "loss_rate"} <= set(out[stage])
        assert {"value", "r2"} <= set(out[stage]["dir_rate"])
    assert {"train", "unseen_implied", "unseen_not_implied"} <= set(out["accuracy"])
    assert out["settings"]["steps2"] == 200 and out["status"] == "completed"


def test_cli_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "cycle.json"
    bad.write_text(json.dumps({**HAND, "orders": [[], [], [], [], [[0, 1], [1, 0]]]}))
    code, _, err = run_cli(capsys, "targets", "--data", str(bad), "--json")
    assert code == 2 and "cycle" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "run", "--data", str(bad), "--vocab", "5")
    assert code == 2 and "--data" in err
    code, _, err = run_cli(capsys, "data", "--seed", "-1", "--out", str(tmp_path / "x.json"))
    assert code == 2 and "seed" in err


def test_cli_help_imports_no_heavy_module():
    code = ("import sys, contextlib, io\nfrom flowlab.cli.app import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['ntp-order', 'run', '--help'])\n"
            "print(sorted(m for m in ('numpy', 'scipy', 'matplotlib', 'cvxpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_degenerate_data_is_reported():
    # every sentence has one distinct token: attention has nothing to select, W_kq* = 0
    data = no.from_dict({"vocab": 3, "collocation": [1, 2, 0], "orders": [[], [], []], "sentences": [[0], [1], [2, 2]]})
    r = no.run_experiment(data, steps1=50, steps2=20)
    assert r.status == "degenerate" and "W_kq* = 0" in r.message
    assert r.stage2.cos is None and r.checks["cos_kq>=0.99"] is None
    assert r.accuracy["train"] == 1.0
