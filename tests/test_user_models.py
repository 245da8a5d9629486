"""User-defined logits through the whole pipeline, and the CLI paths of issue 6 (context, kernels)."""

import json

import numpy as np
import pytest

from flowlab import MarkovChain, NumericModel, derive, get_model
from flowlab.cli import main
from flowlab.errors import FlowlabInputError
from flowlab.models import user_model

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
    from flowlab.basins import basin_grid
    from flowlab.critical import critical_sets
    from flowlab.flow import gradient_flow

    model = user_model("x*(u**3/3 - u - v**3/3 + v)", "u,v")
    chain = MarkovChain(0.9, 0.9)
    res = critical_sets(model, chain, {"u": (-2, 2), "v": (-2, 2)})
    assert res.complete
    assert {tuple(np.round(s.points[0], 6)): s.kind for s in res.sets} == {
        (1.0, -1.0): "local_min", (-1.0, 1.0): "local_max", (1.0, 1.0): "saddle", (-1.0, -1.0): "saddle"}
    flow = gradient_flow(model, chain, [0.8, -0.7])
    assert flow.reached in ("local", "global") and np.allclose(flow.final["u"], 1.0, atol=1e-5)
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
    facts = json.loads(capsys.readouterr().out)
    assert np.allclose(facts["stationary"], 1 / 3)
    assert main(["eval", "--kernel", str(kernel), "--logits", "0; u", "--params", "u", "--at", "u=0"]) == 2
