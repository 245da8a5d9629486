"""Numeric critical sets of any model: multi-start roots of grad L, continuation, classification.

1. **Roots.** Levenberg-Marquardt on the residual grad L (Jacobian: the Hessian), vectorised
   over a scrambled Sobol set of starts in the box; a root is kept when |grad L| <= ``gtol``.
   Damping makes the iteration converge onto non-isolated roots (curves, surfaces), where the
   Hessian is singular, as well as onto isolated ones.
2. **Dimension.** At a root, each null direction v of the Hessian is tested by stepping to
   x + h v and projecting back onto grad L = 0 within the hyperplane through x + h v normal to v:
   if the projection lands there, v is tangent to a critical set. An isolated degenerate point
   (null Hessian, no critical neighbours) thus gets dimension 0, a curve 1.
3. **Sets.** Roots are grouped by loss value (L is constant on a connected critical set).
   A 1-D set is traced by pseudo-arclength continuation (predictor step along the tangent,
   corrector on the normal hyperplane) until it leaves the box or closes, which connects the
   roots it passes; higher-dimensional sets are grouped by single linkage.
4. **Classification (Morse-Bott).** Along a set, the Hessian restricted to the normal space
   gives the kind. Where its determinant changes sign along a traced curve, the split point is
   located by bisection and classified from higher-order behaviour: the sign of L - L0 on small
   spheres around it (both signs: saddle; one sign: minimum or maximum; neither: degenerate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.io import json_float

#: Relative size of a null Hessian eigenvalue.
NULL_TOL = 1e-7
#: Isolated roots of the same loss closer than this (relative to the box diagonal) are one point.
ISOLATED_RADIUS = 1e-3


@dataclass(frozen=True)
class NumericPiece:
    """A critical set found numerically, with one kind."""

    kind: str
    dimension: int
    loss: float
    points: np.ndarray  # (k, n)
    split: bool = False  # a point where the normal curvature of its set changes sign

    def as_dict(self) -> dict:
        return {"kind": self.kind, "dimension": self.dimension, "loss": json_float(self.loss),
                "points": [[json_float(v) for v in x] for x in self.points], "split": self.split}


@dataclass(frozen=True)
class NumericCritical:
    """The roots found from ``starts`` multi-starts (``converged`` of them converged) and the pieces.

    ``status`` is "ok" when pieces were formed (or only roots were asked for), "none" when no root
    was found in the box; ``message`` says so in words. A numeric search never proves that no
    critical point was missed: ``complete`` is always False.
    """

    roots: np.ndarray  # de-duplicated multi-start roots (m, n)
    pieces: tuple[NumericPiece, ...]
    starts: int
    converged: int
    notes: tuple[str, ...]
    status: str = "ok"
    message: str = ""
    complete: bool = False

    def as_dict(self) -> dict:
        return {
            "status": self.status, "message": self.message, "complete": self.complete,
            "starts": self.starts, "converged": self.converged,
            "roots": [[json_float(v) for v in x] for x in self.roots],
            "pieces": [pc.as_dict() for pc in self.pieces], "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- projection
def project(obj, x, *, planes=None, gtol=1e-13, max_iter=120):
    """Levenberg-Marquardt onto grad L = 0 from each row of ``x``.

    ``planes`` = (normals (k, n), anchors (k, n)) adds the residual normal . (x - anchor), which
    keeps each point on the hyperplane through its anchor (continuation's corrector).
    Returns (points, converged mask).
    """
    x = np.array(x, dtype=np.float64, copy=True)
    k, n = x.shape

    def residual(z, idx):
        with np.errstate(all="ignore"):
            r = obj.gradient(z)
        if planes is not None:
            c, a = planes[0][idx], planes[1][idx]
            r = np.concatenate([r, np.sum(c * (z - a), axis=-1, keepdims=True)], axis=-1)
        return r

    def jacobian(z, idx):
        with np.errstate(all="ignore"):
            h = obj.hessian(z)
        if planes is not None:
            h = np.concatenate([h, planes[0][idx][:, None, :]], axis=1)
        return h

    idx_all = np.arange(k)
    r = residual(x, idx_all)
    cost = np.sum(r * r, axis=-1)
    lam = np.full(k, 1e-3)
    done = _small(r, gtol)
    alive = ~done & np.isfinite(cost)
    eye = np.eye(n)
    for _ in range(max_iter):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        J = jacobian(x[idx], idx)
        ri = r[idx]
        JtJ = np.einsum("kij,kil->kjl", J, J)
        g = np.einsum("kij,ki->kj", J, ri)
        scale = np.trace(JtJ, axis1=1, axis2=2) / n + 1e-300
        A = JtJ + (lam[idx] * scale)[:, None, None] * eye
        try:
            step = -np.linalg.solve(A, g[..., None])[..., 0]
        except np.linalg.LinAlgError:  # an exactly singular row: fall back to the pseudo-inverse
            step = -np.einsum("kij,kj->ki", np.linalg.pinv(A), g)
        trial = x[idx] + step
        ok = np.all(np.isfinite(trial), axis=-1)
        trial[~ok] = x[idx][~ok]
        rt = residual(trial, idx)
        ct = np.sum(rt * rt, axis=-1)
        better = ok & np.isfinite(ct) & (ct < cost[idx])
        acc = idx[better]
        x[acc], r[acc], cost[acc] = trial[better], rt[better], ct[better]
        lam[acc] = np.maximum(lam[acc] / 5, 1e-12)
        rej = idx[~better]
        lam[rej] *= 8
        done[acc] = _small(r[acc], gtol)
        alive = ~done & (lam < 1e10)
    return x, done


def _small(r, gtol):
    return np.all(np.isfinite(r), axis=-1) & (np.linalg.norm(r, axis=-1) <= gtol)


def dedupe(points, tol):
    """Representatives of clusters of points closer than ``tol`` (first of each cluster)."""
    if len(points) == 0:
        return points
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    keep = np.ones(len(points), dtype=bool)
    for i, j in sorted(tree.query_pairs(tol)):
        if keep[i] and keep[j]:
            keep[j] = False
    return points[keep]


def normal_basis(t):
    """An orthonormal basis (n, n - m) of the complement of the columns of t (n, m)."""
    n = t.shape[0]
    if t.shape[1] == 0:
        return np.eye(n)
    q, _ = np.linalg.qr(np.concatenate([t, np.eye(n)], axis=1))
    return q[:, t.shape[1] : n]


def normal_eigenvalues(H, tangent):
    """Eigenvalues of the Hessian restricted to the normal space of the tangent columns."""
    N = normal_basis(tangent)
    return np.linalg.eigvalsh(N.T @ H @ N)


def kind_from_eigenvalues(mu, scale):
    """'local_min' | 'local_max' | 'saddle' | None (a null normal eigenvalue: higher order)."""
    tol = NULL_TOL * max(scale, 1e-300)
    if mu.size == 0:
        return None
    if np.any(np.abs(mu) <= tol):
        if np.any(mu > tol) and np.any(mu < -tol):
            return "saddle"  # already indefinite in the normal directions
        return None
    if np.all(mu > 0):
        return "local_min"
    if np.all(mu < 0):
        return "local_max"
    return "saddle"


def sphere_directions(n, count=None, seed=0):
    if n == 1:
        return np.array([[1.0], [-1.0]])
    if n == 2:
        ang = np.linspace(0, 2 * np.pi, count or 96, endpoint=False)
        return np.stack([np.cos(ang), np.sin(ang)], axis=-1)
    u = np.random.default_rng(seed).normal(size=(count or 200 * n, n))
    return u / np.linalg.norm(u, axis=-1, keepdims=True)


def sphere_kind(delta, x0, radii, *, tol):
    """Higher-order kind at x0 from the sign of delta(x) (= L(x) - L(x0), or a proxy) on spheres.

    Both signs on every sphere: 'saddle'; only >= 0: 'local_min'; only <= 0: 'local_max';
    ~0 everywhere or inconsistent across radii: 'degenerate'.
    """
    dirs = sphere_directions(x0.size)
    verdicts = set()
    for r in radii:
        vals = delta(x0 + r * dirs)
        pos, neg = np.any(vals > tol), np.any(vals < -tol)
        verdicts.add("saddle" if pos and neg else "local_min" if pos else "local_max" if neg else "degenerate")
    return verdicts.pop() if len(verdicts) == 1 else "degenerate"


# ------------------------------------------------------------------------------ the finder
class _Finder:
    def __init__(self, obj, lo, hi, *, reference, gtol):
        self.obj, self.lo, self.hi = obj, lo, hi
        self.n = lo.size
        self.diag = float(np.linalg.norm(hi - lo))
        self.optimal = reference.optimal_loss  # None: no point is called global
        self.loss_tol = reference.loss_tol
        self.gtol = gtol
        self.h = self.diag / 300  # continuation step
        self.eig_scale = 1.0

    def inside(self, x, pad=1e-9):
        return np.all((x >= self.lo - pad * self.diag) & (x <= self.hi + pad * self.diag), axis=-1)

    # dimension of the critical set through each root
    def local_dimension(self, roots):
        """(dimension, tangent basis (n, d)) of the critical set through each root: the Hessian's null
        directions along which a point a step away projects back onto grad L = 0 (all roots at once: the
        projection treats each row on its own, so batching changes no number)."""
        if len(roots) == 0:
            return np.zeros(0, dtype=int), []
        lam, V = np.linalg.eigh(self.obj.hessian(roots))
        rows, cols = np.nonzero(np.abs(lam) <= NULL_TOL * self.eig_scale)
        vecs = V[rows, :, cols]  # null direction cols[j] of root rows[j], in the order of its eigenvalues
        tangent = np.zeros(len(rows), dtype=bool)
        if len(rows):
            h = self.h / 4
            anchors = roots[rows] + h * vecs
            proj, ok = project(self.obj, anchors, planes=(vecs, anchors), gtol=self.gtol)
            tangent = ok & (np.linalg.norm(proj - anchors, axis=-1) <= 0.1 * h)
        dims = np.bincount(rows[tangent], minlength=len(roots))
        tangents = [vecs[tangent & (rows == i)].T if dims[i] else np.zeros((self.n, 0)) for i in range(len(roots))]
        return dims, tangents

    def trace(self, x0, t0):
        """Ordered samples of the 1-D critical set through x0 (both directions)."""
        branches = []
        max_steps = int(4 * self.diag / self.h) + 10
        l0 = float(self.obj.loss(x0))
        for sgn in (1.0, -1.0):
            pts, x, t = [], x0, sgn * t0
            closed = False
            for _ in range(max_steps):
                a = x + self.h * t
                y, ok = project(self.obj, a[None], planes=(t[None], a[None]), gtol=self.gtol)
                y = y[0]
                if not ok[0] or not self.inside(y[None])[0]:
                    break
                # L is constant on a connected critical set: a change of level means the corrector
                # jumped to another set (closer than a step, e.g. near a nearly degenerate chain's line)
                if abs(float(self.obj.loss(y)) - l0) > self.loss_tol:
                    break
                step = y - x
                if np.linalg.norm(step) < 1e-3 * self.h:
                    break
                t = step / np.linalg.norm(step)
                pts.append(y)
                x = y
                if len(pts) > 3 and np.linalg.norm(y - x0) < 0.75 * self.h:
                    closed = True
                    break
            branches.append(pts)
            if closed:
                return np.array([x0, *pts])
        back = branches[1][::-1]
        return np.array([*back, x0, *branches[0]])

    def classify(self, x, loss, tangent):
        if self.optimal is not None and loss - self.optimal <= self.loss_tol:
            return "global_min"
        mu = normal_eigenvalues(self.obj.hessian(x), tangent)
        return kind_from_eigenvalues(mu, self.eig_scale)

    def higher_order(self, x):
        l0 = float(self.obj.loss(x))
        tol = 64 * np.finfo(float).eps * max(1.0, abs(l0))
        radii = (1e-2 * self.diag / 10, 3e-3 * self.diag / 10)
        return sphere_kind(lambda z: self.obj.loss(z) - l0, x, radii, tol=tol)

    def curve_pieces(self, curve, loss):
        """Split a traced curve where the normal classification changes; split points found by bisection."""
        n = len(curve)
        tang = np.gradient(curve, axis=0) if n > 1 else np.zeros_like(curve)
        tang /= np.maximum(np.linalg.norm(tang, axis=-1, keepdims=True), 1e-300)
        kinds, dets = [], []
        Hs = self.obj.hessian(curve)
        for x, t, H in zip(curve, tang, Hs):
            mu = normal_eigenvalues(H, t[:, None])
            dets.append(float(np.prod(mu)))
            kinds.append(self.classify(x, loss, t[:, None]))
        pieces, splits = [], []
        run_kind, run = None, []
        last_good = None
        for i, k in enumerate(kinds):
            if k is None:
                continue
            if run_kind is None or k == run_kind:
                run.append(i)
            else:
                pieces.append((run_kind, run))
                splits.append(self.bisect_split(curve[last_good], curve[i], dets[last_good]))
                run = [i]
            run_kind, last_good = k, i
        if run_kind is not None:
            pieces.append((run_kind, run))
        # null points with no sign change around them: classify from higher order
        out = [NumericPiece(k, 1, loss, curve[idx]) for k, idx in pieces]
        for x in splits:
            out.append(NumericPiece(self.higher_order(x), 0, float(self.obj.loss(x)), x[None], split=True))
        if not pieces:  # null normal curvature all along: classify from higher order at a few samples
            probes = {self.higher_order(curve[i]) for i in np.linspace(0, n - 1, min(n, 5)).round().astype(int)}
            kind = probes.pop() if len(probes) == 1 else "degenerate"
            out.append(NumericPiece(kind, 1, loss, curve))
        return out

    def bisect_split(self, a, b, da):
        """The point between a and b on the curve where det(normal Hessian) changes sign."""
        for _ in range(60):
            if np.linalg.norm(b - a) < 1e-12 * self.diag:
                break
            m = 0.5 * (a + b)
            chord = (b - a) / np.linalg.norm(b - a)
            y, ok = project(self.obj, m[None], planes=(chord[None], m[None]), gtol=self.gtol)
            m = y[0] if ok[0] else m
            dm = float(np.prod(normal_eigenvalues(self.obj.hessian(m), chord[:, None])))
            if np.sign(dm) == np.sign(da) and dm != 0:
                a, da = m, dm
            else:
                b = m
        return 0.5 * (a + b)

    def pieces(self, roots, *, spacing):
        """Group the roots into critical sets and classify them (see the module docstring, steps 2-4)."""
        from scipy.spatial import cKDTree

        obj, n = self.obj, self.n
        Hs = obj.hessian(roots)
        self.eig_scale = max(1.0, float(np.max(np.abs(np.linalg.eigvalsh(Hs)))))
        losses = obj.loss(roots)
        dims, tangents = self.local_dimension(roots)
        assigned = np.zeros(len(roots), dtype=bool)
        gnorm = np.linalg.norm(obj.gradient(roots), axis=-1)
        order = np.lexsort((gnorm, -dims))  # sets of higher dimension first, best roots first
        pieces, notes = [], []
        for i in order:
            if assigned[i]:
                continue
            same = np.abs(losses - losses[i]) <= max(self.loss_tol, 1e-12)
            if dims[i] == 0:
                # near a degenerate point grad L vanishes to higher order and the roots scatter
                # over ~gtol^(1/3): absorb the isolated roots of the same level close to this one.
                close = np.linalg.norm(roots - roots[i], axis=-1) <= ISOLATED_RADIUS * self.diag
                assigned |= close & same & (dims == 0)
                assigned[i] = True
                kind = self.classify(roots[i], losses[i], np.zeros((n, 0)))
                if kind is None:
                    kind = self.higher_order(roots[i])
                pieces.append(NumericPiece(kind, 0, float(losses[i]), roots[i][None]))
            elif dims[i] == 1:
                curve = self.trace(roots[i], tangents[i][:, 0])
                near = cKDTree(curve).query(roots, distance_upper_bound=1.5 * self.h)[0] < np.inf
                assigned |= near & same
                assigned[i] = True
                pieces.extend(self.curve_pieces(curve, float(losses[i])))
            else:
                members = np.flatnonzero(same & (dims == dims[i]) & ~assigned)
                members = self.cluster_of(roots, members, i, spacing)
                assigned[members] = True
                pieces.extend(self.sample_pieces(roots, losses, tangents, members, int(dims[i]), float(losses[i])))
                notes.append(
                    f"a {dims[i]}-dimensional critical set: classified per sample; where its normal curvature "
                    "changes sign is located only to sample resolution"
                )
        return pieces, notes

    @staticmethod
    def cluster_of(roots, members, i, spacing):
        """The members in root i's cluster (single linkage at 3 x the spacing of the starts)."""
        if members.size <= 1:
            return members
        from scipy.cluster.hierarchy import fcluster, linkage

        labels = fcluster(linkage(roots[members], "single"), 3 * spacing, "distance")
        return members[labels == labels[list(members).index(i)]]

    def sample_pieces(self, roots, losses, tangents, members, dim, loss):
        """One piece per kind among the samples of a set of dimension >= 2."""
        kinds = {}
        for j in members:
            k = self.classify(roots[j], losses[j], tangents[j]) or "degenerate"
            kinds.setdefault(k, []).append(j)
        return [NumericPiece(k, dim, loss, roots[idx]) for k, idx in kinds.items()]



def find_numeric(system, lo, hi, *, reference=None, starts=1024, seed=0, gtol=1e-13, sets=True) -> NumericCritical:
    """Multi-start critical sets of ``system`` in the box [lo, hi] (``sets=False``: the roots only).

    ``system``: any object with vectorised ``loss``, ``gradient`` and ``hessian`` over (k, n) (a
    :class:`flowlab.engine.system.System`). ``reference`` (default ``system.reference()``): a
    :class:`flowlab.engine.system.Reference`; a set whose loss is within ``reference.loss_tol`` of
    ``reference.optimal_loss`` is a ``global_min`` (none is when the optimal loss is unknown), and two
    roots are on one level when their losses differ by at most ``loss_tol``.
    """
    from scipy.stats import qmc

    if reference is None:
        reference = system.reference()
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    if (lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0 or not np.all(np.isfinite(lo) & np.isfinite(hi))
            or not np.all(lo <= hi) or not np.any(lo < hi)):
        raise FlowlabInputError(f"the box must be finite bounds lo <= hi (not all equal) of one length, got lo={lo}, hi={hi}")
    n = lo.size
    f = _Finder(system, lo, hi, reference=reference, gtol=gtol)
    m = max(int(np.ceil(np.log2(max(starts, 2)))), 1)
    x0 = qmc.scale(qmc.Sobol(d=n, scramble=True, seed=seed).random_base2(m), lo, hi)
    roots, ok = project(system, x0, gtol=gtol)
    good = ok & f.inside(roots)
    roots = dedupe(roots[good], 1e-7 * f.diag)
    counts = (2**m, int(good.sum()))
    if not sets:
        return NumericCritical(roots, (), *counts, (), status="ok" if len(roots) else "none",
                               message=f"{len(roots)} root(s) from {counts[0]} starts")
    if len(roots) == 0:
        msg = "no critical point found in the box"
        return NumericCritical(roots, (), *counts, (msg,), status="none", message=msg)
    pieces, notes = f.pieces(roots, spacing=f.diag / (2**m) ** (1 / n))
    return NumericCritical(roots, tuple(pieces), *counts, tuple(notes),
                           message=f"{len(pieces)} critical piece(s) from {len(roots)} root(s) of {counts[0]} starts")
