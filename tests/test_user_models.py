"""User-defined logits through the whole pipeline, and the CLI paths of issue 6 (context, kernels)."""

import json

import numpy as np
import pytest

from flowlab import MarkovChain, NumericModel, derive, get_model
from flowlab.cli.app import main
from flowlab.engine.errors import FlowlabInputError
from flowlab.systems.markov.models import user_model

EW_TEXT = "e**2*(1 + 2*w*Abs(w))*x - e**2/2"


def test_typing_the_ew_logit_reproduces_ew_exactly():
    user = user_model(EW_TEXT, "e,w")
    assert user.logit == get_model("ew").logit
    assert derive(user).gap == derive(get_model("ew")).gap
    chain = MarkovChain(0.3, 0.45)
    th = np.random.default_rng(0).uniform(-3, 3, size=(100, 2))
    a, b = NumericModel(user, chain), NumericModel(get_model("ew"), chain)
    assert np.array_equal(a.loss(th), b.loss(th))
    assert np.array_equal(a.gradient(th), b.gradient(th))
    assert np.array_equal(a.hessian(th), b.hessian(th))
    free = user_model(EW_TEXT, ["e", "w"], bias="free")
    assert free.params == ("e", "w", "b") and free.full_logit == get_model("ewb").full_logit


def test_user_model_through_flow_critical_and_basins():
    from flowlab.systems.markov.basins import basin_grid
    from flowlab.systems.markov.critical import critical_sets
    from flowlab.systems.markov.flow import gradient_flow

    model = user_model("x*(u**3/3 - u - v**3/3 + v)", "u,v")
    chain = MarkovChain(0.9, 0.9)
    res = critical_sets(model, chain, {"u": (-2, 2), "v": (-2, 2)})
    assert res.complete
    assert {tuple(np.round(s.points[0], 6)): s.kind for s in res.sets} == {
        (1.0, -1.0): "local_min", (-1.0, 1.0): "local_max", (1.0, 1.0): "saddle", (-1.0, -1.0): "saddle"}
    flow = gradient_flow(model, chain, [0.8, -0.7])
    # independent expectation: the flow ends at the minimum (1, -1) of D (grad D = (u^2 - 1, 1 - v^2),
    # Hessian of D diag(2u, -2v) > 0 there) with D(1, -1) = -4/3, while D* = log(0.1^2 / 0.9^2) = -4.39:
    # ell'(D) > 0 there, so it is a local, non-global minimum of L = ell(D) (MODELS.md section 2)
    d_star = np.log(0.1 * 0.1 / (0.9 * 0.9))
    assert -4 / 3 > d_star + 1
    assert flow.reached == "local" and np.allclose([flow.final["u"], flow.final["v"]], [1.0, -1.0], atol=1e-5)
    grid = basin_grid(model, chain, {"u": (-2, 2), "v": (-2, 2)}, 12, cross_check=False)
    assert grid.label.shape == (12, 12)


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch {marker}')",
    "().__class__.__bases__[0]",
    "lambda: 0",
    "e.__class__",
    "exec('open(\"{marker}\", \"w\")')",
    "(e + w",
    "e +* w",
    "sympify('x')",
])
def test_hostile_logits_are_rejected_and_nothing_runs(text, tmp_path, capsys):
    marker = tmp_path / "pwned"
    text = text.format(marker=marker)
    with pytest.raises(FlowlabInputError):
        user_model(text, "e,w")
    assert main(["eval", "--logit", text, "--params", "e,w", "--p", "0.2", "--q", "0.3", "--at", "e=1,w=1"]) == 2
    assert "invalid logit" in capsys.readouterr().err
    assert not marker.exists()


def test_cli_logit_matches_preset(capsys):
    args = ["--p", "0.5", "--q", "0.8", "--at", "e=0.3,w=-1.2", "--json"]
    assert main(["eval", "--logit", EW_TEXT, "--params", "e,w", *args]) == 0
    user = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", "ew", *args]) == 0
    preset = json.loads(capsys.readouterr().out)
    for key in ("loss", "gradient", "hessian", "gap", "optimal_gap"):
        assert user[key] == preset[key]
    for argv in (["eval", "--model", "ew", "--logit", EW_TEXT, "--params", "e,w", *args],
                 ["eval", "--logit", EW_TEXT, *args], ["eval", "--params", "e,w", *args]):
        assert main(argv) == 2


