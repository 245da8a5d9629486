"""What the figures of a Markov system draw, computed here so that :mod:`flowlab.plots` runs no analysis.

Every result is a small frozen, picklable dataclass (arrays and numbers, no closures) with
``status``, ``message`` and ``as_dict()``:

- :class:`CriticalOverlay` (:func:`overlay`): the critical sets of a CriticalResult ready to draw,
  the samples of each 1-D set ordered into polylines that never bridge two branches;
- :class:`Landscape` (:func:`landscape`): a 2-parameter plane: grid axes, the conserved energy E
  (or the loss where the model has no E), the normalised direction field -grad L/|grad L|, the
  critical sets and the separatrix (the branches of the saddle's level of E along which the flow
  runs into the saddle);
- :class:`Slice` (:func:`basin_landscape` of a sliced BasinGrid): the full model's critical sets
  where they meet a 2-D slice of a 3-parameter model;
- :class:`Flows3D` (:func:`flows_3d`): gradient flows of a 3-parameter model with its critical sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer

from .chain import MarkovChain
from .defaults import PLOT_LIMITS
from .models import Model

#: A point of a full critical set drawn on a slice must have |grad L| (full model) at most this.
SLICE_GRAD_TOL = 1e-6
#: Points per axis of the direction field: streamlines, arrows.
FIELD_POINTS = {"stream": 60, "quiver": 21}
#: The separatrix drawn on a basin map is sampled on at least this many points per axis.
BASIN_SEPARATRIX_POINTS = 240


def _jsonable(a):
    """A float array as nested lists, NaN/inf as None."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, None).tolist()


# ------------------------------------------------------------------------ critical sets
@dataclass(frozen=True)
class OverlaySet:
    """One critical set as drawn: its samples (k, n) and, for a 1-D set, the polylines through them.

    ``unigram``: the set's loss is the unigram loss of a non-degenerate chain (named in the legend).
    """

    kind: str
    dimension: int
    loss: float
    unigram: bool
    points: np.ndarray
    lines: tuple[np.ndarray, ...] = ()
    #: A 2-D set of a 3-parameter model: its smooth pieces (:class:`SurfacePiece`), one per branch.
    surfaces: tuple = ()

    def as_dict(self) -> dict:
        return {"kind": self.kind, "dimension": self.dimension, "loss": self.loss, "unigram": self.unigram,
                "points": _jsonable(self.points), "lines": [_jsonable(line) for line in self.lines],
                "surfaces": [piece.as_dict() for piece in self.surfaces]}


@dataclass(frozen=True)
class SurfacePiece:
    """One smooth piece of a 2-D critical set in 3-D, on a grid over the two coordinates other than ``axis``.

    ``shape`` "graph": ``points`` (len(v), len(u), 3), in parameter order, of the set over the grid
    ``u`` x ``v`` of the two coordinates other than ``axis`` (NaN where this branch has no point in
    the box; a node next to the box's face is moved along its grid line onto the set's crossing of
    that face, so the surface ends on the face, not in a staircase); ``branch`` says which branch
    (the signs of the coordinates that are constant on it). ``shape`` "region":
    the piece of the plane {coordinate ``axis`` = ``offset``} where ``field`` > 0 (the set's normal
    curvature, signed so that it is positive on the set: its zero line is the set's boundary).
    """

    shape: str
    axis: int
    u: np.ndarray
    v: np.ndarray
    points: np.ndarray | None = None
    offset: float = 0.0
    field: np.ndarray | None = None
    branch: str = ""

    def as_dict(self) -> dict:
        return {"shape": self.shape, "axis": self.axis, "u": _jsonable(self.u), "v": _jsonable(self.v),
                "points": None if self.points is None else _jsonable(self.points), "offset": self.offset,
                "field": None if self.field is None else _jsonable(self.field), "branch": self.branch}


@dataclass(frozen=True)
class CriticalOverlay:
    """The critical sets of one CriticalResult, ready to draw (parameter order ``params``)."""

    params: tuple[str, ...]
    chain: MarkovChain
    box: dict
    sets: tuple[OverlaySet, ...]
    status: str = "ok"
    message: str = ""

    def as_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "params": list(self.params),
                "chain": self.chain.as_dict(), "box": {k: list(v) for k, v in self.box.items()},
                "sets": [s.as_dict() for s in self.sets]}


def _numeric_model_of(crit):
    """The NumericModel of a CriticalResult's model when it has the result's parameters, else None."""
    from .numeric import NumericModel

    model = crit.model
    return NumericModel(model, crit.chain) if tuple(model.params) == tuple(crit.params) else None


