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

Three ways to run the sums over the terms (``ContextModel.path``): per (point, term) pair ("direct", the
reference, for any logit); one term per token for a logit that does not read m ("by_token"); and, for a logit
affine in m on each side of one breakpoint (``ewa``), an interpolatory quadrature on dyadic bins of m whose
weights are computed once per (chain, N) ("quadrature", :mod:`flowlab.systems.markov.context_quadrature`):
exact to rounding (1e-15 relative in the loss, measured against the per-term sums), at N = 256 about
200-300 evaluations per point instead of 2 x 10^4.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import expit

from flowlab.engine.checks import finite_array, integer
from flowlab.engine.errors import FlowlabInputError
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


def _row_sums(a, w):
    """sum_j a[i, j] w[i, j] per row; ``w`` has one row (shared) or one per row of ``a``."""
    if w.shape[0] == 1:
        return a @ w[0]
    return np.einsum("ij,ij->i", a, w)


def _rows_of(w, act, full):
    return w if full or w.shape[0] == 1 else w[act]


def _bias_terms(E, z, shift, w):
    """(sum_k w_k s_k, sum_k w_k s_k (1 - s_k)) with s_k = sigma(z_k + b), ``shift`` = b + max z per row."""
    safe = np.abs(shift) <= 700.0
    if not safe.all():  # rare: the direct sigmoid for every row (the same values)
        s = expit(z + (shift - z.max(axis=1))[:, None])
        return _row_sums(s, w), _row_sums(s * (1 - s), w)
    eu = E * np.exp(shift)[:, None]  # e^(z_k + b)
    den = eu + 1.0
    eu /= den  # sigma
    g = _row_sums(eu, w)
    eu /= den  # sigma (1 - sigma) = e / (1 + e)^2
    return g, _row_sums(eu, w)


def solve_bias(z, w, t):
    """Safeguarded Newton on g(b) = sum_k w_k sigma(z_k + b) - sum_k w_k t_k (increasing in b), per row of z.

    ``w`` and ``t`` have one row (shared by every row of z) or one per row. The per-term exponentials are
    computed once per point: with E_k = e^(z_k - max z) (<= 1) and U = e^(b + max z),
    sigma(z_k + b) = E_k U / (1 + E_k U), so an iteration costs a product, a sum and a division per term
    instead of an exponential; a point whose U would overflow or underflow (|b + max z| > 700) takes the
    iteration on sigma directly.
    """
    tbar = np.broadcast_to((w * t).sum(axis=1), (z.shape[0],))
    zmax, zmin = z.max(axis=1), z.min(axis=1)
    # bracket: every sigma below min t (g < 0) / above max t (g > 0)
    tmin, tmax = t.min(), t.max()
    lo = np.log(tmin / (1 - tmin)) - zmax - 1.0
    hi = np.log(tmax / (1 - tmax)) + (-zmin) + 1.0
    b = np.clip(np.log(tbar / (1 - tbar)) - _row_sums(z, w), lo, hi)  # exact when all z_k are equal
    E = z - zmax[:, None]
    np.exp(E, out=E)
    act = np.arange(z.shape[0])
    for _ in range(80):
        full = act.size == z.shape[0]
        g, h = _bias_terms(E if full else E[act], z if full else z[act], b[act] + zmax[act], _rows_of(w, act, full))
        g -= tbar[act]
        done = np.abs(g) <= 1e-15
        lo[act] = np.where(g < 0, b[act], lo[act])
        hi[act] = np.where(g > 0, b[act], hi[act])
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = b[act] - g / h
        ok = (newton >= lo[act]) & (newton <= hi[act]) & np.isfinite(newton)  # newton == b: stalled
        step = np.where(ok, newton, 0.5 * (lo[act] + hi[act]))
        stalled = np.abs(step - b[act]) <= 4e-16 * (1 + np.abs(b[act]))
        b[act] = np.where(done, b[act], step)
        act = act[~(done | stalled)]
        if act.size == 0:
            break
    return b


@dataclass(frozen=True)
class _Block:
    """Rows of theta and the (x, m, weight, target) terms their sums run over, shape (1, J) (direct path)."""

    rows: np.ndarray
    x: np.ndarray
    m: np.ndarray
    weight: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class _Group:
    """Rows of theta on the quadrature path that share the level and which tokens have a window."""

    rows: np.ndarray
    level: int
    sides: tuple  # per token: context_quadrature.Sides of the rows


