"""The symbolic layer: every identity proved, and the proofs can fail."""

import shutil
import subprocess
from pathlib import Path

import pytest
import sympy as sp

from flowlab import derive, get_model
from flowlab.symbolic.special import closed_forms, profiled_logit0
from flowlab.systems.markov.derivation import ELL_PRIME, GAP, OPTIMAL_GAP, P, Q, vanishes
from flowlab.systems.markov.latex import to_latex, to_markdown
from flowlab.systems.markov.models import TOKEN, Model, param_symbol

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["ew", "ewb"])
def test_every_identity_is_proved(name):
    d = derive(get_model(name))
    names = {i.name for i in d.identities}
    assert {"stationarity", "root", "envelope", "optimal_gap", "global_loss", "unigram_loss", "conserved_E"} <= names
    assert all(i.verified for i in d.identities), [i.name for i in d.identities if not i.verified]


def test_gap_and_energy_of_ew_match_models_md():
    d = derive(get_model("ew"))
    e, w = param_symbol("e"), param_symbol("w")
    assert vanishes(d.gap - e**2 * (1 + 2 * w * sp.Abs(w)))
    (inv,) = d.invariants
    assert inv.conserved
    assert vanishes(inv.expr - (e**2 - w**2 - sp.sign(w) * sp.log(sp.Abs(w))))


def test_free_bias_energy_rate_is_two_e_squared_dl_db():
    """MODELS.md: with a free bias, dE/dt = 2 e^2 dL/db, i.e. the coupling is -2 e^2."""
    d = derive(get_model("ewb"))
    (inv,) = d.invariants
    assert sp.simplify(inv.bias_coupling + 2 * param_symbol("e") ** 2) == 0
    assert next(i for i in d.identities if i.name == "rate_E").verified


def test_a_false_invariant_is_refuted():
    e, w = param_symbol("e"), param_symbol("w")
    ew = get_model("ew")
    fake = Model("fake", ew.params, ew.logit, invariants=(("F", e**2 + w**2),))
    (inv,) = derive(fake).invariants
    assert not inv.conserved
    assert not all(i.verified for i in derive(fake).identities)


def test_vanishes_is_not_vacuous():
    w = param_symbol("w")
    assert vanishes(w * sp.sign(w) - sp.Abs(w))
    assert not vanishes(w - sp.Abs(w))
    assert not vanishes(sp.log(1 - P) + 1)


def test_zeta0_closed_form_and_derivative_numerically():
    """The stable zeta0 equals the closed form evaluated in 400-digit arithmetic (the naive
    form cancels catastrophically for D << 0 when pi1 > pi0), its derivative
    matches finite differences, and it solves the stationarity condition."""
    import mpmath

    from flowlab.symbolic.special import NUMPY_IMPLEMENTATIONS

    mods = [NUMPY_IMPLEMENTATIONS, "numpy"]
    f_closed = sp.lambdify((GAP, P, Q), closed_forms(profiled_logit0(GAP, P, Q)), modules="mpmath")
    f_stable = sp.lambdify((GAP, P, Q), profiled_logit0(GAP, P, Q), modules=mods)
    dz = sp.lambdify((GAP, P, Q), sp.diff(profiled_logit0(GAP, P, Q), GAP), modules=mods)
    with mpmath.workdps(400):
        for p, q in [(0.1, 0.1), (0.5, 0.8), (0.9, 0.3), (0.3, 0.3)]:
            pi0, pi1 = q / (p + q), p / (p + q)
            for D in [-300.0, -30.0, -2.0, 0.0, 0.7, 5.0, 30.0, 300.0]:
                z0 = f_stable(D, p, q)
                exact = float(f_closed(mpmath.mpf(D), mpmath.mpf(p), mpmath.mpf(q)))
                assert z0 == pytest.approx(exact, rel=1e-12, abs=1e-12)
                sig = lambda z: 1 / (1 + mpmath.exp(-z))
                resid = pi0 * sig(mpmath.mpf(z0)) + pi1 * sig(mpmath.mpf(z0) + D) - pi1
                assert abs(float(resid)) < 1e-14
                h = 1e-5
                fd = (f_stable(D + h, p, q) - f_stable(D - h, p, q)) / (2 * h)
                assert dz(D, p, q) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_optimal_gap_zeroes_ell_prime_numerically():
    from flowlab.symbolic.special import NUMPY_IMPLEMENTATIONS

    f = sp.lambdify((P, Q), ELL_PRIME.subs(GAP, OPTIMAL_GAP), modules=[NUMPY_IMPLEMENTATIONS, "numpy"])
    for p, q in [(0.1, 0.2), (0.6, 0.9), (0.3, 0.7)]:
        assert abs(f(p, q)) < 1e-14


@pytest.mark.parametrize("name", ["ew", "ewb", "ewa", "ewab"])
def test_committed_derivations_are_regenerated_byte_for_byte(name):
    committed = (ROOT / "derivations" / f"{name}.md").read_bytes()
    assert to_markdown(derive(get_model(name))).encode() == committed, (
        f"derivations/{name}.md is stale: run `flowlab derive --model {name} --format markdown "
        f"--out derivations/{name}.md`"
    )


@pytest.mark.parametrize("name", ["ew", "ewb", "ewa"])
def test_latex_compiles_with_pdflatex(name, tmp_path, in_ci):
    exe = shutil.which("pdflatex")
    if exe is None:
        if in_ci:
            pytest.fail("pdflatex is required in CI (.ci/run installs texlive-latex-base)")
        pytest.skip("pdflatex not installed")
    from flowlab import MarkovChain

    (tmp_path / "d.tex").write_text(to_latex(derive(get_model(name)), MarkovChain(0.5, 0.8)))
    proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "d.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "d.pdf").stat().st_size > 10_000


def test_model_validation():
    from flowlab import FlowlabInputError

    e = param_symbol("e")
    with pytest.raises(FlowlabInputError, match="unknown symbols"):
        Model("bad", ("e",), e * TOKEN + sp.Symbol("z", real=True))
    with pytest.raises(FlowlabInputError, match="distinct"):
        Model("bad", ("e", "e"), e * TOKEN)
    with pytest.raises(FlowlabInputError, match="bias"):
        Model("bad", ("e", "b"), e * TOKEN)
    with pytest.raises(FlowlabInputError, match="unknown model"):
        get_model("nope")