def overlay(crit) -> CriticalOverlay:
    """The sets of a CriticalResult with each 1-D set's samples chained into polylines (:func:`polylines`).

    A chord between two samples is dropped when the loss at its midpoint is farther from the set's
    loss than a quarter of the distance to the nearest other critical value (it would bridge two
    branches through a region off the set).
    """
    chain = crit.chain
    nm = _numeric_model_of(crit)
    levels = sorted({float(s.loss) for s in crit.sets} | {chain.entropy_rate, chain.unigram_loss})
    sets = []
    for s in crit.sets:
        pts = np.asarray(s.points, dtype=np.float64)
        unigram = abs(s.loss - chain.unigram_loss) <= 1e-9 * max(1.0, abs(chain.unigram_loss))
        lines, pieces = (), ()
        if s.dimension == 1 and len(pts) > 1:
            others = [abs(v - s.loss) for v in levels if abs(v - s.loss) > 1e-12 * max(1.0, abs(s.loss))]
            tol = 0.25 * min(others) if others and nm is not None else None
            lines = tuple(polylines(pts, nm=nm, loss=s.loss, tol=tol))
            if s.kind == "global_min" and nm is not None and len(crit.params) == 2:
                lines = tuple(_to_box_edge(line, nm, chain, crit.box) for line in lines)
        if s.dimension == 2 and len(crit.params) == 3 and nm is not None and len(pts):
            pieces = surface_pieces(s, nm, chain, crit.box)
        sets.append(OverlaySet(kind=s.kind, dimension=int(s.dimension), loss=float(s.loss),
                               unigram=bool(unigram and not chain.degenerate), points=pts, lines=lines,
                               surfaces=pieces))
    return CriticalOverlay(params=tuple(crit.params), chain=chain, box=dict(crit.box), sets=tuple(sets),
                           message=f"{len(sets)} critical sets of {crit.model.name!r} ({crit.method})")


#: A polyline of the global-minimum curve is carried on to the box's edge when its end lies within
#: this many sample spacings of it (the samples of a set stop short of the edge).
EDGE_SPACINGS = 6.0
#: Grid points per axis of the surfaces of a 2-D critical set in 3-D, and of the search along the height.
SURFACE_POINTS = 81
SURFACE_HEIGHT_POINTS = 161


def _gap_residual(nm, chain):
    """theta -> D(theta) - D*, the function whose zero set is the global-minimum set {D = D*}."""
    d_star = chain.optimal_gap

    def f(theta):
        with np.errstate(all="ignore"):
            return np.asarray(nm.gap(theta), dtype=np.float64) - d_star

    return f


def _to_box_edge(line, nm, chain, box):
    """``line`` (a polyline of {D = D*} in a plane) carried on to the box's edge at both ends.

    An end within :data:`EDGE_SPACINGS` spacings of an edge is extrapolated along its last chord to
    the edge, then put back on {D = D*} by Newton's method along the edge (the other coordinate
    moves); the new point is kept only when it is on the set (|D - D*| <= 1e-10 (1 + |D*|)) and
    close to the extrapolation.
    """
    if len(line) < 3:
        return line
    f = _gap_residual(nm, chain)
    lo = np.array([box[p][0] for p in nm.params])
    hi = np.array([box[p][1] for p in nm.params])
    spacing = float(np.median(np.linalg.norm(np.diff(line, axis=0), axis=1)))
    out = [line]
    for end, prev, at_start in ((line[-1], line[-2], False), (line[0], line[1], True)):
        d = end - prev
        if not np.linalg.norm(d) > 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.where(d > 0, (hi - end) / d, np.where(d < 0, (lo - end) / d, np.inf))
        i = int(np.argmin(steps))
        reach = float(steps[i] * np.linalg.norm(d))
        if not 1e-12 < reach <= EDGE_SPACINGS * spacing:
            continue
        x = end + steps[i] * d
        x[i] = lo[i] if d[i] < 0 else hi[i]
        j = 1 - i
        for _ in range(30):  # Newton along the edge: only coordinate j moves
            h = 1e-6 * max(1.0, abs(x[j]))
            xp, xm = x.copy(), x.copy()
            xp[j] += h
            xm[j] -= h
            slope = (f(xp) - f(xm)) / (2 * h)
            if not (np.isfinite(slope) and slope != 0):
                break
            x[j] -= f(x) / slope
        if abs(f(x)) <= 1e-10 * (1 + abs(chain.optimal_gap)) and np.linalg.norm(x - end) <= 2 * reach + spacing \
                and lo[j] <= x[j] <= hi[j]:
            out = [x[None, :], *out] if at_start else [*out, x[None, :]]
    return np.concatenate(out)


def _roots_along(f, u, v, h, axis):
    """Roots of f along the coordinate ``axis`` (samples ``h``) for every (v, u) grid point: (roots, valid).

    ``roots`` has shape (len(v), len(u), k), sorted, NaN-padded; a root is bracketed by a sign change
    between samples and refined by 60 bisections.
    """
    V, U, Hh = np.meshgrid(v, u, h, indexing="ij")
    others = [i for i in range(3) if i != axis]
    theta = np.empty(V.shape + (3,))
    theta[..., others[0]], theta[..., others[1]], theta[..., axis] = U, V, Hh
    F = f(theta)
    change = np.isfinite(F[..., :-1]) & np.isfinite(F[..., 1:]) & (np.sign(F[..., :-1]) * np.sign(F[..., 1:]) < 0)
    k = int(change.sum(axis=-1).max(initial=0))
    roots = np.full(V.shape[:2] + (k,), np.nan)
    if k == 0:
        return roots
    jv, iu, ih = np.nonzero(change)
    rank = np.cumsum(change, axis=-1)[jv, iu, ih] - 1
    roots[jv, iu, rank] = _bisect(f, theta[jv, iu, ih], theta[jv, iu, ih + 1], F[jv, iu, ih], 60)[:, axis]
    return roots