#: Paths of :class:`ContextModel`: every (point, term) pair, one term per token (a logit without m), or the
#: interpolatory quadrature on dyadic bins of m (:mod:`flowlab.systems.markov.context_quadrature`).
PATHS = ("direct", "by_token", "quadrature")
#: "auto": per point the cheaper of the quadrature and the per-term sums; "direct": always the per-term sums;
#: "quadrature": the quadrature for every point it can take (however many terms there are).
METHODS = ("auto", "direct", "quadrature")


class ContextModel:
    """The finite-context loss of ``model`` on ``chain`` for context length ``n`` (vectorised over theta).

    Works for profiled and free-bias models; for a free-bias model the last coordinate is b. ``path`` says
    how the sums over the terms run (:data:`PATHS`, :data:`METHODS`). On the quadrature path, points whose
    slope in m is too steep for the finest bins take the per-term sums, and so (with ``method="auto"``) do
    points for which they are cheaper.

    >>> from flowlab import MarkovChain, get_model
    >>> cm = ContextModel(get_model("ew"), MarkovChain(0.5, 0.8), 16)
    >>> round(float(cm.loss([0.0, 1.0])), 10) == round(MarkovChain(0.5, 0.8).unigram_loss, 10)
    True
    """

    def __init__(self, model: Model, chain: MarkovChain, n: int, *, chunk: int = 2**21, method: str = "auto"):
        from flowlab.systems.markov import context_quadrature as cq

        if method not in METHODS:
            raise FlowlabInputError(f"the finite-context method must be one of {METHODS}, got {method!r}")
        self.model, self.chain, self.n = model, chain, n
        self.params = model.params
        self.terms = context_terms(chain, n)
        self.compiled = _compile_terms(model)
        self.free_bias = model.bias == "free"
        self.chunk, self.method = chunk, method
        self.structure, self.tables = None, ()
        if not model.uses_attention:  # the per-term work is shared by every (x, m) of one token
            self.terms, self.path = _by_token(self.terms), "by_token"
        elif method != "direct" and (structure := cq.piecewise_structure(model)) is not None:
            self.structure, self.path = structure, "quadrature"
            self.tables = _token_tables(chain, self.terms)
        else:
            self.path = "direct"

    def _split(self, theta):
        theta = finite_array(theta, "theta", last_dim=len(self.params))
        flat = theta.reshape(-1, theta.shape[-1])
        if self.free_bias:
            return theta.shape[:-1], flat[:, :-1], flat[:, -1]
        return theta.shape[:-1], flat, None

    def _direct_blocks(self, rows):
        """Blocks of about ``chunk`` (point, term) pairs over every term."""
        t = self.terms
        step = max(1, self.chunk // max(t.x.size, 1))
        for a in range(0, rows.size, step):
            yield _Block(rows[a : a + step], t.x[None], t.m[None], t.weight[None], t.target[None])

    def _blocks(self, th):
        """The blocks of the rows of ``th``: quadrature groups where its structure applies, else direct."""
        rows = np.arange(th.shape[0])
        if self.path != "quadrature":
            yield from self._direct_blocks(rows)
            return
        yield from _quadrature_blocks(self, th)

    def _evaluate(self, th, bias, block, *, gradient: bool):
        """(loss, gradient or None, b) of the rows of one block."""
        if isinstance(block, _Block):
            z = self._logits(th, block)
            parts = None
        else:
            z, w, t, parts = _quadrature_sums(self, th, block)
            block = _Block(block.rows, None, None, w, t)
        w, t = block.weight, block.target
        b = bias if bias is not None else solve_bias(z, w, t)
        if not gradient:
            return None, None, b
        zz = z + b[:, None]
        loss = _row_sums(np.logaddexp(0.0, zz), w) - _row_sums(zz, w * t)
        r = (expit(zz) - t) * w  # dL/dz per term
        grad = np.empty((th.shape[0], len(self.params)))
        if parts is None:
            cols = [th[:, i : i + 1] for i in range(th.shape[1])]
            for j, g in enumerate(self.compiled.grad(*cols, block.x, block.m)):
                grad[:, j] = np.sum(r * np.broadcast_to(np.asarray(g, float), r.shape), axis=1)
        else:
            grad[:, : th.shape[1]] = _quadrature_gradient(self, th, r, parts)
        if self.free_bias:
            grad[:, -1] = r.sum(axis=1)
        return loss, grad, b

    def _logits(self, th, block):
        cols = [th[:, i : i + 1] for i in range(th.shape[1])]
        out = self.compiled.logit(*cols, block.x, block.m)[0]
        return np.broadcast_to(np.asarray(out, float), (th.shape[0], block.x.shape[1]))

    def optimal_bias(self, theta) -> np.ndarray:
        """b*(theta): the root of sum_k w_k (sigma(f_k + b) - t_k) (profiled models)."""
        shape, th, _ = self._split(theta)
        out = np.empty(th.shape[0])
        for block in self._blocks(th):
            out[block.rows] = self._evaluate(th[block.rows], None, block, gradient=False)[2]
        return out.reshape(shape)

    def loss_and_gradient(self, theta):
        shape, th, bias = self._split(theta)
        loss = np.empty(th.shape[0])
        grad = np.empty((th.shape[0], len(self.params)))
        for block in self._blocks(th):
            rows = block.rows
            loss[rows], grad[rows], _ = self._evaluate(th[rows], None if bias is None else bias[rows], block,
                                                       gradient=True)
        return loss.reshape(shape), grad.reshape(shape + (len(self.params),))

    def point_paths(self, theta) -> np.ndarray:
        """Per point, the path its sums take: ``self.path``, or "direct" for the points the quadrature leaves to
        the per-term sums."""
        shape, th, _ = self._split(theta)
        out = np.full(th.shape[0], self.path, dtype=object)
        for block in self._blocks(th):
            if isinstance(block, _Block):
                out[block.rows] = "direct" if self.path == "quadrature" else self.path
        return out.reshape(shape)

    def loss(self, theta) -> np.ndarray:
        return self.loss_and_gradient(theta)[0]

    def gradient(self, theta) -> np.ndarray:
        return self.loss_and_gradient(theta)[1]


#: Quadrature tables of the last few (p, q, N), computed once each (about 0.3 s at N = 256).
_TABLES: dict = {}


def _token_tables(chain: MarkovChain, terms: ContextTerms):
    """The quadrature tables of each token for the chain and the terms of its context (cached)."""
    from flowlab.systems.markov import context_quadrature as cq

    key = (chain.p, chain.q, terms.n)
    if key not in _TABLES:
        if len(_TABLES) >= 8:
            _TABLES.pop(next(iter(_TABLES)))
        out = []
        for x in np.unique(terms.x):
            sel = terms.x == x
            out.append(cq.token_table(x, terms.target[sel][0], terms.m[sel], terms.weight[sel]))
        _TABLES[key] = tuple(out)
    return _TABLES[key]


def _quadrature_blocks(cm: ContextModel, th):
    """Group the points by (level, which tokens have a window of one or two finest bins) and yield direct
    blocks for the points the quadrature does not take (slope beyond the finest level; with ``method="auto"``
    also where the per-term sums are cheaper), then the groups in chunks of about ``chunk`` slots."""
    from flowlab.systems.markov import context_quadrature as cq

    n_pts = th.shape[0]
    cols = [th[:, i : i + 1] for i in range(th.shape[1])]
    beta = np.zeros(n_pts)
    sides, direct, key, width = [], np.zeros(n_pts, bool), np.zeros(n_pts, np.int64), np.zeros(n_pts, np.int64)
    for table in cm.tables:
        out = cm.structure.branches(*cols, table.x, 0.5)
        half = len(out) // 2
        for s in (out[1], out[half + 1]):  # df/dm on each branch
            beta = np.maximum(beta, np.abs(np.broadcast_to(np.asarray(s, float), (n_pts, 1))[:, 0]))
        side = cq.sides(cm.structure, cols, table.x, n_pts)
        sides.append(side)
        direct |= ~side.ok
        kind = np.where(side.first < 0, 0, np.where(side.last > side.first, 2, 1))
        key = key * 3 + kind
        width += np.where(kind > 0, cq.NODES + np.array(table.window)[np.maximum(kind - 1, 0)], 0)
    level = cq.point_levels(beta)
    direct |= ~np.isfinite(beta) | (level > cq.FINEST)
    width += len(cm.tables) * cq.NODES * 2 ** np.minimum(level, cq.FINEST)
    if cm.method == "auto":  # slots per point against terms
        direct |= width >= cm.terms.x.size
    yield from cm._direct_blocks(np.flatnonzero(direct))
    key += level * 3 ** len(cm.tables)
    for k in np.unique(key[~direct]):
        rows = np.flatnonzero((key == k) & ~direct)
        step = max(1, cm.chunk // int(width[rows[0]]))
        for a in range(0, rows.size, step):
            sub = rows[a : a + step]
            yield _Group(sub, int(level[sub[0]]), tuple(s.rows(sub) for s in sides))


def _branch_coefficients(cm: ContextModel, cols, x, left_positive, n_pts):
    """Per branch left and right of the breakpoint: (f, df/dm, [df/dtheta_j], [d2f/dtheta_j dm]) at m = 1/2."""
    out = [np.broadcast_to(np.asarray(v, float), (n_pts, 1))[:, 0] for v in cm.structure.branches(*cols, x, 0.5)]
    half = len(out) // 2
    lp = left_positive
    left = [np.where(lp, p, n) for p, n in zip(out[:half], out[half:])]
    right = [np.where(lp, n, p) for p, n in zip(out[:half], out[half:])]
    d = (half - 2) // 2
    return [(s[0], s[1], np.stack(s[2 : 2 + d], axis=1), np.stack(s[2 + d :], axis=1)) for s in (left, right)]


def _quadrature_sums(cm: ContextModel, th, group: _Group):
    """The logits, weights and targets over the quadrature slots of a group (both tokens side by side), and
    per token what the gradient needs: (slice, m - 1/2, right, branch coefficients, window m)."""
    from flowlab.systems.markov import context_quadrature as cq

    cols = [th[:, i : i + 1] for i in range(th.shape[1])]
    n_pts = th.shape[0]
    zs, ws, ts, parts, at = [], [], [], [], 0
    for table, side in zip(cm.tables, group.sides):
        m, w, right, n_terms = cq.slots(table, group.level, side)
        (fl, sl, *gl), (fr, sr, *gr) = _branch_coefficients(cm, cols, table.x, side.left_is_positive, n_pts)
        n_q = m.shape[1] - n_terms
        mq = m[:, :n_q] - 0.5
        zq = np.where(right[:, :n_q], fr[:, None] + sr[:, None] * mq, fl[:, None] + sl[:, None] * mq)
        mw = m[:, n_q:]
        zw = np.broadcast_to(np.asarray(cm.compiled.logit(*cols, table.x, mw)[0], float), (n_pts, mw.shape[1]))
        zs += [np.broadcast_to(zq, (n_pts, n_q)), zw]
        ws.append(w)
        ts.append(np.full(m.shape[1], table.target))
        parts.append((slice(at, at + n_q), mq, right[:, :n_q], (gl, gr), mw, slice(at + n_q, at + m.shape[1])))
        at += m.shape[1]
    if any(w.shape[0] > 1 for w in ws):
        ws = [np.broadcast_to(w, (n_pts, w.shape[1])) for w in ws]
    return np.concatenate(zs, axis=1), np.concatenate(ws, axis=1), np.concatenate(ts)[None], parts


def _quadrature_gradient(cm: ContextModel, th, r, parts):
    """sum over the slots of r df/dtheta: on the nodes, where df/dtheta is affine in m on each branch, by two
    sums per branch; on the window's terms, with the compiled gradient."""
    cols = [th[:, i : i + 1] for i in range(th.shape[1])]
    grad = np.zeros((th.shape[0], th.shape[1]))
    for part, table in zip(parts, cm.tables):
        nodes, mq, right, ((gl, gml), (gr, gmr)), mw, window = part
        rq = r[:, nodes]
        rl = np.where(right, 0.0, rq)
        rr = rq - rl
        grad += gl * rl.sum(axis=1)[:, None] + gml * _row_sums(rl, mq)[:, None]
        grad += gr * rr.sum(axis=1)[:, None] + gmr * _row_sums(rr, mq)[:, None]
        if mw.shape[1]:
            rw = r[:, window]
            for j, g in enumerate(cm.compiled.grad(*cols, table.x, mw)):
                grad[:, j] += np.sum(rw * np.broadcast_to(np.asarray(g, float), rw.shape), axis=1)
    return grad
