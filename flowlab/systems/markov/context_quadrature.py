"""Finite context, fast exact path: interpolatory quadrature of the (x, m) terms on dyadic bins of m.

For a logit that is affine in the attention average m on each side of one breakpoint m*(theta, x) (model
``ewa``: f = e^2 [s + 4 w|w| max(s, 0)], s = (x - 1/2) + a (m - 1/2)), every per-term quantity that the loss,
its gradient and the bias equation sum (softplus(z), sigma(z), sigma'(z), times df/dtheta, itself affine in m),
with z = f + b, is analytic in m on each side, its singularities (those of softplus and sigma, at
z = i pi (2k + 1)) at distance >= pi / |dz/dm| from the real axis. So over a bin of half-width r with
|dz/dm| r <= REACH, the Chebyshev interpolant of degree NODES - 1 of such an h converges geometrically
(Bernstein ellipse rho < 2 + sqrt(5) for REACH = pi/2), and the sum of w_k h(m_k) over the bin's terms equals
sum_i q_i h(node_i), q_i = sum_k w_k l_i(m_k) (l_i the Lagrange basis of the bin's nodes), to the accuracy
of the interpolant. Measured for softplus and sigma with REACH = pi/2: at the rounding level (1e-15) from 24
nodes on; 26 are used.

The bins form a dyadic hierarchy of [0, 1] (2^l bins at level l = 0..FINEST); the weights q of every bin, and
for every finest bin j those of the terms of j's enclosing bin lying before j and after j, are computed once
per (chain, N). A point takes the coarsest level its slope allows. Its breakpoint's window (the one or two
finest bins within WINDOW of m*) is summed term by term with the compiled logit; the bin(s) holding it are
split there (before/after weights), each part integrated with the branch of its side, affine in m over the
whole bin, so every quadrature sum integrates an analytic function. Nothing is sampled or truncated.

The structure (affine pieces, one breakpoint solvable linearly in m) is read off the logit symbolically,
once per model; a logit without it returns None and keeps the direct per-term path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

#: Chebyshev nodes per bin, the finest level, and the bound on |dz/dm| times a bin's half-width.
NODES = 26
FINEST = 11
REACH = math.pi / 2
#: Terms closer than this to the breakpoint are in the window (summed term by term).
WINDOW = 1e-9


@dataclass(frozen=True)
class Structure:
    """Compiled pieces of a logit affine in m on each side of one breakpoint m* = -const / coef."""

    root: object  # (theta..., x, m) -> [coef, const] of the kink argument u = coef m + const, or None
    branches: object  # (theta..., x, m) -> per branch (u > 0, u < 0): f, df/dm, then df/dtheta_j, d2f/dtheta_j dm


def _kinks(expr, m):
    """The non-smooth nodes of ``expr`` that depend on m, and whether a Piecewise (unsupported) reads m."""
    import sympy as sp

    kinds = (sp.Max, sp.Min, sp.Abs, sp.sign, sp.Heaviside)
    kinks = {node for node in sp.preorder_traversal(expr) if isinstance(node, kinds) and node.has(m)}
    pieces = any(node.has(m) for node in sp.preorder_traversal(expr) if isinstance(node, sp.Piecewise))
    return kinks, pieces


def _argument_and_branches(node):
    """(u, value where u > 0, value where u < 0) of a kink node, or None when unsupported."""
    import sympy as sp

    if isinstance(node, (sp.Max, sp.Min)):
        if len(node.args) != 2:
            return None
        u, v = node.args
        return (u - v, u, v) if isinstance(node, sp.Max) else (u - v, v, u)
    u = node.args[0]
    if isinstance(node, sp.Abs):
        return u, u, -u
    if isinstance(node, sp.sign):
        return u, sp.S.One, -sp.S.One
    return u, sp.S.One, sp.S.Zero  # Heaviside


@cache
def piecewise_structure(model) -> Structure | None:
    """The breakpoint and affine pieces of ``model``'s logit in m, or None when it is not affine in m on each side
    of one breakpoint (then the direct per-term path is used). Checks the logit and its gradient."""
    import sympy as sp

    from flowlab.symbolic.compile import compile_exprs
    from flowlab.symbolic.simplify import tidy
    from flowlab.systems.markov.models import ATTENTION, TOKEN, param_symbol

    prof = model.with_profiled_bias() if model.bias == "free" else model
    params = [param_symbol(n) for n in prof.params]
    m = ATTENTION
    exprs = [prof.logit, *(tidy(sp.diff(prof.logit, s)) for s in params)]
    found = [_kinks(e, m) for e in exprs]
    if any(pieces for _, pieces in found):
        return None
    kinks = set().union(*(k for k, _ in found))
    parts = {node: _argument_and_branches(node) for node in kinks}
    if any(v is None for v in parts.values()):
        return None
    for u, _, _ in parts.values():
        if sp.simplify(sp.diff(u, m, 2)) != 0 or _kinks(u, m)[0]:
            return None
    u0 = next(iter(parts.values()))[0] if parts else sp.S.One
    for node, (u, pos, neg) in parts.items():
        ratio = sp.simplify(u / u0)
        if not (ratio.is_number and ratio.is_nonzero):
            return None  # more than one breakpoint
        if ratio.is_negative:  # the same breakpoint, the branches named by the sign of u0
            parts[node] = (u0, neg, pos)
    branches = []
    for side in (1, 2):  # the branch where u > 0, then where u < 0
        sub = {node: parts[node][side] for node in kinks}
        piece = [e.xreplace(sub) for e in exprs]
        if any(p.has(m) and _kinks(p, m)[0] for p in piece):
            return None  # nested kinks in m
        if any(sp.simplify(sp.diff(p, m, 2)) != 0 for p in piece):
            return None
        branches += [piece[0], sp.diff(piece[0], m), *piece[1:], *(sp.diff(p, m) for p in piece[1:])]
    args = [*params, TOKEN, m]
    root = compile_exprs(args, [sp.diff(u0, m), u0.subs(m, 0)]) if kinks else None
    return Structure(root=root, branches=compile_exprs(args, branches))


def chebyshev_weights(u: np.ndarray, k: int = NODES) -> np.ndarray:
    """l_i(u) for the Lagrange basis on the k Chebyshev points of the first kind (barycentric form).

    ``u`` in [-1, 1], shape (n,); returns (n, k). A u equal to a node gives the unit vector."""
    i = np.arange(k)
    nodes = np.cos((2 * i + 1) * np.pi / (2 * k))
    lam = (-1.0) ** i * np.sin((2 * i + 1) * np.pi / (2 * k))
    diff = u[:, None] - nodes[None, :]
    hit = diff == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        c = lam / diff
        out = c / c.sum(axis=1, keepdims=True)
    rows = hit.any(axis=1)
    out[rows] = hit[rows].astype(float)
    return out


@cache
def chebyshev_nodes(level: int, k: int = NODES) -> np.ndarray:
    """(2^level, k): the Chebyshev nodes of every bin of that level, in m."""
    i = np.arange(k)
    u = np.cos((2 * i + 1) * np.pi / (2 * k))
    width = 1.0 / 2**level
    centre = (np.arange(2**level) + 0.5) * width
    out = centre[:, None] + 0.5 * width * u[None, :]
    out.flags.writeable = False
    return out


def bin_of(m: np.ndarray, level: int) -> np.ndarray:
    """The bin of each m at a level (m = 1 is in the last bin)."""
    return np.minimum(np.floor(m * 2**level).astype(np.int64), 2**level - 1)


@dataclass(frozen=True)
class TokenTable:
    """The terms of one token x sorted by m, and per level the quadrature weights of every bin (``whole``)
    and, for every finest bin j, those of the terms of j's bin at that level lying before j / after j."""

    x: float
    target: float
    m: np.ndarray  # sorted
    weight: np.ndarray
    start: np.ndarray  # (2^FINEST + 1,): first term of each finest bin
    window: tuple  # the most terms in one finest bin, in two neighbouring ones
    whole: tuple  # per level: (2^l, NODES)
    before: tuple  # per level: (2^FINEST, NODES)
    after: tuple  # per level: (2^FINEST, NODES)