def _bisect(f, x0, x1, f0, steps):
    """Zeros of f on the segments x0[i] -> x1[i] (rows of points; f changes sign along each), by bisection."""
    x0, x1, f0 = np.array(x0, float), np.array(x1, float), np.array(f0, float)
    for _ in range(steps):
        mid = 0.5 * (x0 + x1)
        fm = f(mid)
        left = np.sign(fm) == np.sign(f0)
        x0, x1, f0 = np.where(left[:, None], mid, x0), np.where(left[:, None], x1, mid), np.where(left, fm, f0)
    return 0.5 * (x0 + x1)


def _graph_pieces(s, nm, chain, box):
    """{D = D*} as graphs over two coordinates, one piece per branch.

    The height axis is the one along which the set is a graph over the largest area (counted on a
    coarse grid); on the fine grid the roots on each side of 0 of the height, ordered away from 0,
    are split into connected components: a branch is one component (its text names the signs of
    the coordinates that are constant on it).
    """
    from scipy import ndimage

    f = _gap_residual(nm, chain)
    names = nm.params

    def grids(axis, m):
        others = [i for i in range(3) if i != axis]
        return (np.linspace(*box[names[others[0]]], m), np.linspace(*box[names[others[1]]], m),
                np.linspace(*box[names[axis]], SURFACE_HEIGHT_POINTS), others)

    counts = [int(np.isfinite(_roots_along(f, *grids(a, 21)[:3], a)).sum()) for a in range(3)]
    axis = int(np.argmax(counts))
    u, v, h, others = grids(axis, SURFACE_POINTS)
    roots = _roots_along(f, u, v, h, axis)
    V, U = np.meshgrid(v, u, indexing="ij")
    pieces = []
    for sign in (-1.0, 1.0):
        side = np.where(np.sign(roots) == sign, roots, np.nan)
        side = np.sort(np.abs(side), axis=-1) * sign  # NaN last: order away from 0 on this side
        for r in range(side.shape[-1]):
            labels, n = ndimage.label(np.isfinite(side[..., r]))
            for k in range(1, n + 1):
                own = labels == k
                if own.sum() < 4:
                    continue
                pts = np.full(V.shape + (3,), np.nan)
                pts[own, axis], pts[own, others[0]], pts[own, others[1]] = side[..., r][own], U[own], V[own]
                cols = pts[own]
                branch = ", ".join(f"{names[i]} {'<' if np.all(cols[:, i] < 0) else '>'} 0" for i in range(3)
                                   if np.all(cols[:, i] < 0) or np.all(cols[:, i] > 0))
                _snap_to_faces(pts, own, f, axis, (h[0], h[-1]), {others[0]: U, others[1]: V})
                pieces.append(SurfacePiece(shape="graph", axis=axis, u=u, v=v, points=pts, branch=branch))
    return tuple(pieces)


def _snap_to_faces(pts, own, f, axis, faces, grid):
    """Give the absent nodes next to a piece (4-neighbours) the point where the piece crosses a face of
    the height range ``faces``, found by bisection along the grid line from the neighbouring node (in
    place). ``grid``: {coordinate: its 2-D grid array} of the two coordinates other than ``axis``.
    Nodes where f does not change sign along that line at either face stay absent."""
    m0, m1 = own.shape
    for dj, di in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        src = np.zeros_like(own)  # src[j, i]: the node (j - dj, i - di) is on the piece
        src[max(dj, 0):m0 + min(dj, 0), max(di, 0):m1 + min(di, 0)] = own[max(-dj, 0):m0 + min(-dj, 0),
                                                                             max(-di, 0):m1 + min(-di, 0)]
        jj, ii = np.nonzero(src & ~own & ~np.isfinite(pts[..., 0]))
        if not len(jj):
            continue
        a = pts[jj - dj, ii - di].copy()  # the neighbour on the piece
        b = a.copy()
        for k, g in grid.items():
            b[:, k] = g[jj, ii]
        for face in faces:
            x0, x1 = a.copy(), b.copy()
            x0[:, axis] = x1[:, axis] = face
            f0, f1 = f(x0), f(x1)
            ok = np.isfinite(f0) & np.isfinite(f1) & (np.sign(f0) * np.sign(f1) < 0) & ~np.isfinite(pts[jj, ii, 0])
            if not np.any(ok):
                continue
            pts[jj[ok], ii[ok]] = _bisect(f, x0[ok], x1[ok], f0[ok], 50)