def test_cli_context_and_kernel(tmp_path, capsys):
    assert main(["eval", "--model", "ewa", "--p", "0.5", "--q", "0.8", "--at", "e=1,w=-1.2,a=0.8", "--context", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["context"] == 8 and out["loss"] > out["long_context"]["loss"] > 0.619
    kernel = tmp_path / "k.csv"
    kernel.write_text("0.5,0.3,0.2\n0.2,0.5,0.3\n0.3,0.2,0.5\n")
    assert main(["eval", "--kernel", str(kernel), "--logits", "0; u*x; v", "--params", "u,v", "--at", "u=0,v=0",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["loss"] - np.log(3)) < 1e-12  # uniform prediction: log k
    assert main(["chain", "--kernel", str(kernel), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)["chain"]
    assert np.allclose(facts["stationary"], 1 / 3)
    assert main(["eval", "--kernel", str(kernel), "--logits", "0; u", "--params", "u", "--at", "u=0"]) == 2


# ---------------------------------------------------------------- issue 11 item 4: reserved names

def _all_reserved():
    from flowlab.systems.markov.models import reserved_names

    return sorted(reserved_names()) + ["x0", "x1", "x17"]


def test_every_reserved_name_is_refused_at_every_level():
    import sympy as sp

    from flowlab.systems.markov.logit import parse_params
    from flowlab.systems.markov.models import Model, param_symbol

    names = _all_reserved()
    for must in ("p", "q", "D", "s", "t", "x", "m", "b", "sigmoid", "softplus", "profiled_logit0", "exp",
                 "Piecewise", "maximum", "select", "nan", "lambda", "True", "C"):
        assert must in names
    for name in names:
        for call, arg in ((parse_params, f"e,{name}"), (lambda n: user_model("e*x", ["e", n]), name),
                          (lambda n: Model("t", ("e", n), param_symbol("e") * sp.Symbol("x", real=True)), name)):
            with pytest.raises(FlowlabInputError) as err:
                call(arg)
            assert repr(name) in str(err.value), (name, str(err.value))
    with pytest.raises(FlowlabInputError, match="'b'"):  # b is only ever the free bias, appended by the pipeline
        user_model("b*x", "b", bias="free")


@pytest.mark.parametrize("name", ["p", "q", "sigmoid", "softplus", "profiled_logit0", "D", "x3"])
def test_reserved_names_through_the_cli_exit_2_with_one_line(name, capsys):
    code = main(["eval", "--logit", f"{name}*x", "--params", name, "--p", "0.2", "--q", "0.3", "--at", f"{name}=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"'{name}'" in err and "reserved" in err


def test_compiled_code_calls_only_reserved_names():
    """Drift check: every global name the compiled preset functions use is reserved."""
    from flowlab.systems.markov.models import reserved_names
    from flowlab.systems.markov.numeric import compile_model

    for preset in ("ew", "ewb"):  # ewa's Max and Heaviside are in the probe of compiled_names (ewa compiles slowly)
        c = compile_model(get_model(preset))
        for fn in (c.loss, c.gradient, c.hessian, c.gap):
            assert set(fn.__code__.co_names) <= set(reserved_names()), preset


def test_a_parameter_named_like_a_numpy_constant_is_not_shadowed():
    """Parameter e and the constant exp(1): the gap is e * E (the printed constant 'e' once took the parameter's value)."""
    import math

    nm = NumericModel(user_model("e*exp(1)*x", "e"), MarkovChain(0.2, 0.3))
    assert nm.gap([0.5]) == pytest.approx(0.5 * math.e, rel=1e-15)


_IDENT = r"[A-Za-z][A-Za-z0-9_]{0,6}"


def test_unreserved_names_compile_to_the_same_loss():
    """Any accepted name gives the loss of ew at w = 0 (gap v**2): hypothesis over random identifiers."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from flowlab.systems.markov.models import reserved_names

    chain = MarkovChain(0.2, 0.3)
    ref = NumericModel(get_model("ew"), chain)
    reserved = set(reserved_names())

    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.from_regex(_IDENT, fullmatch=True), st.floats(-2, 2))
    def check(name, v):
        import keyword
        import re

        if name in reserved or keyword.iskeyword(name) or re.fullmatch(r"x[0-9]+", name):
            with pytest.raises(FlowlabInputError, match="reserved|keyword"):
                user_model(f"{name}**2*x", name)
            return
        nm = NumericModel(user_model(f"{name}**2*x", name), chain)
        assert nm.loss([v]) == pytest.approx(ref.loss([v, 0.0]), rel=1e-13, abs=1e-15)
        assert nm.gradient([v])[0] == pytest.approx(ref.gradient([v, 0.0])[0], rel=1e-12, abs=1e-15)

    check()


#: A user model *named* ew whose logit differs from the preset: its gap is 2 e^2 (1 + 2 w|w|).
TWICE_TEXT = "2*e**2*(1 + 2*w*Abs(w))*x - e**2"


def _twice_gap(th):
    th = np.asarray(th, float)
    e, w = th[..., 0], th[..., 1]
    return 2 * e**2 * (1 + 2 * w * np.abs(w))


def test_a_user_model_named_like_a_preset_is_never_replaced_by_it():
    """Issue 11 item 7: flow, critical sets, basins and every figure use the user's logit, not the preset 'ew'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowlab.plots import markov as plots
    from flowlab.systems.markov.basins import basin_grid
    from flowlab.systems.markov.critical import critical_sets
    from flowlab.systems.markov.flow import gradient_flow
    from flowlab.systems.markov.landscape import basin_landscape, landscape

    model = user_model(TWICE_TEXT, "e,w", name="ew")
    assert model.name == "ew" and model != get_model("ew")
    chain = MarkovChain(0.1, 0.1)
    d_star = np.log(0.9 * 0.9 / (0.1 * 0.1))  # MODELS.md: D* = log((1-p)(1-q)/(pq))
    box = {"e": (-2.0, 2.0), "w": (-2.0, 2.0)}

    def ew_gap(th):
        th = np.asarray(th, float)
        return th[..., 0] ** 2 * (1 + 2 * th[..., 1] * np.abs(th[..., 1]))

    flow = gradient_flow(model, chain, [0.5, 0.3])
    assert flow.model is model and flow.reached == "global"
    final = [flow.final["e"], flow.final["w"]]
    assert abs(_twice_gap(final) - d_star) < 1e-6 and abs(ew_gap(final) - d_star) > 1  # the user's minimum
    crit = critical_sets(model, chain, box, method="symbolic")
    assert crit.model is model
    (glob,) = [s for s in crit.sets if s.kind == "global_min"]
    np.testing.assert_allclose(_twice_gap(glob.points), d_star, atol=1e-6)
    grid = basin_grid(model, chain, box, 8, cross_check=False)
    assert grid.model is model

    def drawn_global(ax):
        lines = [a for a in ax.get_children() if a.get_gid() == "critical:global_min"]
        assert lines
        xy = np.concatenate([np.asarray(a.get_xydata(), float) for a in lines])
        return xy[np.all(np.isfinite(xy), axis=1)]

    for ax in (plots.basin_map(grid, landscape=basin_landscape(grid)),
               plots.trajectories([flow], background=landscape(flow.model, flow.chain, extent=box)),
               plots.energy_landscape(landscape(flow.model, chain, extent=box, resolution=30))):
        np.testing.assert_allclose(_twice_gap(drawn_global(ax)), d_star, atol=1e-6)
        plt.close(ax.figure)
    assert "ew" in plots.loss_curve(flow).get_lines()[0].get_label()
    plt.close("all")


@pytest.mark.parametrize("kind, extra", [
    ("trajectories", ["--at", "e=0.1,w=0.1"]),
    ("loss", ["--at", "e=0.1,w=0.1"]),
    ("landscape", ["--resolution", "20"]),
    ("basins", ["--grid", "6"]),
    ("flow3d", ["--free-bias", "--at", "e=0.1,w=0.1,b=0"]),
])
def test_cli_plot_works_with_a_user_logit(kind, extra, tmp_path, capsys):
    """README: --logit works with plot, for every kind (issue 11 item 7: 'unknown model user')."""
    out = tmp_path / f"{kind}.png"
    assert main(["plot", kind, "--logit", EW_TEXT, "--params", "e,w", "--p", "0.5", "--q", "0.8", *extra,
                 "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
