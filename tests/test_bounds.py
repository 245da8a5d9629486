"""Issue 11 items 5 and 11: no silent NaN at a user-given point, and bounded work (refused up front or budgeted)."""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowlab import MarkovChain, NumericModel, get_model, gradient_flow
from flowlab.cli.app import main
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.models import user_model

CHAIN = ["--p", "0.2", "--q", "0.3"]


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ item 5: no silent NaN

UNDEFINED = [  # (logit, params, point): each is undefined or overflows at the point
    ("log(u)*x", "u", "u=-1"),
    ("log(e)*x", "e", "e=-1"),
    ("sqrt(e)*x", "e", "e=-1"),
    ("e/w*x", "e,w", "e=1,w=0"),
    ("exp(exp(e))*x", "e", "e=10"),
    ("Piecewise((e*x, e < 0))", "e", "e=1"),
]


@pytest.mark.parametrize("logit,params,point", UNDEFINED)
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_eval_at_an_undefined_point_is_a_one_line_error(logit, params, point, json_flag, capsys):
    code, out, err = _run(["eval", "--logit", logit, "--params", params, *CHAIN, "--at", point, *json_flag], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "not finite" in err and point.replace(",", ", ") in err


def test_a_logit_undefined_at_a_token_value_is_refused_when_the_model_is_made():
    with pytest.raises(FlowlabInputError, match="x = 0"):
        user_model("e/x", "e")


def test_eval_names_the_quantity_and_the_point_through_the_api():
    nm = NumericModel(user_model("log(u)*x", "u"), MarkovChain(0.2, 0.3))
    with pytest.raises(FlowlabInputError, match=r"the loss is not finite at u=-1 \(the logit gap D .* is nan"):
        nm.evaluate([-1.0])


def _ew_at_gap(D):
    """A point of the preset ew whose gap e^2 (1 + 2 w|w|) is D (e = 1)."""
    return [1.0, math.copysign(math.sqrt(abs(D - 1) / 2), D - 1)]


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.floats(-5, 0), st.floats(1e-100, 5)))
def test_eval_is_finite_where_defined_and_refused_elsewhere(u):
    """log(u)*x has the gap log(u): its loss equals that of ew at the same gap (u > 0); u <= 0 is refused.
    (Below u ~ 1e-154 the Hessian -(...)/u^2 overflows, and that is refused too.)"""
    chain = MarkovChain(0.2, 0.3)
    nm = NumericModel(user_model("log(u)*x", "u"), chain)
    if u <= 0:
        with pytest.raises(FlowlabInputError, match="not finite at u="):
            nm.evaluate([u])
        return
    out = nm.evaluate([u])
    ref = NumericModel(get_model("ew"), chain)
    assert out["loss"] == pytest.approx(float(ref.loss(_ew_at_gap(math.log(u)))), rel=1e-12)
    assert all(math.isfinite(v) for v in out["gradient"].values())


