"""Finite context: the exact expected loss over positions 1..N, by a dynamic programme.

For sequences started from pi, L_N(theta, b) = (1/N) sum_{n=1..N} E[CE(P(x_n -> 1), sigma(f(theta; x_n,
m_n) + b))] with m_n = (1/n) sum_{i<=n} x_i (MODELS.md section 4). The expectation is exact: the joint law
of (x_n, S_n = sum_{i<=n} x_i) evolves by

    w_1(x, x) = pi_x,     w_{n+1}(y, s + y) += w_n(x, s) P(x -> y),

an O(N^2) programme; the terms are then grouped by their distinct (x, m) values (weights summed), so a
model that reads only x (``ew``) costs two terms whatever N.

The symbolic layer gives the per-term pieces in (theta, x, m): the logit f and its gradient, compiled
once; the numeric layer sums softplus(z) - t z and (sigma(z) - t) grad f with the programme's weights.
With the bias profiled, b* solves sum_k w_k (sigma(f_k + b) - t_k) = 0, which is increasing in b: a
safeguarded Newton iteration per parameter point finds it, and by the envelope theorem the gradient
is the partial gradient at b*.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import expit

from flowlab.engine.checks import finite_array, integer
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.models import ATTENTION, TOKEN, Model, param_symbol

#: Refuse contexts whose programme would not fit comfortably (N^2 states).
MAX_CONTEXT = 4096
#: Terms of smaller total weight are dropped; their mass is reported (below 1e-16 up to N = 1024,
#: so the loss changes by less than 1e-16 times the largest cross-entropy term).
NEGLIGIBLE_WEIGHT = 1e-20


@dataclass(frozen=True)
class ContextTerms:
    """Distinct (x, m) values with their total weight (summing to 1) and targets P(x -> 1)."""

    x: np.ndarray
    m: np.ndarray
    weight: np.ndarray
    target: np.ndarray
    n: int
    dropped_mass: float  # total weight of the terms below NEGLIGIBLE_WEIGHT


def context_terms(chain: MarkovChain, n: int) -> ContextTerms:
    """The law of (x_n, m_n) averaged over n = 1..N, exactly (no sampling)."""
    n = integer(n, "the context length", 1, MAX_CONTEXT)
    P = chain.kernel
    # w[x, s]: probability of (x_n = x, S_n = s), s = 0..n
    w = np.zeros((2, n + 1))
    w[0, 0], w[1, 1] = chain.pi0, chain.pi1
    xs, ss, ws, ns = [], [], [], []
    for step in range(1, n + 1):
        for x in (0, 1):
            s = np.flatnonzero(w[x, : step + 1] > 0)
            xs.append(np.full(s.size, x))
            ss.append(s)
            ws.append(w[x, s])
            ns.append(np.full(s.size, step))
        if step == n:
            break
        new = np.zeros_like(w)
        for x in (0, 1):
            new[0, : step + 1] += w[x, : step + 1] * P[x, 0]
            new[1, 1 : step + 2] += w[x, : step + 1] * P[x, 1]
        w = new
    x = np.concatenate(xs)
    s = np.concatenate(ss)
    weight = np.concatenate(ws) / n
    steps = np.concatenate(ns)
    # group equal (x, s/n): the fraction s/n in lowest terms is an exact key
    g = np.gcd(s, steps)
    keys = x * (MAX_CONTEXT + 1) ** 2 + (s // g) * (MAX_CONTEXT + 1) + steps // g
    uniq, inv = np.unique(keys, return_inverse=True)
    tot = np.bincount(inv, weights=weight)
    first = np.zeros(uniq.size, dtype=int)
    first[inv[::-1]] = np.arange(inv.size)[::-1]
    xu, mu = x[first], s[first] / steps[first]
    keep = tot >= NEGLIGIBLE_WEIGHT
    target = np.where(xu == 0, chain.p, 1 - chain.q)
    return ContextTerms(xu[keep].astype(float), mu[keep], tot[keep], target[keep], n, float(tot[~keep].sum()))


@dataclass(frozen=True)
class _Compiled:
    logit: object  # f(theta, x, m) without the bias
    grad: object  # d f / d theta (without the bias)


@cache
def _compile_terms(model: Model) -> _Compiled:
    import sympy as sp

    from flowlab.symbolic.compile import compile_exprs
    from flowlab.symbolic.simplify import tidy

    prof = model.with_profiled_bias() if model.bias == "free" else model
    params = [param_symbol(n) for n in prof.params]
    args = [*params, TOKEN, ATTENTION]
    f = prof.logit

    def step(*a):  # Heaviside(x) with H(0) = 1/2 is (1 + sign(x)) / 2 exactly: one pass instead of a select
        return (1 + sp.sign(a[0])) / 2 if len(a) == 1 or a[1] == sp.S.Half else sp.Heaviside(*a)

    return _Compiled(
        logit=compile_exprs(args, [f]),
        grad=compile_exprs(args, [tidy(sp.diff(f, s)).replace(sp.Heaviside, step) for s in params]),
    )


def _by_token(terms: ContextTerms) -> ContextTerms:
    """The terms of a logit that does not read m, one per token x: sum_k w_k CE(t_k, s) = W CE(t, s) with
    W = sum_k w_k and t = sum_k w_k t_k / W over the terms of that x (exact: CE is affine in the target)."""
    xs = np.unique(terms.x)
    weight = np.array([terms.weight[terms.x == x].sum() for x in xs])
    target = np.array([terms.weight[terms.x == x] @ terms.target[terms.x == x] for x in xs]) / weight
    return ContextTerms(xs, np.zeros(xs.size), weight, target, terms.n, terms.dropped_mass)


class ContextModel:
    """The finite-context loss of ``model`` on ``chain`` for context length ``n`` (vectorised over theta).

    Works for profiled and free-bias models; for a free-bias model the last coordinate is b.

    >>> from flowlab import MarkovChain, get_model
    >>> cm = ContextModel(get_model("ew"), MarkovChain(0.5, 0.8), 16)
    >>> round(float(cm.loss([0.0, 1.0])), 10) == round(MarkovChain(0.5, 0.8).unigram_loss, 10)
    True
    """

    def __init__(self, model: Model, chain: MarkovChain, n: int, *, chunk: int = 2**22):
        self.model, self.chain, self.n = model, chain, n
        self.params = model.params
        self.terms = context_terms(chain, n)
        if not model.uses_attention:  # the per-term work is shared by every (x, m) of one token
            self.terms = _by_token(self.terms)
        self.compiled = _compile_terms(model)
        self.free_bias = model.bias == "free"
        self.chunk = chunk

    def _split(self, theta):
        theta = finite_array(theta, "theta", last_dim=len(self.params))
        flat = theta.reshape(-1, theta.shape[-1])
        if self.free_bias:
            return theta.shape[:-1], flat[:, :-1], flat[:, -1]
        return theta.shape[:-1], flat, None

    def _rows(self):
        """Rows of theta per block so that a block has about ``chunk`` (point, term) pairs."""
        return max(1, self.chunk // max(self.terms.x.size, 1))

    def _logits(self, th):
        t = self.terms
        cols = [th[:, i : i + 1] for i in range(th.shape[1])]
        out = self.compiled.logit(*cols, t.x[None, :], t.m[None, :])[0]
        return np.broadcast_to(np.asarray(out, float), (th.shape[0], t.x.size))

    def optimal_bias(self, theta) -> np.ndarray:
        """b*(theta): the root of sum_k w_k (sigma(f_k + b) - t_k) (profiled models)."""
        shape, th, _ = self._split(theta)
        out = np.empty(th.shape[0])
        rows = self._rows()
        for a in range(0, th.shape[0], rows):
            out[a : a + rows] = self._solve_bias(self._logits(th[a : a + rows]))
        return out.reshape(shape)

    def _solve_bias(self, z):
        """Safeguarded Newton on g(b) = sum_k w_k sigma(z_k + b) - sum_k w_k t_k (increasing in b).

        The per-term exponentials are computed once per point: with E_k = e^(z_k - max z) (<= 1) and
        U = e^(b + max z), sigma(z_k + b) = E_k U / (1 + E_k U), so an iteration costs a product, a sum
        and a division per term instead of an exponential; a point whose U would overflow or underflow
        (|b + max z| > 700) takes the iteration on sigma directly.
        """
        t = self.terms
        tbar = float(t.weight @ t.target)
        zmax, zmin = z.max(axis=1), z.min(axis=1)
        # bracket: every sigma below min t (g < 0) / above max t (g > 0)
        lo = np.log(t.target.min() / (1 - t.target.min())) - zmax - 1.0
        hi = np.log(t.target.max() / (1 - t.target.max())) + (-zmin) + 1.0
        b = np.clip(np.log(tbar / (1 - tbar)) - z @ t.weight, lo, hi)  # exact when all z_k are equal
        E = z - zmax[:, None]
        np.exp(E, out=E)
        act = np.arange(z.shape[0])
        for _ in range(80):
            full = act.size == z.shape[0]
            g, h = self._bias_terms(E if full else E[act], z if full else z[act], b[act] + zmax[act])
            g -= tbar
            done = np.abs(g) <= 1e-15
            lo[act] = np.where(g < 0, b[act], lo[act])
            hi[act] = np.where(g > 0, b[act], hi[act])
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = b[act] - g / h
            ok = (newton > lo[act]) & (newton < hi[act]) & np.isfinite(newton)
            step = np.where(ok, newton, 0.5 * (lo[act] + hi[act]))
            stalled = np.abs(step - b[act]) <= 4e-16 * (1 + np.abs(b[act]))
            b[act] = np.where(done, b[act], step)
            act = act[~(done | stalled)]
            if act.size == 0:
                break
        return b

    def _bias_terms(self, E, z, shift):
        """(sum_k w_k s_k, sum_k w_k s_k (1 - s_k)) with s_k = sigma(z_k + b), ``shift`` = b + max z per row."""
        w = self.terms.weight
        safe = np.abs(shift) <= 700.0
        if not safe.all():  # rare: the direct sigmoid for every row (the same values)
            s = expit(z + (shift - z.max(axis=1))[:, None])
            return s @ w, (s * (1 - s)) @ w
        eu = E * np.exp(shift)[:, None]  # e^(z_k + b)
        den = eu + 1.0
        eu /= den  # sigma
        g = eu @ w
        eu /= den  # sigma (1 - sigma) = e / (1 + e)^2
        return g, eu @ w

    def loss_and_gradient(self, theta):
        shape, th, bias = self._split(theta)
        t = self.terms
        rows = self._rows()
        loss = np.empty(th.shape[0])
        grad = np.empty((th.shape[0], len(self.params)))
        for a in range(0, th.shape[0], rows):
            blk = th[a : a + rows]
            z = self._logits(blk)
            b = bias[a : a + rows] if self.free_bias else self._solve_bias(z)
            zz = z + b[:, None]
            loss[a : a + rows] = np.logaddexp(0.0, zz) @ t.weight - zz @ (t.weight * t.target)
            r = (expit(zz) - t.target[None, :]) * t.weight[None, :]  # dL/dz per term
            cols = [blk[:, i : i + 1] for i in range(blk.shape[1])]
            gf = self.compiled.grad(*cols, t.x[None, :], t.m[None, :])
            for j, g in enumerate(gf):
                grad[a : a + rows, j] = np.sum(r * np.broadcast_to(np.asarray(g, float), r.shape), axis=1)
            if self.free_bias:
                grad[a : a + rows, -1] = r.sum(axis=1)
        return loss.reshape(shape), grad.reshape(shape + (len(self.params),))

    def loss(self, theta) -> np.ndarray:
        return self.loss_and_gradient(theta)[0]

    def gradient(self, theta) -> np.ndarray:
        return self.loss_and_gradient(theta)[1]

