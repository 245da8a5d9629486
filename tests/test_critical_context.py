"""Critical sets of the finite-context loss (`critical --context N`): numeric multi-start only.

Independent facts used:
- `ew` reads only the current token x, and x_n has the stationary law pi at every position, so its
  finite-context loss equals the long-context loss for every N (MODELS.md section 4): same sets, same kinds.
- `ewa` at loss H must predict P(x -> 1) from x alone; with e != 0 its logit reads the attention average
  m unless a = 0, so every global minimum of the finite-context loss has a = 0.
"""

import json

import numpy as np
import pytest

from flowlab import MarkovChain, get_model
from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.system import difference_hessian
from flowlab.systems.markov.context import ContextModel
from flowlab.systems.markov.critical import critical_sets


def _signature(res):
    return sorted((s.kind, s.dimension, round(s.loss, 9)) for s in res.sets)


def test_ew_finite_context_has_the_long_context_sets():
    chain = MarkovChain(0.1, 0.1)
    finite = critical_sets(get_model("ew"), chain, context=8, starts=128)
    long = critical_sets(get_model("ew"), chain, starts=128, method="numeric")  # the same search on L_infinity
    exact = critical_sets(get_model("ew"), chain, starts=128)  # symbolic, cross-checked: complete
    assert exact.complete and not finite.complete
    assert finite.context == 8 and finite.method == "numeric" and "finite context N = 8" in finite.message
    assert _signature(finite) == _signature(long)
    assert {s.kind for s in finite.sets} == {s.kind for s in exact.sets}
    cm = ContextModel(get_model("ew"), chain, 8)
    for s in finite.sets:
        assert np.max(np.linalg.norm(cm.gradient(s.points), axis=-1)) < 1e-8
        assert np.allclose(cm.loss(s.points), s.loss, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_ewa_finite_context_global_minima_have_no_attention():
    chain = MarkovChain(0.5, 0.8)
    box = {"e": (-3.0, 3.0), "w": (-3.0, 3.0), "a": (-3.0, 3.0)}
    res = critical_sets(get_model("ewa"), chain, box, context=16, starts=64, samples=32)
    cm = ContextModel(get_model("ewa"), chain, 16)
    kinds = {s.kind for s in res.sets}
    assert "global_min" in kinds and not res.complete
    for s in res.sets:
        pts = np.asarray(s.points, float)
        assert np.max(np.linalg.norm(cm.gradient(pts), axis=-1)) < 1e-7, s.kind
        assert np.allclose(cm.loss(pts), s.loss, rtol=0, atol=1e-10)
        if s.kind == "global_min":
            assert abs(s.loss - chain.entropy_rate) < 1e-10
            assert np.max(np.abs(pts[:, 2])) < 1e-6  # a = 0 on every global minimum
    assert res.as_dict()["context"] == 16


def test_refusals_name_the_problem():
    chain = MarkovChain(0.3, 0.4)
    with pytest.raises(FlowlabInputError, match="--method numeric"):
        critical_sets(get_model("ew"), chain, context=8, method="symbolic")
    with pytest.raises(FlowlabInputError, match="p \\+ q = 1"):
        critical_sets(get_model("ew"), MarkovChain(0.4, 0.6), context=8)
    with pytest.raises(FlowlabInputError, match="would take up to about"):
        critical_sets(get_model("ewa"), chain, context=4096, starts=2**20)
    with pytest.raises(FlowlabInputError, match="context length"):
        critical_sets(get_model("ew"), chain, context=0)


def test_cli_json_payload(capsys):
    from flowlab.cli.app import main

    assert main(["critical", "--model", "ew", "--p", "0.1", "--q", "0.1", "--context", "4", "--starts", "64",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["context"] == 4 and payload["complete"] is False and payload["method"] == "numeric"
    assert {s["kind"] for s in payload["sets"]} == {"global_min", "local_min", "local_max", "saddle"}


def test_batched_difference_hessian_equals_the_per_point_one():
    rng = np.random.default_rng(0)

    def gradient(x):  # row by row: grad of sum_i sin(x_i) x_{i+1}^2 + x_0^3
        g = np.zeros_like(x)
        g[:, :-1] += np.cos(x[:, :-1]) * x[:, 1:] ** 2
        g[:, 1:] += 2 * np.sin(x[:, :-1]) * x[:, 1:]
        g[:, 0] += 3 * x[:, 0] ** 2
        return g

    pts = rng.normal(size=(4, 5, 3))
    batch = difference_hessian(gradient, pts)
    assert batch.shape == (4, 5, 3, 3)
    for idx in np.ndindex(4, 5):
        one = difference_hessian(gradient, pts[idx])
        assert np.array_equal(batch[idx], one)
        x = pts[idx]  # the exact Hessian
        exact = np.array([[6 * x[0] - np.sin(x[0]) * x[1] ** 2, 2 * np.cos(x[0]) * x[1], 0.0],
                          [2 * np.cos(x[0]) * x[1], 2 * np.sin(x[0]) - np.sin(x[1]) * x[2] ** 2,
                           2 * np.cos(x[1]) * x[2]],
                          [0.0, 2 * np.cos(x[1]) * x[2], 2 * np.sin(x[1])]])
        assert np.allclose(one, exact, atol=1e-7)