def test_flow_from_an_undefined_start_is_an_input_error(capsys):
    with pytest.raises(FlowlabInputError, match=r"the loss is not finite at u=-1 \(the start point"):
        gradient_flow(user_model("log(u)*x", "u"), MarkovChain(0.2, 0.3), [-1.0])
    code, out, err = _run(["flow", "--logit", "log(u)*x", "--params", "u", *CHAIN, "--at", "u=-1", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "u=-1" in err


def test_a_flow_that_runs_into_undefined_values_fails_naming_where(capsys):
    """D = -sqrt(u) < D* for every u >= 0, so the flow drives u to 0, where the gradient -1/(2 sqrt u) blows up
    and beyond which the loss is undefined: status failed (exit 1), the trajectory finite up to there."""
    res = gradient_flow(user_model("-sqrt(u)*x", "u"), MarkovChain(0.2, 0.3), [1.0])
    assert res.status == "failed" and res.reached == "undetermined"
    assert "not finite at u=" in res.message and "undefined" in res.message
    assert np.all(np.isfinite(res.theta)) and 0 <= res.final["u"] < 1e-6
    assert np.all(np.diff(res.loss) <= 1e-15)  # the loss never increases along the flow
    code, out, _ = _run(["flow", "--logit=-sqrt(u)*x", "--params", "u", *CHAIN, "--at", "u=1", "--json", "--quiet"],
                        capsys)
    assert code == 1 and json.loads(out)["status"] == "failed"


def test_finite_context_eval_refuses_an_undefined_point(capsys):
    """m = 0 at the first position after a 0, so e/m is undefined in finite context."""
    code, _, err = _run(["eval", "--logit", "e/m*x", "--params", "e", *CHAIN, "--at", "e=1", "--context", "3"], capsys)
    assert code == 2 and "finite-context (N = 3) loss is not finite at e=1" in err


def test_kstate_eval_names_the_point_and_kernel_files_with_huge_numbers_are_refused(tmp_path, capsys):
    kernel = tmp_path / "k.json"
    kernel.write_text("[[0.5, 0.5], [0.3, 0.7]]")
    code, _, err = _run(["eval", "--kernel", str(kernel), "--logit", "log(u); 0", "--params", "u", "--at", "u=-1"],
                        capsys)
    assert code == 2 and "at u=-1" in err and err.count("\n") == 1
    for text, fragment in ((f"[[0.5, 0.5], [0.3, {'7' * 400}]]", "400 digits"), ("[[0.5, 0.5], [0.3, 1e400]]", "inf")):
        kernel.write_text(text)
        code, _, err = _run(["chain", "--kernel", str(kernel)], capsys)
        assert code == 2 and fragment in err and err.count("\n") == 1


def test_a_non_ascii_character_is_named(capsys):
    code, _, err = _run(["eval", "--logit", "e\u00b2*x", "--params", "e", *CHAIN, "--at", "e=1"], capsys)
    assert code == 2 and "'\u00b2'" in err and "**" in err and "''" not in err


# ------------------------------------------------------------------ item 11: bounded work


def test_flow_stops_at_its_step_budget_and_says_so(capsys):
    """ewb from (50, -50, 50) is stiff: DOP853 needs far more than 200 steps; the loss still only decreases."""
    res = gradient_flow(get_model("ewb"), MarkovChain(0.5, 0.8), [50.0, -50.0, 50.0], max_steps=200)
    assert res.status == "budget" and res.reached == "undetermined" and "max_steps = 200" in res.message
    assert res.t.size == 201 and np.all(np.diff(res.t) > 0) and np.all(np.diff(res.loss) <= 1e-12)
    code, out, _ = _run(["flow", "--model", "ewb", "--p", "0.5", "--q", "0.8", "--at", "e=50,w=-50,b=50",
                         "--max-steps", "100", "--json", "--quiet"], capsys)
    payload = json.loads(out)
    assert code == 0 and payload["status"] == "budget" and payload["steps"] == 101


def test_flow_estimated_beyond_its_time_budget_is_refused_up_front():
    with pytest.raises(FlowlabInputError, match="more than max_seconds = 1e-09"):
        gradient_flow(get_model("ew"), MarkovChain(0.2, 0.3), [0.1, 0.1], max_seconds=1e-9)
    for bad in ({"max_steps": 0}, {"max_seconds": -1.0}):
        with pytest.raises(FlowlabInputError):
            gradient_flow(get_model("ew"), MarkovChain(0.2, 0.3), [0.1, 0.1], **bad)


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["plot", "landscape", *CHAIN, "--dpi", "100000", "--out", "f.png"], "--dpi: must be an integer from 1 to"),
        (["plot", "landscape", *CHAIN, "--resolution", "100000", "--out", "f.png"], "--resolution: must be"),
        (["basins", *CHAIN, "--range", "e:-1e300:1e300"], "coordinates must lie within"),
        (["critical", *CHAIN, "--range", "w:-1e7:0"], "coordinates must lie within"),
    ],
)
def test_huge_sizes_and_ranges_are_refused_before_any_work(argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(argv, capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1 and not list(tmp_path.iterdir())


def test_landscape_resolution_is_bounded_in_the_library():
    from flowlab.systems.markov.landscape import landscape

    with pytest.raises(FlowlabInputError, match="<= 2000"):
        landscape(get_model("ew"), MarkovChain(0.2, 0.3), resolution=100_000)


def test_transformer_runs_are_estimated_and_refused_up_front():
    pytest.importorskip("torch")
    from flowlab.systems.markov.defaults import TRANSFORMER_DEFAULTS as D
    from flowlab.systems.markov.transformer import SingleLayerTransformer, check_training_cost, estimate_training, weight_count

    for d, n in ((1, 2), (8, 32), (13, 5)):  # the memory estimate counts the network's real weights
        assert weight_count(d, n) == sum(p.numel() for p in SingleLayerTransformer(d, n).parameters())
    sizes = {k: D[k] for k in ("d", "seq_len", "steps", "batch", "eval_sequences", "val_sequences", "log_every")}
    check_training_cost(**sizes)  # the defaults are allowed
    memory, seconds = estimate_training(**{**sizes, "d": 100_000})
    assert memory > 4 * weight_count(100_000, 32) * 4  # weights, gradients and two optimiser states, float32
    with pytest.raises(FlowlabInputError, match="GiB of memory"):
        check_training_cost(**{**sizes, "d": 100_000})
    with pytest.raises(FlowlabInputError, match=r"would take about .* s .*eval_sequences=1000000000"):
        check_training_cost(**{**sizes, "eval_sequences": 10**9})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["e", "w"]), bound=st.floats(1e6, 1e308, exclude_min=True), low_end=st.booleans())
def test_any_range_beyond_the_coordinate_bound_is_refused(capsys, name, bound, low_end):
    lo, hi = (-bound, 0.0) if low_end else (0.0, bound)
    code, _, err = _run(["basins", *CHAIN, "--range", f"{name}:{lo!r}:{hi!r}", "--grid", "4"], capsys)
    assert code == 2 and "coordinates must lie within" in err and err.count("\n") == 1


def test_sgd_runs_are_estimated_and_refused_up_front():
    from flowlab.systems.markov.defaults import CANONICAL_DEFAULTS as D
    from flowlab.systems.markov.sgd import sgd_canonical

    chain = MarkovChain(0.5, 0.8)
    with pytest.raises(FlowlabInputError, match=r"would take about .* s \(steps=1000000000"):
        sgd_canonical(chain, [0.01, 0.01, 0.0], steps=10**9)
    with pytest.raises(FlowlabInputError, match="GiB of memory"):  # one sampling chunk of 10^7 x 64 tokens
        sgd_canonical(chain, [0.01, 0.01, 0.0], steps=1, batch=10**7, seq_len=D["seq_len"])


def test_basin_points_where_the_loss_is_undefined_are_undetermined_and_counted(capsys):
    """log(u) is undefined for u <= 0: on a 4 x 4 grid over [-3, 3]^2 the 8 points with u < 0 fail, each counted."""
    code, out, _ = _run(["basins", "--logit", "log(u)*x + w*x", "--params", "u,w", *CHAIN, "--grid", "4", "--quiet"],
                        capsys)
    assert code == 0 and "undetermined       8" in out and "of which 8 failed" in out