def _region_piece(s, nm, box, axis, offset):
    """A planar set {coordinate ``axis`` = ``offset``} as the region of the plane where its normal
    curvature (the trace of the Hessian) has the set's sign; None when that sign does not reproduce
    the set's own membership test on the grid (then no region is drawn from it)."""
    names = nm.params
    others = [i for i in range(3) if i != axis]
    u = np.linspace(*box[names[others[0]]], SURFACE_POINTS)
    v = np.linspace(*box[names[others[1]]], SURFACE_POINTS)
    V, U = np.meshgrid(v, u, indexing="ij")
    theta = np.empty(V.shape + (3,))
    theta[..., others[0]], theta[..., others[1]], theta[..., axis] = U, V, offset
    with np.errstate(all="ignore"):
        trace = np.trace(np.asarray(nm.hessian(theta), float), axis1=-2, axis2=-1)
    sign = {"local_min": 1.0, "local_max": -1.0}.get(s.kind)
    if sign is None or s.member is None:
        return None
    field = sign * trace
    inside = np.asarray(s.member(theta.reshape(-1, 3)), bool).reshape(V.shape)
    decided = np.abs(field) > 1e-9 * np.nanmax(np.abs(field), initial=1.0)
    if not np.any(inside) or np.any((field > 0)[decided] != inside[decided]):
        return None
    return SurfacePiece(shape="region", axis=axis, u=u, v=v, offset=float(offset), field=field,
                        branch=f"{names[axis]} = {offset:g}")


def surface_pieces(s, nm, chain, box) -> tuple:
    """The smooth pieces of a 2-D critical set ``s`` of a 3-parameter model (:class:`SurfacePiece`).

    The global-minimum set {D = D*}: each branch a graph (:func:`_graph_pieces`); a set in a
    coordinate plane (its samples share one coordinate): the region of the plane where the normal
    curvature has the set's sign (:func:`_region_piece`). Other sets: none (drawn as samples).
    """
    pts = np.asarray(s.points, float)
    if s.kind == "global_min" and nm.gap is not None:
        return _graph_pieces(s, nm, chain, box)
    spread = pts.max(axis=0) - pts.min(axis=0)
    flat = [i for i in range(3) if spread[i] <= 1e-12 * (1 + abs(pts[0, i]))]
    if len(flat) == 1:
        piece = _region_piece(s, nm, box, flat[0], float(pts[0, flat[0]]))
        return () if piece is None else (piece,)
    return ()


