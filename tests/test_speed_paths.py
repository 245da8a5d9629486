"""The fast paths of issue 16 give the values and labels of the paths they replace (no timing here).

* sigma(D + zeta0(D)) from the bias quadratic against the log-domain form (|D| <= 1e3) and against an
  independent high-precision evaluation (mpmath, or the rationalised closed form in exact fractions);
* the fused gradient of a profiled model against the derived log-domain gradient;
* the D-interval test of "loss below the level" against the loss itself;
* labels identical with the fast paths on and off, with one or two workers, with and without the pilot.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from flowlab import MarkovChain, get_model
from flowlab.engine.basins import FlowSettings, flow_labels, grid_axes, grid_points, label_points
from flowlab.symbolic.special import PROFILED_FAST_RANGE, profiled_sigmoid1
from flowlab.symbolic.twins import _np_profiled_logit0, _np_sigmoid
from flowlab.systems.markov.system import MarkovSystem

CHAINS = [(0.5, 0.8), (0.9, 0.9), (0.3, 0.7), (1e-6, 0.5), (0.999, 1e-5), (0.5, 0.5), (0.2, 0.05)]


def _log_domain(D, p, q):
    return _np_sigmoid(D + _np_profiled_logit0(D, p, q))


@pytest.mark.parametrize("p, q", CHAINS)
def test_profiled_sigmoid_equals_log_domain(p, q):
    D = np.concatenate([np.linspace(-PROFILED_FAST_RANGE, PROFILED_FAST_RANGE, 40001), np.linspace(-40, 40, 20001)])
    fast, slow = profiled_sigmoid1(D, p, q), _log_domain(D, p, q)
    assert np.all(np.isfinite(fast))
    # 2e-14, not 1e-14: the log-domain form itself is off by up to 1.1e-14 (p, q = 0.2, 0.05 at D = -700,
    # against mpmath), while the quadratic form is within 4 ulps (test_profiled_sigmoid_high_precision)
    assert np.max(np.abs(fast - slow)) <= 2e-14


def _exact_sigma1(D: float, p: float, q: float) -> float:
    """sigma(zeta0 + D) with the root of pi0 v^2 + (pi0 - pi1) v - pi1 e^D = 0, in high precision."""
    try:
        import mpmath as mp
    except ImportError:  # exact fractions, e^D to 40 digits through the decimal module
        mp = None
    if mp is not None:
        with mp.workdps(60):
            d, P, Q = mp.mpf(D), mp.mpf(p), mp.mpf(q)
            pi0, pi1 = Q / (P + Q), P / (P + Q)
            beta, ed = pi0 - pi1, mp.e**d
            root = mp.sqrt(beta**2 + 4 * pi0 * pi1 * ed)
            v = 2 * pi1 * ed / (beta + root) if beta >= 0 else (root - beta) / (2 * pi0)
            return float(v / (1 + v))
    import decimal

    decimal.getcontext().prec = 60
    ed = decimal.Decimal(D).exp()
    P, Q = Fraction(p), Fraction(q)
    pi0, pi1 = Q / (P + Q), P / (P + Q)
    beta = pi0 - pi1
    to_dec = lambda f: decimal.Decimal(f.numerator) / decimal.Decimal(f.denominator)
    root = (to_dec(beta) ** 2 + 4 * to_dec(pi0 * pi1) * ed).sqrt()
    v = 2 * to_dec(pi1) * ed / (to_dec(beta) + root) if beta >= 0 else (root - to_dec(beta)) / (2 * to_dec(pi0))
    return float(v / (1 + v))


@pytest.mark.parametrize("p, q", CHAINS)
def test_profiled_sigmoid_high_precision(p, q):
    D = np.array([-699.5, -300.25, -40.0, -3.5, -1e-3, 0.0, 1e-8, 0.7, 5.0, 37.0, 250.0, 699.0])
    fast = profiled_sigmoid1(D, p, q)
    exact = np.array([_exact_sigma1(float(d), p, q) for d in D])
    assert np.all(np.abs(fast - exact) <= 1e-15 * np.abs(exact) + 1e-300)


@pytest.mark.parametrize("name", ["ew", "ewa"])
def test_fused_gradient_equals_derived(name):
    model, chain = get_model(name), MarkovChain(0.5, 0.8)
    system = MarkovSystem(model, chain, symbolic_levels=False)
    assert system.fast_profiled
    rng = np.random.default_rng(1)
    theta = np.concatenate([rng.normal(0, 1.5, (500, len(model.params))),
                            rng.normal(0, 40, (50, len(model.params)))])  # |D| beyond the fast range too
    fast, slow = system.gradient(theta), system.numeric.gradient(theta)
    assert np.all(np.abs(fast - slow) <= 1e-13 * (1 + np.abs(slow)))


def test_interval_test_agrees_with_loss():
    chain = MarkovChain(0.5, 0.8)
    system = MarkovSystem(get_model("ew"), chain, symbolic_levels=False)
    level = chain.unigram_loss - 1e-12
    test = system.loss_below(level)
    theta = np.random.default_rng(2).normal(0, 1.2, (20000, 2))
    told = test(theta)
    loss = system.numeric.loss(theta)
    assert np.all(loss[told == 1] < level) and np.all(loss[told == 0] >= level)
    assert np.mean(told == -1) < 1e-3  # only a thin band around the two ends is left to the loss
    assert system.loss_below(chain.entropy_rate - 1e-9) is None  # no D has a loss below H
    assert system.loss_below(math.inf) is None


@pytest.mark.parametrize("name, p, q", [("ew", 0.5, 0.8), ("ew", 0.2, 0.3), ("ewa", 0.9, 0.9)])
def test_labels_identical_fast_and_slow(name, p, q):
    model, chain = get_model(name), MarkovChain(p, q)
    fixed = {"a": 0.5} if name == "ewa" else None
    box = {k: (-3.0, 3.0) for k in model.params if k not in (fixed or {})}
    fast = MarkovSystem(model, chain)
    slow = MarkovSystem(model, chain)
    slow.fast_profiled = False
    ref = fast.reference()
    pts = grid_points(grid_axes(model.params, box, 40, fixed))
    a, _ = flow_labels(fast, pts, ref, FlowSettings(workers=1))
    b, _ = flow_labels(slow, pts, ref, FlowSettings(workers=1))
    assert np.array_equal(a, b)
    assert np.sum(a == 1) > 0 and np.sum(a == 0) > 0


def test_labels_identical_across_workers_and_pilot():
    model, chain = get_model("ew"), MarkovChain(0.5, 0.8)
    system = MarkovSystem(model, chain)
    ref = system.reference()
    pts = grid_points(grid_axes(model.params, {"e": (-3, 3), "w": (-3, 3)}, 96))
    one, s1 = flow_labels(system, pts, ref, FlowSettings(workers=1))
    two, s2 = flow_labels(system, pts, ref, FlowSettings(workers=2, chunk=1500))
    assert s1["workers"] == 1 and s2["workers"] == 2
    assert np.array_equal(one, two)
    kept, stats = label_points(system, pts, ref, FlowSettings(workers=2), max_seconds=1e6, quiet=True, desc="t",
                               what="grid", advice="none")
    assert np.array_equal(one, kept)
    assert stats["steps"] == s1["steps"]  # the pilot's rows are counted once, not integrated twice


def test_workers_setting_checked():
    from flowlab.engine.errors import FlowlabInputError

    with pytest.raises(FlowlabInputError, match="workers"):
        FlowSettings(workers=0)
    assert FlowSettings().n_workers() >= 1


def _enumerated_loss(model, chain, n: int, theta) -> float:
    """The finite-context loss by enumerating all 2^n sequences (no dynamic programme, no grouping of terms),
    the bias of a profiled model from brentq on the exact stationarity condition."""
    import itertools

    import sympy as sp
    from scipy.optimize import brentq

    from flowlab.systems.markov.models import ATTENTION, TOKEN, param_symbol

    P, pi = chain.kernel, (chain.pi0, chain.pi1)
    prof = model.with_profiled_bias() if model.bias == "free" else model
    names = prof.params
    f = sp.lambdify([TOKEN, ATTENTION], prof.logit.subs({param_symbol(k): v for k, v in zip(names, theta)}), "math")
    terms = {}
    for seq in itertools.product((0, 1), repeat=n):
        prob = pi[seq[0]] * math.prod(P[a, b] for a, b in zip(seq, seq[1:]))
        for i in range(n):
            z = float(f(seq[i], sum(seq[: i + 1]) / (i + 1)))
            target = P[seq[i], 1]
            terms[(z, target)] = terms.get((z, target), 0.0) + prob / n
    z, t, w = (np.array(v) for v in zip(*((k[0], k[1], v) for k, v in terms.items())))

    def loss(b):
        return float(w @ (np.logaddexp(0.0, z + b) - t * (z + b)))

    if model.bias == "free":
        return loss(theta[-1])
    b = brentq(lambda b: float(w @ (1 / (1 + np.exp(-(z + b))) - t)), -60, 60, xtol=1e-15)
    return loss(b)


@pytest.mark.parametrize("name", ["ewa", "ew", "ewab"])
def test_context_loss_against_enumeration(name):
    from flowlab.systems.markov.context import ContextModel

    model, chain = get_model(name), MarkovChain(0.3, 0.6)
    cm = ContextModel(model, chain, 10)
    rng = np.random.default_rng(4)
    for theta in rng.uniform(-1.5, 1.5, (3, len(model.params))):
        exact = _enumerated_loss(model, chain, 10, theta)
        assert abs(float(cm.loss(theta)) - exact) <= 1e-12 * abs(exact)
        h = 1e-6  # gradient against central differences of the enumerated loss
        fd = [(_enumerated_loss(model, chain, 10, theta + h * e) - _enumerated_loss(model, chain, 10, theta - h * e))
              / (2 * h) for e in np.eye(len(theta))]
        assert np.allclose(cm.gradient(theta), fd, rtol=1e-6, atol=1e-8)


def test_shared_critical_sets_computed_once():
    from flowlab.systems.markov.basins import _critical_sets, shared_critical_sets

    model, chain = get_model("ew"), MarkovChain(0.5, 0.8)
    first = shared_critical_sets(model, chain, {"e": (-2, 2)}, method="symbolic", samples=8)
    hits = _critical_sets.cache_info().hits
    again = shared_critical_sets(model, chain, {"e": (-2.0, 2.0), "w": (-3, 3)}, method="symbolic", samples=8)
    assert again is first and _critical_sets.cache_info().hits == hits + 1


def test_fused_gradient_of_a_spec_equals_derived():
    """A system made from a command-line spec (SymPy-free when the cache is warm) has the fused path compiled with
    the model, and it equals the derived log-domain gradient; a free bias has none."""
    from flowlab.systems.markov.numeric import ModelSpec

    system = MarkovSystem(ModelSpec(preset="ew"), MarkovChain(0.3, 0.6), symbolic_levels=False)
    assert system.fast_profiled and system.numeric.compiled.fused_gradient is not None
    theta = np.random.default_rng(5).normal(0, 1.5, (400, len(system.params)))
    fast, slow = system.gradient(theta), system.numeric.gradient(theta)
    assert np.all(np.abs(fast - slow) <= 1e-13 * (1 + np.abs(slow)))
    free = MarkovSystem(ModelSpec(preset="ewb"), MarkovChain(0.3, 0.6), symbolic_levels=False)
    assert not free.fast_profiled and free.numeric.compiled.fused_gradient is None


@pytest.mark.parametrize("p, q", [(0.5, 0.8), (0.2, 0.3), (0.9, 0.9), (0.999, 1e-5)])
def test_level_interval_ends_are_the_crossings(p, q):
    """The ends of {ell < level} found by bisection: ell >= level at each end, < level one float inside it."""
    from flowlab.systems.markov.system import _level_interval

    chain = MarkovChain(p, q)
    system = MarkovSystem(get_model("ew"), chain, symbolic_levels=False)
    ell = lambda d: float(system.numeric.profiled_loss(np.array(d))[0])
    level = chain.unigram_loss - 1e-6 * chain.loss_gap
    ends = _level_interval(ell, chain.optimal_gap, level, PROFILED_FAST_RANGE)
    assert ends is not None and None not in ends
    for end in ends:
        assert ell(end) >= level > ell(np.nextafter(end, chain.optimal_gap))
    assert ends[0] < chain.optimal_gap < ends[1]


def test_spec_and_model_systems_label_identically():
    """The system of a spec (what the command line builds) and of a Model give the same reference and labels."""
    from flowlab.systems.markov.numeric import ModelSpec

    chain = MarkovChain(0.5, 0.8)
    spec, model = MarkovSystem(ModelSpec(preset="ew"), chain), MarkovSystem(get_model("ew"), chain)
    assert spec.reference() == model.reference() and spec.describe() == model.describe()
    pts = grid_points(grid_axes(("e", "w"), {"e": (-3, 3), "w": (-3, 3)}, 24))
    a, _ = flow_labels(spec, pts, spec.reference(), FlowSettings(workers=1))
    b, _ = flow_labels(model, pts, model.reference(), FlowSettings(workers=1))
    assert np.array_equal(a, b) and np.sum(a == 1) > 0 and np.sum(a == 0) > 0
