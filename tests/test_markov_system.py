"""The Markov systems on the engine's protocol: MarkovSystem (binary chain) and KStateSystem (k states).

Facts used: H and h(pi1) in closed form (conftest), the k = 2 softmax loss equals the binary loss, the
tabular k-state model reaches the entropy rate (its loss is convex in the logits, every critical point
is global), a model with constant logits has the unigram loss H(pi) at its minimum, and the mutual
information of consecutive tokens equals H(pi) - H.
"""

import json
import math
import pickle

import numpy as np
import pytest
import sympy as sp

from conftest import ref_entropy_rate, ref_unigram_loss
from flowlab import MarkovChain, get_model
from flowlab.engine.system import System
from flowlab.engine.trajectory import gradient_flow
from flowlab.systems.markov.flow import gradient_flow as markov_flow
from flowlab.systems.markov.kstate import KStateChain, KStateModel
from flowlab.systems.markov.models import TOKEN as x
from flowlab.systems.markov.system import KStateSystem, MarkovSystem, nonglobal_level

THREE = [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.25, 0.25, 0.5]]


def _tabular(k):
    """One free logit a_{s,j} per (current state s, next token j), via indicator polynomials in x."""
    names = tuple(f"a{s}{j}" for s in range(k) for j in range(k))
    a = {n: sp.Symbol(n, real=True) for n in names}

    def indicator(s):
        return sp.Mul(*[sp.Rational(1, s - r) * (x - r) for r in range(k) if r != s])

    return KStateModel(f"tabular{k}", names, tuple(sum(a[f"a{s}{j}"] * indicator(s) for s in range(k))
                                                   for j in range(k)))


def test_markov_system_reference_and_identity():
    chain = MarkovChain(0.2, 0.3)
    system = MarkovSystem(get_model("ew"), chain, symbolic_levels=False)
    assert isinstance(system, System) and system.params == ("e", "w")
    ref = system.reference()
    assert ref.optimal_loss == pytest.approx(ref_entropy_rate(0.2, 0.3)[0], abs=1e-14)
    assert ref.levels["unigram"] == pytest.approx(ref_unigram_loss(0.2, 0.3), abs=1e-14)
    assert ref.loss_tol == chain.loss_tolerance and not ref.complete and ref.all_global is None
    d = system.describe()
    assert d == {"system": "markov", "model": "ew", "chain": chain.as_dict(), "context": None}


def test_symbolic_levels_are_complete_and_give_the_nonglobal_level():
    """ew: the only non-global critical set is the unigram line D = 0 (MODELS.md), at loss h(pi1)."""
    chain = MarkovChain(0.5, 0.8)
    ref = MarkovSystem(get_model("ew"), chain).reference()
    assert ref.complete and list(ref.levels) == ["unigram"] and ref.set_dimension == 1
    assert ref.levels["unigram"] == pytest.approx(ref_unigram_loss(0.5, 0.8), abs=1e-12)
    assert nonglobal_level(get_model("ew"), chain)[0] == ref.nonglobal_level


def test_degenerate_and_nearly_degenerate_references():
    ref = MarkovSystem(get_model("ew"), MarkovChain(0.4, 0.6)).reference()
    assert ref.all_global is not None and "p + q = 1" in ref.all_global
    ref = MarkovSystem(get_model("ew"), MarkovChain(0.5, 0.5 + 1e-12), symbolic_levels=False).reference()
    assert ref.unresolved is not None and "nearly degenerate" in ref.unresolved


def test_finite_context_system_uses_a_difference_hessian_close_to_the_exact_one():
    """At N = 1 the finite-context loss of ew is the long-context one (one position, started from pi)."""
    chain = MarkovChain(0.3, 0.6)
    ctx = MarkovSystem(get_model("ew"), chain, context=1)
    long = MarkovSystem(get_model("ew"), chain, symbolic_levels=False)
    th = np.array([0.7, -0.4])
    assert float(ctx.loss(th)) == pytest.approx(float(long.loss(th)), rel=1e-12)
    np.testing.assert_allclose(ctx.hessian(th), long.hessian(th), atol=1e-7)
    assert ctx.describe()["context"] == 1


def test_markov_flow_result_pickles_and_keeps_model_and_chain():
    res = markov_flow(get_model("ew"), MarkovChain(0.5, 0.8), [0.1, 0.1])
    back = pickle.loads(pickle.dumps(res))
    assert back.model == res.model and back.chain == res.chain and back.as_dict() == res.as_dict()
    d = res.as_dict()
    assert d["system"] == "markov" and d["model"] == "ew" and d["chain"]["p"] == 0.5
    assert d["optimal_loss"] == pytest.approx(ref_entropy_rate(0.5, 0.8)[0], abs=1e-14)
    # the observable D is the logit gap of ew, e^2 (1 + 2 w|w|), at the end point
    e, w = res.theta[-1]
    assert d["observables"]["D"] == pytest.approx(e**2 * (1 + 2 * w * abs(w)), abs=1e-12)
    assert "entropy_rate" not in d and "unigram_loss" not in d


@pytest.mark.parametrize("p,q,start", [(0.5, 0.8, [1.0, -1.5, 0.0]), (0.2, 0.3, [0.3, 0.8, -0.2])])
def test_kstate_flow_of_a_binary_chain_matches_the_binary_flow(p, q, start):
    e, w, b = sp.symbols("e w b", real=True)
    model = KStateModel("ewb_k2", ("e", "w", "b"), (0, e**2 * (1 + 2 * w * sp.Abs(w)) * x - e**2 / 2 + b))
    kres = gradient_flow(KStateSystem(model, KStateChain.from_binary(p, q)), start)
    bres = markov_flow(get_model("ewb"), MarkovChain(p, q), start)
    assert kres.reached == bres.reached != "undetermined", (kres.message, bres.message)
    assert kres.final_loss == pytest.approx(bres.final_loss, abs=1e-10)
    np.testing.assert_allclose(kres.theta[-1], bres.theta[-1], atol=1e-5)


