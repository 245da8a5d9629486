"""k-state chains and softmax logit models, checked against hand-computed facts and the binary layer."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

from conftest import CHAINS, ref_entropy_rate, ref_unigram_loss
from flowlab import FlowlabInputError, MarkovChain, NumericModel, get_model
from flowlab.engine.io import to_json
from flowlab.systems.markov.kstate import KStateChain, KStateModel, KStateNumeric, compile_kstate, load_kernel
from flowlab.systems.markov.models import TOKEN

x = TOKEN

# A doubly stochastic kernel: pi is uniform, and every row has the entropy of (0.5, 0.3, 0.2).
DOUBLY = [[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]]
# A birth-death kernel with zeros. Detailed balance by hand: pi0/2 = pi1/4, pi1/4 = pi2/3,
# so pi = (2/9, 4/9, 1/3); H = (2/9) log 2 + (4/9)(3/2) log 2 + (1/3)(log 3 - (2/3) log 2).
BIRTH_DEATH = [[1 / 2, 1 / 2, 0.0], [1 / 4, 1 / 2, 1 / 4], [0.0, 1 / 3, 2 / 3]]
BIRTH_DEATH_PI = (Fraction(2, 9), Fraction(4, 9), Fraction(1, 3))
# A non-reversible kernel with positive entries; pi solved by hand with fractions:
#   pi0 = pi0/10 + 2 pi1/5 + pi2/2 and pi1 = 3 pi0/5 + pi1/5 + pi2/4 with sum 1
#   give pi = (100, 105, 96) / 301 (pi0 P01 = 60/301 != pi1 P10 = 42/301: not reversible).
NONREV_FRAC = [
    [Fraction(1, 10), Fraction(3, 5), Fraction(3, 10)],
    [Fraction(2, 5), Fraction(1, 5), Fraction(2, 5)],
    [Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)],
]
NONREV = [[float(v) for v in row] for row in NONREV_FRAC]
NONREV_PI = (Fraction(100, 301), Fraction(105, 301), Fraction(96, 301))


def lagrange_indicator(s, k):
    """A polynomial in x equal to 1 at x = s and 0 at the other states 0..k-1."""
    out = sp.Integer(1)
    for r in range(k):
        if r != s:
            out *= sp.Rational(1, s - r) * (x - r)
    return out


def tabular_model(k):
    """The bigram model: one free logit a_{s,j} per (current state s, next token j)."""
    names = tuple(f"a{s}{j}" for s in range(k) for j in range(k))
    a = {n: sp.Symbol(n, real=True) for n in names}
    logits = tuple(sum(a[f"a{s}{j}"] * lagrange_indicator(s, k) for s in range(k)) for j in range(k))
    return KStateModel(f"tabular{k}", names, logits)


def nonlinear_model():
    """A 3-state model exercising products, Abs, tanh, exp and x-dependence."""
    u, v, c = sp.symbols("u v c", real=True)
    logits = (
        sp.Integer(0),
        u * x + c * sp.tanh(v) - x**2 * v / 2,
        v * sp.Abs(u) * (x - 1) + sp.exp(c / 3) - u * c,
    )
    return KStateModel("nonlinear3", ("u", "v", "c"), logits)


# --------------------------------------------------------------------------------------------
# Chains: stationary law, entropy rate, unigram loss
# --------------------------------------------------------------------------------------------


def test_doubly_stochastic_chain_has_uniform_law():
    chain = KStateChain(DOUBLY)
    assert chain.k == 3
    np.testing.assert_allclose(chain.stationary, [1 / 3] * 3, rtol=0, atol=1e-12)
    row_entropy = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert chain.entropy_rate == pytest.approx(row_entropy, abs=1e-12)
    assert chain.unigram_loss == pytest.approx(math.log(3), abs=1e-12)
    assert not chain.has_zero_transitions
    np.testing.assert_allclose(chain.optimal_logits, np.log(DOUBLY), atol=1e-15)


def test_birth_death_chain_with_zero_transitions():
    # The hand-computed law is stationary (exact arithmetic).
    F = Fraction
    P = [[F(1, 2), F(1, 2), 0], [F(1, 4), F(1, 2), F(1, 4)], [0, F(1, 3), F(2, 3)]]
    assert [sum(BIRTH_DEATH_PI[i] * P[i][j] for i in range(3)) for j in range(3)] == list(BIRTH_DEATH_PI)
    chain = KStateChain(BIRTH_DEATH)
    np.testing.assert_allclose(chain.stationary, [float(v) for v in BIRTH_DEATH_PI], rtol=0, atol=1e-12)
    H = (2 / 9) * math.log(2) + (4 / 9) * 1.5 * math.log(2) + (1 / 3) * (math.log(3) - (2 / 3) * math.log(2))
    assert chain.entropy_rate == pytest.approx(H, abs=1e-12)
    assert chain.entropy_rate == pytest.approx((2 / 3) * math.log(2) + (1 / 3) * math.log(3), abs=1e-12)
    assert chain.unigram_loss == pytest.approx(-sum(float(v) * math.log(float(v)) for v in BIRTH_DEATH_PI), abs=1e-12)
    assert chain.has_zero_transitions and chain.optimal_logits is None
    d = chain.as_dict()
    assert d["has_zero_transitions"] and "infinite" in d["note"]
    json.loads(to_json(d))


def test_nonreversible_chain_law_solved_by_hand():
    assert [sum(NONREV_PI[i] * NONREV_FRAC[i][j] for i in range(3)) for j in range(3)] == list(NONREV_PI)
    assert sum(NONREV_PI) == 1
    chain = KStateChain(NONREV)
    np.testing.assert_allclose(chain.stationary, [float(v) for v in NONREV_PI], rtol=0, atol=1e-12)
    h0 = -(0.1 * math.log(0.1) + 0.6 * math.log(0.6) + 0.3 * math.log(0.3))
    h1 = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
    h2 = 1.5 * math.log(2)
    H = (100 * h0 + 105 * h1 + 96 * h2) / 301
    assert chain.entropy_rate == pytest.approx(H, abs=1e-12)
    unigram = -sum(v / 301 * math.log(v / 301) for v in (100, 105, 96))
    assert chain.unigram_loss == pytest.approx(unigram, abs=1e-12)
    assert chain.unigram_loss > chain.entropy_rate
    d = chain.as_dict()
    assert d["k"] == 3 and not d["has_zero_transitions"] and "note" not in d


def test_rows_are_renormalised_and_kernel_is_read_only():
    off = np.array(NONREV) * (1 + 5e-10)
    chain = KStateChain(off)
    np.testing.assert_allclose(chain.kernel.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        chain.kernel[0, 0] = 0.5
    assert KStateChain(NONREV) == KStateChain([row[:] for row in NONREV])
    assert hash(KStateChain(NONREV)) == hash(KStateChain(NONREV))
    assert KStateChain(NONREV) != KStateChain(DOUBLY)


def test_periodic_chain_is_irreducible():
    chain = KStateChain([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    np.testing.assert_allclose(chain.stationary, [1 / 3] * 3, atol=1e-12)
    assert chain.entropy_rate == 0.0
    assert chain.sample(2, 7, seed=0)[0].tolist() in ([0, 1, 2, 0, 1, 2, 0], [1, 2, 0, 1, 2, 0, 1], [2, 0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("p,q", CHAINS)
def test_binary_chain_matches_markov_chain(p, q):
    kchain = KStateChain.from_binary(p, q)
    chain = MarkovChain(p, q)
    H, pi = ref_entropy_rate(p, q)
    np.testing.assert_allclose(kchain.kernel, chain.kernel, rtol=0, atol=1e-15)
    np.testing.assert_allclose(kchain.stationary, chain.stationary, rtol=1e-12)
    np.testing.assert_allclose(kchain.stationary, pi, rtol=1e-12)
    assert kchain.entropy_rate == pytest.approx(chain.entropy_rate, rel=1e-12)
    assert kchain.entropy_rate == pytest.approx(H, rel=1e-12)
    assert kchain.unigram_loss == pytest.approx(chain.unigram_loss, rel=1e-12)
    assert kchain.unigram_loss == pytest.approx(ref_unigram_loss(p, q), rel=1e-12)


# --------------------------------------------------------------------------------------------
# The loss of softmax logit models
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p,q", [(0.1, 0.1), (0.5, 0.8), (0.05, 0.6), (0.9, 0.9), (0.3, 0.7)])
def test_binary_loss_and_gradient_match_model_ewb(p, q):
    e, w, b = sp.symbols("e w b", real=True)
    model = KStateModel("ewb_k2", ("e", "w", "b"), (0, e**2 * (1 + 2 * w * sp.Abs(w)) * x - e**2 / 2 + b))
    knum = KStateNumeric(model, KStateChain.from_binary(p, q))
    ref = NumericModel(get_model("ewb"), MarkovChain(p, q))
    theta = np.random.default_rng(7).normal(scale=1.5, size=(40, 3))
    np.testing.assert_allclose(knum.loss(theta), ref.loss(theta), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(knum.gradient(theta), ref.gradient(theta), rtol=1e-12, atol=1e-12)


FOUR = [[0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.05, 0.05, 0.8, 0.1], [0.4, 0.3, 0.2, 0.1]]


@pytest.mark.parametrize("kernel", [DOUBLY, NONREV, FOUR])
def test_optimal_logits_give_entropy_rate_and_log_pi_gives_unigram(kernel):
    chain = KStateChain(kernel)
    k = chain.k
    nm = KStateNumeric(tabular_model(k), chain)
    optimal = np.asarray(kernel, dtype=float)
    theta_opt = np.log(optimal).ravel() + 3.0  # a constant shift per row changes nothing
    assert float(nm.loss(theta_opt)) == pytest.approx(chain.entropy_rate, abs=1e-12)
    np.testing.assert_allclose(nm.gradient(theta_opt), 0.0, atol=1e-12)
    np.testing.assert_allclose(nm.probabilities(theta_opt), optimal, atol=1e-12)
    pi = chain.stationary
    theta_uni = np.tile(np.log(pi), k)
    assert float(nm.loss(theta_uni)) == pytest.approx(-sum(v * math.log(v) for v in pi), abs=1e-12)
    assert float(nm.loss(theta_uni)) == pytest.approx(chain.unigram_loss, abs=1e-12)
    # A model with constant logits c_j: log pi is its minimiser (zero gradient) with loss H(pi).
    consts = sp.symbols(" ".join(f"c{j}" for j in range(k)))
    const_model = KStateModel(f"const{k}", tuple(str(c) for c in consts), consts)
    cm = KStateNumeric(const_model, chain)
    assert float(cm.loss(np.log(pi) - 1.0)) == pytest.approx(chain.unigram_loss, abs=1e-12)
    np.testing.assert_allclose(cm.gradient(np.log(pi)), 0.0, atol=1e-12)
    # Any other point of the tabular model is worse than the entropy rate.
    others = np.random.default_rng(1).normal(size=(20, k * k))
    assert np.all(nm.loss(others) > chain.entropy_rate)


def test_gradient_matches_central_differences():
    nm = KStateNumeric(nonlinear_model(), KStateChain(NONREV))
    rng = np.random.default_rng(3)
    h = 1e-6
    for theta in rng.normal(size=(6, 3)):
        fd = np.array([(nm.loss(theta + h * ei) - nm.loss(theta - h * ei)) / (2 * h) for ei in np.eye(3)])
        np.testing.assert_allclose(nm.gradient(theta), fd, rtol=1e-6, atol=1e-8)
    tab = KStateNumeric(tabular_model(3), KStateChain(BIRTH_DEATH))
    theta = rng.normal(size=9)
    fd = np.array([(tab.loss(theta + h * ei) - tab.loss(theta - h * ei)) / (2 * h) for ei in np.eye(9)])
    np.testing.assert_allclose(tab.gradient(theta), fd, rtol=1e-6, atol=1e-8)


def test_vectorised_over_leading_axes_and_stable_for_large_logits():
    nm = KStateNumeric(nonlinear_model(), KStateChain(NONREV))
    theta = np.random.default_rng(4).normal(size=(4, 5, 3))
    loss, grad = nm.loss(theta), nm.gradient(theta)
    assert loss.shape == (4, 5) and grad.shape == (4, 5, 3)
    for idx in np.ndindex(4, 5):
        assert float(nm.loss(theta[idx])) == pytest.approx(loss[idx], rel=1e-13)
        np.testing.assert_allclose(nm.gradient(theta[idx]), grad[idx], rtol=1e-13)
    # Logits of size 1e4: the loss is the cross-entropy of an almost deterministic prediction.
    big = KStateNumeric(tabular_model(2), KStateChain.from_binary(0.3, 0.6))
    theta = np.array([0.0, 1e4, 0.0, -1e4])  # state 0 predicts 1, state 1 predicts 0, by a gap 1e4
    pi0, pi1 = 0.6 / 0.9, 0.3 / 0.9
    expected = pi0 * 0.7 * 1e4 + pi1 * 0.4 * 1e4  # -log softmax of the wrong token = 1e4 (+ e^-1e4)
    assert float(big.loss(theta)) == pytest.approx(expected, rel=1e-12)
    assert np.all(np.isfinite(big.gradient(theta)))


def test_monte_carlo_transitions_and_negative_log_likelihood():
    chain = KStateChain(NONREV)
    n_seq, length = 2000, 150
    xs = chain.sample(n_seq, length, seed=11)
    assert xs.shape == (n_seq, length) and xs.dtype == np.int8
    np.testing.assert_array_equal(xs, chain.sample(n_seq, length, seed=11))
    assert not np.array_equal(xs, chain.sample(n_seq, length, seed=12))
    # First tokens follow pi.
    pi = chain.stationary
    first = np.bincount(xs[:, 0], minlength=3) / n_seq
    assert np.all(np.abs(first - pi) < 5 * np.sqrt(pi * (1 - pi) / n_seq))
    # Transition frequencies follow P (successive exits from a state are i.i.d. draws of its row).
    counts = np.zeros((3, 3))
    np.add.at(counts, (xs[:, :-1].ravel(), xs[:, 1:].ravel()), 1)
    n_from = counts.sum(axis=1, keepdims=True)
    freq = counts / n_from
    P = chain.kernel
    assert np.all(np.abs(freq - P) < 5 * np.sqrt(P * (1 - P) / n_from))
    # The average -log-likelihood of the next tokens under a model estimates its loss.
    nm = KStateNumeric(nonlinear_model(), chain)
    theta = np.array([0.4, -0.7, 0.9])
    logp = nm.log_probabilities(theta)
    per_sequence = -logp[xs[:, :-1], xs[:, 1:]].mean(axis=1)
    se = per_sequence.std(ddof=1) / math.sqrt(n_seq)
    assert abs(per_sequence.mean() - float(nm.loss(theta))) < 5 * se


def test_sampler_never_uses_zero_transitions():
    chain = KStateChain(BIRTH_DEATH)
    xs = chain.sample(300, 100, seed=5)
    pairs = set(zip(xs[:, :-1].ravel().tolist(), xs[:, 1:].ravel().tolist()))
    assert (0, 2) not in pairs and (2, 0) not in pairs
    assert pairs == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)}


def test_sequences_start_from_the_stationary_law():
    chain = KStateChain(BIRTH_DEATH)  # pi = (2/9, 4/9, 1/3), far from uniform
    n = 20000
    xs = chain.sample(n, 2, seed=8)
    pi = np.array([float(v) for v in BIRTH_DEATH_PI])
    for column in (0, 1):  # pi is preserved by one step
        freq = np.bincount(xs[:, column], minlength=3) / n
        assert np.all(np.abs(freq - pi) < 4 * np.sqrt(pi * (1 - pi) / n))


def test_evaluate_payload_is_json_ready():
    chain = KStateChain(NONREV)
    nm = KStateNumeric(nonlinear_model(), chain)
    theta = [0.2, 0.5, -0.3]
    out = json.loads(to_json(nm.evaluate(theta)))
    assert out["model"] == "nonlinear3" and out["k"] == 3 and out["params"] == ["u", "v", "c"]
    assert out["point"] == {"u": 0.2, "v": 0.5, "c": -0.3}
    assert out["loss"] == pytest.approx(float(nm.loss(theta)), rel=1e-15)
    assert out["excess_loss"] == pytest.approx(out["loss"] - chain.entropy_rate, rel=1e-12)
    assert out["excess_loss"] > 0
    np.testing.assert_allclose(list(out["gradient"].values()), nm.gradient(theta), rtol=1e-15)
    np.testing.assert_allclose(np.sum(out["next_token_probabilities"], axis=1), 1.0, atol=1e-15)
    with pytest.raises(FlowlabInputError, match="3 coordinates"):
        nm.evaluate([[0.2, 0.5, -0.3]])


def test_compiled_once_per_model(monkeypatch):
    import flowlab.symbolic.compile

    calls = []
    real = flowlab.symbolic.compile.compile_exprs
    monkeypatch.setattr(flowlab.symbolic.compile, "compile_exprs", lambda args, exprs: calls.append(1) or real(args, exprs))
    a, b = sp.symbols("a b", real=True)
    model = KStateModel("once", ("a", "b"), (a * x, b - x, a * b))
    first = KStateNumeric(model, KStateChain(DOUBLY))
    n_calls = len(calls)
    assert n_calls >= 1
    second = KStateNumeric(model, KStateChain(NONREV))
    assert second.compiled is first.compiled and len(calls) == n_calls
    assert compile_kstate(model) is first.compiled


def test_symbols_are_matched_by_name():
    e = sp.Symbol("e")  # no real=True: still the parameter "e"
    model = KStateModel("plain", ("e",), (0, e * sp.Symbol("x")))
    assert model.logits[1].free_symbols == {sp.Symbol("e", real=True), TOKEN}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel,fragment",
    [
        ([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], "square"),
        ([0.5, 0.5], "square"),
        ([[1.0]], "at least 2 states"),
        ([[0.5, 0.6], [0.5, 0.5]], "row 0 sums to"),
        ([[0.5, 0.5], [0.3, 0.69]], "row 1 sums to"),
        ([[1.2, -0.2], [0.5, 0.5]], r"\[0, 1\]"),
        ([[0.5, 0.5], [-0.1, 1.1]], r"entry \(1, 0\)"),
        ([[0.5, float("nan")], [0.5, 0.5]], "NaN"),
        ([[0.5, float("inf")], [0.5, 0.5]], "NaN or infinite"),
        ([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]], "reducible"),
        ([[1.0, 0.0], [0.5, 0.5]], "reducible: state\\(s\\) \\[1\\] cannot be reached from state 0"),
        ([[0.5, 0.5], [0.0, 1.0]], "state 0 cannot be reached"),
        ([["0.5", "0.5"], ["0.5", "0.5"]], "real numbers"),
        ([[0.5, 0.5], [1.0]], "rows"),
    ],
)
def test_invalid_kernels(kernel, fragment):
    with pytest.raises(FlowlabInputError, match=fragment):
        KStateChain(kernel)


@pytest.mark.parametrize(
    "args,fragment",
    [
        ((0, 10, 1), "n_sequences"),
        ((10, 0, 1), "length"),
        ((10, 10, 1.5), "seed"),
        ((True, 10, 1), "n_sequences"),
    ],
)
def test_invalid_sample_arguments(args, fragment):
    with pytest.raises(FlowlabInputError, match=fragment):
        KStateChain(DOUBLY).sample(*args)


def test_invalid_models():
    a, y = sp.symbols("a y", real=True)
    with pytest.raises(FlowlabInputError, match=r"unknown symbols \['y'\]"):
        KStateModel("bad", ("a",), (0, a * y))
    with pytest.raises(FlowlabInputError, match="current token"):
        KStateModel("bad", ("x",), (0, x))
    with pytest.raises(FlowlabInputError, match="k >= 2"):
        KStateModel("bad", ("a",), (a,))
    with pytest.raises(FlowlabInputError, match="SymPy expression"):
        KStateModel("bad", ("a",), (0, "a*x"))
    with pytest.raises(FlowlabInputError, match="distinct"):
        KStateModel("bad", ("a", "a"), (0, a))
    with pytest.raises(FlowlabInputError, match="undefined functions"):
        KStateModel("bad", ("a",), (0, sp.Function("f")(a)))
    model = KStateModel("two", ("a",), (0, a * x))
    with pytest.raises(FlowlabInputError, match="2 logits but the chain has 3 states"):
        KStateNumeric(model, KStateChain(DOUBLY))
    nm = KStateNumeric(model, KStateChain.from_binary(0.2, 0.4))
    with pytest.raises(FlowlabInputError, match=r"shape \(\.\.\., 1\)"):
        nm.loss([0.1, 0.2])
    with pytest.raises(FlowlabInputError, match="NaN"):
        nm.loss([float("nan")])
    overflow = KStateNumeric(KStateModel("exp", ("a",), (0, sp.exp(a))), KStateChain.from_binary(0.2, 0.4))
    with pytest.raises(FlowlabInputError, match="not finite"):
        overflow.loss([1000.0])


# --------------------------------------------------------------------------------------------
# Kernel files
# --------------------------------------------------------------------------------------------


def test_load_kernel_from_json_and_csv(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(NONREV))
    (tmp_path / "object.json").write_text(json.dumps({"kernel": NONREV, "name": "nonrev"}))
    (tmp_path / "k.csv").write_text("0.1, 0.6, 0.3\n0.4,0.2,0.4\n\n0.5,0.25,.25\n")
    for name in ("list.json", "object.json", "k.csv"):
        kernel = load_kernel(tmp_path / name)
        np.testing.assert_array_equal(kernel, np.array(NONREV))
        chain = KStateChain.from_file(tmp_path / name)
        np.testing.assert_allclose(chain.stationary, [float(v) for v in NONREV_PI], atol=1e-12)
    (tmp_path / "int.json").write_text("[[0, 1], [1, 0]]")
    assert KStateChain.from_file(tmp_path / "int.json").k == 2


@pytest.mark.parametrize(
    "name,text,fragment",
    [
        ("a.json", "[[0.5, 0.5], [0.5, 0.5]", "not valid JSON"),
        ("a.json", "[[0.5, NaN], [0.5, 0.5]]", "not valid JSON"),
        ("a.json", '{"P": [[0.5, 0.5], [0.5, 0.5]]}', "'kernel' key"),
        ("a.json", '[[0.5, "0.5"], [0.5, 0.5]]', r"entry \(0, 1\) must be a number"),
        ("a.json", "[[0.5, true], [0.5, 0.5]]", "must be a number"),
        ("a.json", "[0.5, 0.5]", "list of rows"),
        ("a.json", "[]", "list of rows"),
        ("a.json", "[[0.5, 0.5], [1.0]]", "different lengths"),
        ("a.csv", "p0,p1\n0.5,0.5\n0.5,0.5\n", "line 1, column 1: 'p0' is not a finite number"),
        ("a.csv", "0.5,0.5\n0.5,nan\n", "line 2, column 2"),
        ("a.csv", "0.5;0.5\n0.5;0.5\n", "not a finite number"),
        ("a.csv", "0.5,0.5\n1.0\n", "different lengths"),
        ("a.csv", "\n\n", "no rows"),
        ("a.txt", "0.5,0.5\n0.5,0.5\n", ".json or .csv"),
    ],
)
def test_malformed_kernel_files(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(FlowlabInputError, match=fragment):
        load_kernel(path)


def test_missing_or_binary_kernel_file(tmp_path):
    with pytest.raises(FlowlabInputError, match="cannot read"):
        load_kernel(tmp_path / "missing.json")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(FlowlabInputError, match="UTF-8"):
        load_kernel(tmp_path / "bin.csv")
    (tmp_path / "bad.json").write_text("[[0.5, 0.6], [0.5, 0.5]]")
    with pytest.raises(FlowlabInputError, match="row 0 sums to"):
        KStateChain.from_file(tmp_path / "bad.json")