#: Terms per block when the weights are accumulated (bounds the memory at large N).
BLOCK = 2**16


def _per_finest_bin(u: np.ndarray, weight: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(2^FINEST, NODES): sum of w_k l_i(u_k) over the terms of each finest bin (terms sorted, ``first[j]`` the
    first term of bin j), accumulated over blocks of about BLOCK terms that hold whole finest bins."""
    out = np.zeros((2**FINEST, NODES))
    used = np.flatnonzero(np.diff(first) > 0)
    starts = first[used]
    cuts = np.append(np.unique(np.searchsorted(starts, np.arange(0, u.size, BLOCK))), used.size)
    for c0, c1 in zip(cuts[:-1], cuts[1:]):
        a, b = starts[c0], starts[c1] if c1 < used.size else u.size
        v = weight[a:b, None] * chebyshev_weights(u[a:b])
        out[used[c0:c1]] = np.add.reduceat(v, starts[c0:c1] - a, axis=0)
    return out


def token_table(x: float, target: float, m: np.ndarray, weight: np.ndarray) -> TokenTable:
    """Precompute the quadrature weights of every bin for the terms (m, weight) of one token."""
    order = np.argsort(m, kind="stable")
    m, weight = m[order], weight[order]
    fine = bin_of(m, FINEST)
    first = np.searchsorted(fine, np.arange(2**FINEST + 1))
    whole, before, after = [], [], []
    for level in range(FINEST + 1):
        j = bin_of(m, level)
        width = 1.0 / 2**level
        u = np.clip((m - (j + 0.5) * width) / (0.5 * width), -1.0, 1.0)
        groups = _per_finest_bin(u, weight, first).reshape(2**level, 2 ** (FINEST - level), NODES)
        below = np.cumsum(groups, axis=1) - groups
        above = np.cumsum(groups[:, ::-1], axis=1)[:, ::-1] - groups
        whole.append(groups.sum(axis=1))
        before.append(below.reshape(2**FINEST, NODES))
        after.append(above.reshape(2**FINEST, NODES))
    count = np.diff(first)
    window = (int(count.max(initial=0)), int((count[1:] + count[:-1]).max(initial=0)))
    return TokenTable(float(x), float(target), m, weight, first, window, tuple(whole), tuple(before), tuple(after))


def point_levels(beta: np.ndarray) -> np.ndarray:
    """The coarsest level whose bins satisfy |dz/dm| * half-width <= REACH (FINEST + 1: none does)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.ceil(np.log2(beta / (2 * REACH)))
    need = np.where(np.isfinite(need), need, np.where(beta > 0, FINEST + 1, 0))
    return np.clip(need, 0, FINEST + 1).astype(np.int64)


@dataclass(frozen=True)
class Sides:
    """Per point and token: the first and last finest bins of the breakpoint's window (two at most; -1: no
    breakpoint in [0, 1]), whether the branch u > 0 is the one left of the breakpoint (or everywhere, without
    one), and whether the fast path applies (False: the kink argument vanishes for every m)."""

    first: np.ndarray
    last: np.ndarray
    left_is_positive: np.ndarray
    ok: np.ndarray

    def rows(self, sel) -> Sides:
        return Sides(self.first[sel], self.last[sel], self.left_is_positive[sel], self.ok[sel])


def sides(structure: Structure, cols, x: float, n_pts: int) -> Sides:
    """Where the breakpoint m* = -const / coef of token x lies, per point (:class:`Sides`): the window holds
    the finest bins within WINDOW of m*."""
    if structure.root is None:
        none = np.full(n_pts, -1)
        return Sides(none, none, np.ones(n_pts, bool), np.ones(n_pts, bool))
    coef, const = (np.broadcast_to(np.asarray(v, float), (n_pts, 1))[:, 0] for v in structure.root(*cols, x, 0.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(coef != 0, -const / np.where(coef != 0, coef, 1.0), np.inf)
    inside = (root >= -WINDOW) & (root <= 1 + WINDOW)
    size = 2**FINEST
    at = np.where(inside, root, 0.0)
    lo = np.clip(np.floor((at - WINDOW) * size), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor((at + WINDOW) * size), 0, size - 1).astype(np.int64)
    u_mid = coef * 0.5 + const
    left_positive = np.where(inside, coef < 0, u_mid > 0)
    ok = inside | ((u_mid != 0) & np.isfinite(u_mid))
    return Sides(np.where(inside, lo, -1), np.where(inside, hi, -1), left_positive, ok)


def slots(table: TokenTable, level: int, side: Sides):
    """(m, weight, right, n_terms) for a group of points at one level, all with or all without a window (then
    m, weight and right have one row, shared).

    The slots are the nodes of the bins of ``level``: weights of the whole bin, or for the bin holding the
    window's first finest bin those of its terms before the window; then, with a window, the nodes of the bin
    holding its last finest bin (weights of its terms after the window); then the window's terms with their
    own weights (the last ``n_terms`` slots, padded with zero weights). ``right`` marks the slots right of
    the breakpoint."""
    n_pts, first, last = side.first.size, side.first, side.last
    nodes = chebyshev_nodes(level)
    size = 2**level
    if (first < 0).all():
        return nodes.reshape(1, -1), table.whole[level].reshape(1, -1), np.zeros((1, nodes.size), bool), 0
    home, away = first >> (FINEST - level), last >> (FINEST - level)  # the bins of the window at this level
    w = np.broadcast_to(table.whole[level][None], (n_pts, size, NODES)).copy()
    w[np.arange(n_pts), away] = 0.0  # its part after the window comes next
    w[np.arange(n_pts), home] = table.before[level][first]
    right = np.repeat(np.arange(size)[None, :] > home[:, None], NODES, axis=1)
    wide = int((last > first).any())
    k = table.start[first][:, None] + np.arange(max(table.window[wide], 1))[None, :]
    inside = k < table.start[last + 1][:, None]
    k = np.minimum(k, table.m.size - 1)
    m = np.concatenate([np.broadcast_to(nodes.reshape(1, -1), (n_pts, nodes.size)), nodes[away], table.m[k]], axis=1)
    weight = np.concatenate([w.reshape(n_pts, -1), table.after[level][last], np.where(inside, table.weight[k], 0)],
                            axis=1)
    right = np.concatenate([right, np.ones((n_pts, NODES), bool), np.zeros(k.shape, bool)], axis=1)
    return m, weight, right, k.shape[1]