def polylines(points, *, nm=None, loss=None, tol=None, factor=5.0, neighbours=8):
    """Samples of a 1-D set (in no particular order) as polylines.

    Candidate segments join each sample to its nearest neighbours, no longer than ``factor``
    times the median nearest-neighbour spacing; when ``nm`` is given, a segment whose midpoint
    has a loss farther than ``tol`` from the set's ``loss`` is dropped (it would bridge two
    branches through a region off the set: a critical set has a constant loss, a chord between
    neighbouring samples deviates from it only to second order). The minimum spanning forest of
    what remains is cut into paths, longest first.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    k = len(pts)
    if k < 2:
        return [pts]
    d = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, : min(neighbours, k - 1)]
    spacing = float(np.median(d[np.arange(k), nearest[:, 0]]))
    rows = np.repeat(np.arange(k), nearest.shape[1])
    cols = nearest.ravel()
    keep = (rows < cols) | ~np.isin(rows * k + cols, cols * k + rows)  # each pair once
    rows, cols = rows[keep], cols[keep]
    length = d[rows, cols]
    ok = length <= factor * spacing
    if nm is not None and loss is not None and tol is not None and np.any(ok):
        mid = 0.5 * (pts[rows[ok]] + pts[cols[ok]])
        with np.errstate(all="ignore"):
            dev = np.abs(nm.loss(mid) - loss)
        ok[np.flatnonzero(ok)[~(dev <= tol)]] = False
    rows, cols, length = rows[ok], cols[ok], np.maximum(length[ok], 1e-300)
    forest = minimum_spanning_tree(coo_matrix((length, (rows, cols)), shape=(k, k))).tocoo()
    adj: dict[int, dict[int, float]] = {i: {} for i in range(k)}
    for a, b, w in zip(forest.row.tolist(), forest.col.tolist(), forest.data.tolist()):
        adj[a][b] = adj[b][a] = w
    out, used = [], np.zeros(k, bool)
    while True:
        start = next((i for i in range(k) if adj[i]), None)
        if start is None:
            break
        path = _longest_path(adj, start)
        for a, b in zip(path[:-1], path[1:]):
            del adj[a][b], adj[b][a]
        used[path] = True
        out.append(pts[path])
    out.extend(pts[[i]] for i in np.flatnonzero(~used))
    return out


def _farthest(adj, start):
    dist, parent, stack = {start: 0.0}, {start: None}, [start]
    while stack:
        u = stack.pop()
        for v, w in adj[u].items():
            if v not in dist:
                dist[v], parent[v] = dist[u] + w, u
                stack.append(v)
    end = max(dist, key=dist.get)
    return end, parent


def _longest_path(adj, start):
    """The longest path of the tree containing ``start`` (two sweeps)."""
    a, _ = _farthest(adj, start)
    b, parent = _farthest(adj, a)
    path = [b]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path


# ------------------------------------------------------------------------------ landscape
@dataclass(frozen=True)
class DirectionField:
    """-grad L/|grad L| on an m x m grid (rows along y); ``still`` where grad L vanishes (u = v = 0 there)."""

    kind: str  # "stream" or "quiver"
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    still: np.ndarray

    def as_dict(self) -> dict:
        return {"kind": self.kind, "x": _jsonable(self.x), "y": _jsonable(self.y), "u": _jsonable(self.u),
                "v": _jsonable(self.v), "still": np.asarray(self.still, bool).tolist()}


@dataclass(frozen=True)
class SeparatrixLevel:
    """The level E of isolated saddles, the saddles (k, 2) and the stable branches through them (polylines)."""

    level: float
    saddles: np.ndarray
    branches: tuple[np.ndarray, ...]

    def as_dict(self) -> dict:
        return {"level": self.level, "saddles": _jsonable(self.saddles), "branches": [_jsonable(b) for b in self.branches]}


@dataclass(frozen=True)
class Landscape:
    """A 2-parameter plane of a Markov system, everything an energy landscape or basin map draws.

    ``values[j, i]``: E (``quantity`` "E") or the loss L (``quantity`` "L", a model without E) at
    (x[i], y[j]); NaN where undefined (E on w = 0, whose grid line is placed at 0 exactly).
    ``direction``: the normalised flow field (None when not asked for). ``overlay``: the critical
    sets. ``separatrix``: one entry per saddle level of E (empty without E or isolated saddles).
    """

    model: Model
    params: tuple[str, str]
    chain: MarkovChain
    box: dict
    x: np.ndarray
    y: np.ndarray
    values: np.ndarray
    quantity: str
    direction: DirectionField | None
    overlay: CriticalOverlay | None
    separatrix: tuple[SeparatrixLevel, ...] = ()
    status: str = "ok"
    message: str = ""

    def as_dict(self) -> dict:
        return {
            "status": self.status, "message": self.message, "system": "markov", "model": self.model.name,
            "chain": self.chain.as_dict(), "params": list(self.params), "box": {k: list(v) for k, v in self.box.items()},
            "x": _jsonable(self.x), "y": _jsonable(self.y), "quantity": self.quantity, "values": _jsonable(self.values),
            "direction": None if self.direction is None else self.direction.as_dict(),
            "critical": None if self.overlay is None else self.overlay.as_dict(),
            "separatrix": [s.as_dict() for s in self.separatrix],
        }


def _singular_axes(nm, box, name="E"):
    """Coordinates whose zero hyperplane is where the invariant ``name`` is undefined (w = 0 for E)."""
    out = []
    if name not in nm.invariant_names:
        return out
    rng = np.random.default_rng(0)
    lo = np.array([box[p][0] for p in nm.params])
    hi = np.array([box[p][1] for p in nm.params])
    for i, p in enumerate(nm.params):
        if not box[p][0] < 0 < box[p][1]:
            continue
        probe = lo + (hi - lo) * rng.random((5, len(lo)))
        probe[:, i] = 0.0
        if np.all(~np.isfinite(nm.invariants(probe)[name])):
            out.append(i)
    return out


def _plane_grid(nm, box, resolution):
    """Axis arrays of a 2-D parameter plane; a coordinate where E is undefined at 0 gets 0 exactly."""
    axes = [np.linspace(*box[p], int(resolution)) for p in nm.params]
    for i in _singular_axes(nm, box):
        a = axes[i]
        a[np.argmin(np.abs(a))] = 0.0  # the undefined line is masked, not bridged by contours
    return axes


def _saddle_levels(nm, crit):
    """[(E level, saddle points)] of the isolated saddles (finite E only)."""
    if crit is None or "E" not in nm.invariant_names:
        return []
    pts = [np.asarray(s.points[0], float) for s in crit.sets if s.kind == "saddle" and s.dimension == 0 and len(s.points)]
    out: dict[float, list] = {}
    for x in pts:
        val = float(nm.invariants(x)["E"])
        if np.isfinite(val):
            key = next((k for k in out if abs(k - val) <= 1e-12 * max(1.0, abs(val))), val)
            out.setdefault(key, []).append(x)
    return sorted(out.items())


def _level_pieces(x, y, E, level):
    """The pieces of the contour {E = level} on the grid, as matplotlib's ``contour`` finds them.

    The same contour generator and settings as matplotlib (contourpy, algorithm mpl2014, corner
    mask); a closed loop's last vertex is replaced by its first.
    """
    import contourpy

    X, Y = np.meshgrid(x, y)
    gen = contourpy.contour_generator(X, Y, np.ma.masked_invalid(E), name="mpl2014", corner_mask=True,
                                      line_type=contourpy.LineType.SeparateCode, chunk_size=0)
    verts, codes = gen.create_contour(level)
    closepoly = 79  # matplotlib.path.Path.CLOSEPOLY
    return [np.where((c == closepoly)[:, None], v[:1], v) for v, c in zip(verts, codes) if len(v)]


def _separatrix(nm, crit, x, y, E):
    """The branches of {E = E(saddle)} along which the flow runs INTO a saddle, one entry per level.

    A saddle's level set of the conserved E is an X: two branches are its stable manifold (the
    boundary between the basins), the other two leave it towards a minimum and bound nothing;
    other components of the same level (e.g. in w > 0 for model ew) bound nothing either.
    """
    cell = max((x[-1] - x[0]) / (len(x) - 1), (y[-1] - y[0]) / (len(y) - 1))
    out = []
    for level, saddles in _saddle_levels(nm, crit):
        kept = []
        for piece in _level_pieces(x, y, E, level):
            for s in saddles:
                kept.extend(_stable_branches(nm, piece, np.asarray(s, float), cell))
        out.append(SeparatrixLevel(level=float(level), saddles=np.array(saddles, dtype=np.float64),
                                   branches=tuple(kept)))
    return tuple(out)


def _stable_branches(nm, verts, saddle, cell):
    """The halves of a contour piece through ``saddle`` along which the flow approaches it.

    Each half is tested a few cells away from the saddle, where the flow, tangent to the level
    set, points either towards the saddle or away from it. Within two cells of the saddle the
    contoured curve turns from one branch into the next, so those vertices are replaced by the
    saddle itself.
    """
    dist = np.hypot(verts[:, 0] - saddle[0], verts[:, 1] - saddle[1])
    i0 = int(np.argmin(dist))
    if dist[i0] > 3 * cell:
        return []
    out = []
    for half in (verts[i0::-1], verts[i0:]):
        r = np.hypot(half[:, 0] - saddle[0], half[:, 1] - saddle[1])
        beyond = np.flatnonzero(r > 2 * cell)
        if len(beyond) == 0:
            continue
        half = half[beyond[0]:]
        r = r[beyond[0]:]
        far = np.flatnonzero(r >= 6 * cell)
        probe = half[far[0]] if len(far) else half[-1]
        flow = -nm.gradient(probe)
        if float(np.dot(flow, probe - saddle)) < 0:
            out.append(np.vstack([saddle[None, :2], half]))
    return out


def _direction(nm, box, kind):
    """-grad L / |grad L| on a FIELD_POINTS[kind]-point grid; zero (and ``still``) where grad L = 0."""
    xn, yn = nm.params
    m = FIELD_POINTS[kind]
    x, y = np.linspace(*box[xn], m), np.linspace(*box[yn], m)
    X, Y = np.meshgrid(x, y)
    g = -nm.gradient(np.stack([X, Y], -1))
    norm = np.hypot(g[..., 0], g[..., 1])
    scale = np.max(norm[np.isfinite(norm)], initial=0.0)
    still = ~(norm > 1e-12 * max(scale, 1e-300))
    with np.errstate(all="ignore"):
        u = np.where(still, 0.0, g[..., 0] / norm)
        v = np.where(still, 0.0, g[..., 1] / norm)
    return DirectionField(kind=kind, x=x, y=y, u=u, v=v, still=still)


def landscape(model, chain, *, crit=None, extent=None, resolution=300, field="stream") -> Landscape:
    """The plane of a 2-parameter model (paper Fig. 1 a/c): E (or L without E), flow field, sets, separatrix.

    ``crit``: the CriticalResult to draw (computed in the box when None). ``extent``:
    {name: (lo, hi)}, default -3..3. ``resolution``: grid points per axis (8 to
    PLOT_LIMITS["resolution"]). ``field``: "stream" (60 x 60) or "quiver" (21 x 21) or None.
    """
    if len(model.params) != 2:
        raise FlowlabInputError(
            f"energy_landscape draws a 2-parameter plane; {model.name!r} has {list(model.params)} (use flow_3d)"
        )
    if field not in ("stream", "quiver", None):
        raise FlowlabInputError(f"field must be 'stream', 'quiver' or None, got {field!r}")
    resolution = integer(resolution, "resolution", 8, PLOT_LIMITS["resolution"])
    return _landscape(model, chain, crit, extent, resolution, field)


def _landscape(model, chain, crit, extent, resolution, field) -> Landscape:
    from .critical import critical_sets, make_box
    from .numeric import NumericModel

    box = make_box(model, extent)
    nm = NumericModel(model, chain)
    if crit is None:
        crit = critical_sets(model, chain, box)
    x, y = _plane_grid(nm, box, resolution)
    X, Y = np.meshgrid(x, y)
    theta = np.stack([X, Y], -1)
    has_energy = "E" in nm.invariant_names
    values = nm.invariants(theta)["E"] if has_energy else nm.loss(theta)
    values = np.where(np.isfinite(values), values, np.nan)
    separatrix = _separatrix(nm, crit, x, y, values) if has_energy else ()
    return Landscape(
        model=model, params=tuple(model.params), chain=chain, box=box, x=x, y=y, values=values,
        quantity="E" if has_energy else "L", direction=None if field is None else _direction(nm, box, field),
        overlay=overlay(crit), separatrix=separatrix,
        message=f"{'E' if has_energy else 'L'} of {model.name!r} on {len(x)} x {len(y)} points, "
        f"{len(crit.sets)} critical sets, {sum(len(s.branches) for s in separatrix)} separatrix branches",
    )


# ---------------------------------------------------------------------- basin map, slices
@dataclass(frozen=True)
class Slice:
    """The full model's critical sets where they meet a 2-D slice (``fixed`` parameters held).

    ``overlay`` is None (status "undetermined") when no set could be vouched for (see :func:`slice_sets`).
    """

    model: Model
    params: tuple[str, ...]
    fixed: dict
    chain: MarkovChain
    overlay: CriticalOverlay | None
    status: str = "ok"
    message: str = ""

    def as_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "system": "markov", "model": self.model.name,
                "chain": self.chain.as_dict(), "params": list(self.params), "fixed": dict(self.fixed),
                "critical": None if self.overlay is None else self.overlay.as_dict()}


def sliced_model(model, fixed):
    """The model restricted to a slice: some parameters held at the given values, exactly.

    Each value enters as the exact rational of its float64 value (``sympy.Rational(float)``), never
    rounded to a "simple" number. The restriction's critical points are candidates only: they
    include points where a fixed coordinate's derivative does not vanish (see :func:`slice_sets`).
    """
    from dataclasses import replace

    import sympy as sp

    from .models import param_symbol

    subs = {param_symbol(k): sp.Rational(float(v)) for k, v in fixed.items()}
    params = tuple(n for n in model.params if n not in fixed)
    return replace(model, name=f"{model.name}|" + ",".join(f"{k}={v!r}" for k, v in fixed.items()),
                   params=params, logit=model.logit.subs(subs), invariants=())


def _full_sets(model, chain, sliced, box):
    """The full model's symbolic sets in a box reaching +-1 around the slice (or +-1e-3 when the wider
    box leaves the region where the symbolic structure holds); None when there are none."""
    from .critical import critical_sets, make_box

    for width in (1.0, 1e-3):
        full_box = {**box, **{k: (v - width * max(1.0, abs(v)), v + width * max(1.0, abs(v)))
                              for k, v in sliced.items()}}
        try:
            return critical_sets(model, chain, make_box(model, full_box), method="symbolic")
        except FlowlabInputError:
            continue
    return None


def slice_sets(model, chain, sliced, box, full=None):
    """The full model's critical sets intersected with a slice, as a CriticalResult over the free parameters.

    ``full``: the CriticalResult of the full model (computed with the symbolic path when None). A
    point is drawn when it is a critical point of the restricted model (a candidate) or a sample of
    a full set lying in the slice, *and* it is a member of a full symbolic set (whose kind it takes)
    with |grad L| of the full model at most :data:`SLICE_GRAD_TOL`. Without symbolic full sets (a
    model with no profiled structure) nothing can be vouched for and None is returned: no overlay.
    """
    from .critical import CriticalResult, CriticalSet, critical_sets
    from .numeric import NumericModel

    free = [n for n in model.params if n not in sliced]
    idx = {n: i for i, n in enumerate(model.params)}
    full = _full_sets(model, chain, sliced, box) if full is None else full
    members = [] if full is None else [s for s in full.sets if s.member is not None]
    if not members:
        return None
    restricted = sliced_model(model, sliced)
    try:  # candidates only (each is vouched for below): the symbolic sets, without the numeric cross-check
        cands = critical_sets(restricted, chain, box, method="symbolic")
    except FlowlabInputError:  # no symbolic structure: what "auto" would fall back to, without retrying it
        cands = critical_sets(restricted, chain, box, method="numeric")
    pool = []
    for s in cands.sets:  # lifted to the full parameter order
        pts = np.asarray(s.points, float).reshape(-1, len(free))
        lifted = np.empty((len(pts), len(model.params)))
        for j, n in enumerate(free):
            lifted[:, idx[n]] = pts[:, j]
        for n, v in sliced.items():
            lifted[:, idx[n]] = v
        pool.append(lifted)
    fixed_cols = [idx[n] for n in sliced]
    fixed_vals = np.array([sliced[n] for n in sliced])
    nm = NumericModel(model, chain)
    sets = []
    for s in members:
        pts = np.asarray(s.points, float).reshape(-1, len(model.params))
        on = np.all(np.abs(pts[:, fixed_cols] - fixed_vals) <= 1e-12 * (1 + np.abs(fixed_vals)), axis=1)
        cand = np.concatenate([*pool, pts[on]]) if pool or np.any(on) else np.zeros((0, len(model.params)))
        if not len(cand):
            continue
        with np.errstate(all="ignore"):
            keep = np.asarray(s.member(cand), bool) & (np.linalg.norm(nm.gradient(cand), axis=-1) <= SLICE_GRAD_TOL)
        if not np.any(keep):
            continue
        inside = bool(len(pts)) and bool(np.all(on))
        where = ", ".join(f"{k} = {v:.17g}" for k, v in sliced.items())
        sets.append(CriticalSet(
            kind=s.kind, dimension=s.dimension if inside else max(s.dimension - len(sliced), 0), loss=s.loss,
            equation=s.equation, text=f"{s.text}; in the slice {where}", source=s.source,
            points=np.unique(cand[keep][:, [idx[n] for n in free]], axis=0), description=s.description,
        ))
    return CriticalResult(
        model=restricted, params=tuple(free), chain=chain, box=dict(box), degenerate=full.degenerate, complete=False,
        sets=tuple(sets), method="full sets in the slice", agreement=None, timings={},
        message="the full model's critical sets intersected with the slice (members of its symbolic sets with "
        f"|grad L| <= {SLICE_GRAD_TOL:g}); completeness not vouched for",
    )


def basin_landscape(grid, crit=None):
    """What a basin map of ``grid`` (a BasinGrid) overlays: a :class:`Landscape` or, for a slice, a :class:`Slice`.

    A full 2-parameter grid: its critical sets (``crit``, computed in the grid's box when None)
    and the separatrix, sampled on max(240, grid points) per axis; no direction field. A slice
    (fixed parameters): the full model's critical sets where they meet the slice (``crit``, when
    given, must be the full model's on the grid's chain), see :func:`slice_sets`.
    """
    free = [n for n in grid.params if len(grid.axes[n]) > 1]
    if len(free) != 2:
        raise FlowlabInputError(
            f"basin_map draws a 2-D grid or a 2-D slice; this one has shape {np.shape(grid.label)} over "
            f"{list(grid.params)}"
        )
    sliced = {n: float(grid.axes[n][0]) for n in grid.params if n not in free}
    x, y = (np.asarray(grid.axes[n], float) for n in free)
    box = {free[0]: (float(x[0]), float(x[-1])), free[1]: (float(y[0]), float(y[-1]))}
    if not sliced:
        resolution = max(BASIN_SEPARATRIX_POINTS, len(x), len(y))
        return _landscape(grid.model, grid.chain, crit, box, resolution, None)
    if crit is not None and (crit.model != grid.model or crit.chain != grid.chain):
        raise FlowlabInputError(f"a slice overlays the critical sets of the full model {list(grid.params)} on the "
                                f"grid's chain; got sets of {crit.model.name!r} over {list(crit.params)}")
    sets = slice_sets(grid.model, grid.chain, sliced, box, crit)
    where = ", ".join(f"{k} = {v:g}" for k, v in sliced.items())
    if sets is None:
        return Slice(model=grid.model, params=tuple(free), fixed=sliced, chain=grid.chain, overlay=None,
                     status="undetermined", message=f"no symbolic critical sets of {grid.model.name!r} to vouch "
                     f"for points in the slice {where}: nothing is overlaid")
    return Slice(model=grid.model, params=tuple(free), fixed=sliced, chain=grid.chain, overlay=overlay(sets),
                 message=f"{len(sets.sets)} critical sets of {grid.model.name!r} meet the slice {where}")


# ----------------------------------------------------------------------------- 3-D flows
@dataclass(frozen=True)
class Flows3D:
    """Gradient flows (FlowResults) of a 3-parameter model from several starts, with its critical sets."""

    model: Model
    params: tuple[str, str, str]
    chain: MarkovChain
    box: dict
    flows: tuple = ()
    overlay: CriticalOverlay | None = None
    status: str = "ok"
    message: str = ""
    counts: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "system": "markov", "model": self.model.name,
                "chain": self.chain.as_dict(), "params": list(self.params), "box": {k: list(v) for k, v in self.box.items()},
                "counts": dict(self.counts), "flows": [f.as_dict() for f in self.flows],
                "critical": None if self.overlay is None else self.overlay.as_dict()}


def flows_3d(model, chain, starts, *, crit=None, t_max=1e3, extent=None) -> Flows3D:
    """Gradient flows of a 3-parameter model (e.g. ewb) from each row of ``starts``, with the critical sets.

    ``crit``: the CriticalResult to draw (computed in the box when None); ``extent``: the box
    {name: (lo, hi)}, default -3..3 (the drawn box also covers every path).
    """
    from .critical import critical_sets, make_box
    from .flow import gradient_flow

    if len(model.params) != 3:
        raise FlowlabInputError(f"flow_3d draws 3-parameter models; {model.name!r} has {list(model.params)}")
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if starts.ndim != 2 or starts.shape[1] != 3 or len(starts) == 0:
        raise FlowlabInputError(f"starts must be rows of 3 values {list(model.params)}, got shape {starts.shape}")
    box = make_box(model, extent)
    if crit is None:
        crit = critical_sets(model, chain, box)
    flows = tuple(gradient_flow(model, chain, s, t_max=t_max) for s in starts)
    counts = {k: sum(f.reached == k for f in flows) for k in dict.fromkeys(("global", "local", "undetermined",
                                                                            *(f.reached for f in flows)))}
    counts["total"] = len(flows)
    return Flows3D(model=model, params=tuple(model.params), chain=chain, box=box, flows=flows, overlay=overlay(crit),
                   counts=counts, message=f"{len(flows)} flows of {model.name!r}: " + ", ".join(
                       f"{v} {k}" for k, v in counts.items() if k != "total"))