def test_kstate_tabular_model_reaches_the_entropy_rate_and_constant_logits_the_unigram_level():
    chain = KStateChain(THREE)
    res = gradient_flow(KStateSystem(_tabular(3), chain), np.zeros(9))
    assert res.reached == "global", res.message
    assert res.final_loss == pytest.approx(chain.entropy_rate, abs=1e-10)
    probs = np.exp(res.theta[-1].reshape(3, 3))
    np.testing.assert_allclose(probs / probs.sum(axis=1, keepdims=True), THREE, atol=1e-6)
    c = sp.symbols("c0 c1 c2", real=True)
    res = gradient_flow(KStateSystem(KStateModel("const3", ("c0", "c1", "c2"), c), chain), [1.0, -1.0, 0.5])
    pi = chain.stationary
    assert res.reached == "local" and "unigram" in res.message, res.message
    assert res.final_loss == pytest.approx(-sum(v * math.log(v) for v in pi), abs=1e-10)


def test_kstate_reference():
    chain = KStateChain(THREE)
    system = KStateSystem(_tabular(3), chain)
    ref = system.reference()
    assert ref.optimal_loss == chain.entropy_rate and ref.levels["unigram"] == chain.unigram_loss
    assert not ref.complete and "not looked for" in ref.source
    assert system.loss_gap() == pytest.approx(chain.unigram_loss - chain.entropy_rate, abs=1e-14)
    assert KStateSystem(_tabular(2), KStateChain.from_binary(0.2, 0.3)).loss_gap() == pytest.approx(
        MarkovChain(0.2, 0.3).loss_gap, rel=1e-12)
    iid = KStateSystem(_tabular(3), KStateChain([[0.2, 0.3, 0.5]] * 3)).reference()
    assert iid.all_global is not None and "i.i.d." in iid.all_global
    d = system.describe()
    assert d["system"] == "markov" and d["chain"]["k"] == 3


def test_kstate_flow_from_an_undefined_start_names_the_point():
    from flowlab import FlowlabInputError

    u = sp.Symbol("u", real=True)
    system = KStateSystem(KStateModel("logu", ("u",), (0, sp.log(u) * x)), KStateChain.from_binary(0.2, 0.3))
    with pytest.raises(FlowlabInputError, match=r"not finite at u=-1 \(the start point"):
        gradient_flow(system, [-1.0])


# ------------------------------------------------------------------ CLI: flowlab flow --kernel


def _run(argv, capsys):
    from flowlab.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_flow_on_a_kernel_file(tmp_path, capsys):
    kernel = tmp_path / "k3.json"
    kernel.write_text(json.dumps(THREE))
    chain = KStateChain(THREE)
    pi = chain.stationary
    # constant logits (0, c1, c2): the minimum is softmax = pi, i.e. c_j = log(pi_j / pi_0), at loss H(pi)
    code, out, err = _run(["flow", "--kernel", str(kernel), "--logit", "0; c1; c2", "--params", "c1,c2",
                           "--at", "c1=1,c2=0", "--json", "--quiet", "--trajectory", str(tmp_path / "t.csv")], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["reached"] == "local" and d["status"] == "converged" and d["chain"]["k"] == 3
    assert d["loss"] == pytest.approx(-sum(v * math.log(v) for v in pi), abs=1e-10)
    assert d["final"]["c1"] == pytest.approx(math.log(pi[1] / pi[0]), abs=1e-6)
    assert d["optimal_loss"] == pytest.approx(chain.entropy_rate, abs=1e-15) and d["reference"]["levels"]["unigram"]
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "t,c1,c2,loss"
    code, out, _ = _run(["flow", "--kernel", str(kernel), "--logit", "0; c1; c2", "--params", "c1,c2",
                         "--at", "c1=1,c2=0", "--quiet"], capsys)
    assert code == 0 and "reached   local" in out and "unigram" in out


@pytest.mark.parametrize("extra,fragment", [
    (["--p", "0.2", "--q", "0.3"], "not --p/--q"),
    (["--context", "4"], "--context goes with a binary chain"),
])
def test_cli_flow_on_a_kernel_refuses_binary_options(tmp_path, capsys, extra, fragment):
    kernel = tmp_path / "k.json"
    kernel.write_text("[[0.5, 0.5], [0.3, 0.7]]")
    code, out, err = _run(["flow", "--kernel", str(kernel), "--logit", "0; u*x", "--params", "u", "--at", "u=0",
                           *extra], capsys)
    assert code == 2 and out == "" and fragment in err and err.count("\n") == 1


def test_cli_flow_on_an_iid_kernel_is_refused_unless_allowed(tmp_path, capsys):
    kernel = tmp_path / "iid.json"
    kernel.write_text("[[0.4, 0.6], [0.4, 0.6]]")
    argv = ["flow", "--kernel", str(kernel), "--logit", "0; u*x + c", "--params", "u,c", "--at", "u=0.5,c=0",
            "--quiet", "--json"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "i.i.d." in err
    code, out, _ = _run([*argv, "--allow-degenerate"], capsys)
    assert code == 0 and "i.i.d." in json.loads(out)["message"]
