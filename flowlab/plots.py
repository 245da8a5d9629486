"""Figures. Every function takes ``ax=None``, returns the Axes and never calls ``show()``.

One visual language across all figures (module constants below): global minima and the basin
I* in green, non-global (unigram) minima and the basin I_min in red, local maxima in blue,
saddles black, undetermined grey; the separatrix is a black dash-dot line. Parameters are
written as ``$e$``, ``$w$``, ``$b$`` and both axes of a parameter plane have equal scales.

Artists carry a ``gid`` saying what they show (``"critical:<kind>"``, ``"energy"``,
``"separatrix"``, ``"field"``, ``"basins"``, ``"trajectory"``), so figures can be checked.
"""

from __future__ import annotations

import weakref

import numpy as np

from ._checks import FlowlabInputError, integer
from ._defaults import PLOT_LIMITS

#: Colours used for the same meaning in every figure.
COLORS = {
    "global": "#1b7837",
    "local": "#b2182b",
    "undetermined": "#7f7f7f",
    "max": "#2166ac",
    "saddle": "black",
}

#: How each kind of critical set is drawn: a line for sets of dimension >= 1, a marker for points.
KIND_STYLE = {
    "global_min": {"color": COLORS["global"], "ls": "-", "lw": 2.2, "marker": "o", "ms": 7, "zorder": 3.2},
    "local_min": {"color": COLORS["local"], "ls": "-", "lw": 3.0, "marker": "o", "ms": 7, "zorder": 3.1},
    "local_max": {"color": COLORS["max"], "ls": "--", "lw": 2.2, "marker": "^", "ms": 8, "zorder": 3.0},
    "saddle": {"color": COLORS["saddle"], "ls": ":", "lw": 2.2, "marker": "X", "ms": 10, "zorder": 5.0},
    "degenerate": {"color": COLORS["undetermined"], "ls": "-.", "lw": 2.0, "marker": "D", "ms": 7, "zorder": 5.0},
}
#: The flow's verdict in legends.
REACHED_LABEL = {
    "global": r"flow $\to$ global minimum",
    "local": r"flow $\to$ local minimum",
    "undetermined": "flow: undetermined",
}
#: Basin map: opacity of the label colours (overlays stay readable) and legend texts.
BASIN_ALPHA = 0.55
BASIN_LABELS = {1: r"$I^*$ (global minimum)", 0: r"$I_{\min}$ (unigram)", -1: "undetermined"}
#: The separatrix (level set of E through the saddle).
SEPARATRIX_STYLE = {"color": "black", "ls": "-.", "lw": 1.6}
#: Background of the energy landscape: a light part of "Greys", so coloured lines stay readable.
ENERGY_CMAP_RANGE = ("Greys", 0.04, 0.62)
#: Legends below the axes, this many points under the axes' lower edge (clears tick and axis labels).
LEGEND_OFFSET_PT = 34
LEGEND_FONTSIZE = 8

# Legend entries that are not artists of the axes (proxies for contour sets, image colours...).
_EXTRA_HANDLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# 3-D axes whose figure was made here (their legend is a figure legend) and that legend.
_OWN_3D: weakref.WeakSet = weakref.WeakSet()
_FIGURE_LEGEND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ------------------------------------------------------------------------------- helpers
def _axes(ax, figsize=(5.0, 3.6)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _tex(name: str) -> str:
    return f"${name}$"


def _chain_title(chain) -> str:
    rel = "=" if chain.degenerate else ("<" if chain.p + chain.q < 1 else ">")
    return r"$p=%g,\ q=%g\ (p+q%s1)$" % (chain.p, chain.q, rel)


def _add_extra(ax, handle, label, owner):
    """A legend proxy for ``owner`` (an artist of ``ax``); it lapses when the owner leaves the axes."""
    if label not in [lab for _, lab in _extras(ax)]:
        _EXTRA_HANDLES.setdefault(ax, []).append((handle, label, owner))


def _extras(ax):
    live = [(h, lab, o) for h, lab, o in _EXTRA_HANDLES.get(ax, []) if o.axes is ax]
    if ax in _EXTRA_HANDLES:
        _EXTRA_HANDLES[ax] = live
    return [(h, lab) for h, lab, _ in live]


def _labels_on(ax) -> set[str]:
    return set(ax.get_legend_handles_labels()[1]) | {lab for _, lab in _extras(ax)}


def _legend(ax, *, loc=None):
    """(Re)build the legend: artists' labels then proxies, each text once; below the axes by default."""
    handles, labels = ax.get_legend_handles_labels()
    for h, lab in _extras(ax):
        handles.append(h)
        labels.append(lab)
    seen, hs, ls = set(), [], []
    for h, lab in zip(handles, labels):
        if lab not in seen:
            seen.add(lab)
            hs.append(h)
            ls.append(lab)
    if not hs:
        return None
    if loc is not None:
        return ax.legend(hs, ls, loc=loc, fontsize=LEGEND_FONTSIZE, framealpha=0.85)
    from matplotlib.transforms import offset_copy

    if getattr(ax, "name", "") == "3d":
        from matplotlib.layout_engine import ConstrainedLayoutEngine

        fig = ax.figure
        alone = ax in _OWN_3D or [a for a in fig.axes if a is not ax and a.get_label() != "<colorbar>"] == []
        if alone and isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
            # beside the cube, placed by the layout engine (an axes legend outside a 3-D box is not)
            old = _FIGURE_LEGEND.pop(ax, None)
            if old is not None:
                old.remove()
            # the invisible border keeps the z axis label, which overhangs the axes' box, clear
            leg = fig.legend(hs, ls, loc="outside right center", fontsize=LEGEND_FONTSIZE, frameon=False,
                             handlelength=2.6, borderpad=2.5)
            _FIGURE_LEGEND[ax] = leg
            return leg
        return ax.legend(hs, ls, loc="upper left", fontsize=LEGEND_FONTSIZE, framealpha=0.85, handlelength=2.6)
    below = offset_copy(ax.transAxes, fig=ax.figure, y=-LEGEND_OFFSET_PT, units="points")
    ncol = 3 if len(hs) >= 5 else min(len(hs), 2)
    return ax.legend(hs, ls, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=ncol,
                     fontsize=LEGEND_FONTSIZE, frameon=False, handlelength=2.6, columnspacing=1.2)


def _set_label(s, chain) -> str:
    """Legend text of a critical set: words, with the model it realises when the loss says so."""
    unigram = abs(s.loss - chain.unigram_loss) <= 1e-9 * max(1.0, abs(chain.unigram_loss))
    suffix = " (unigram)" if unigram and not chain.degenerate else ""
    if s.kind == "global_min":
        return "global minima (bigram)"
    if s.kind == "local_min":
        return "local minima" + suffix
    if s.kind == "local_max":
        return "local maxima" + suffix
    if s.kind == "saddle":
        return "saddle" if s.dimension == 0 else "saddles" + suffix
    return s.kind.replace("_", " ")


def _energy_cmap():
    import matplotlib as mpl
    from matplotlib.colors import ListedColormap

    name, lo, hi = ENERGY_CMAP_RANGE
    return ListedColormap(mpl.colormaps[name](np.linspace(lo, hi, 256)), name="flowlab_energy")


def _numeric_model_of(crit):
    """The NumericModel of a CriticalResult's model when it is a preset with the same parameters."""
    from .numeric import NumericModel

    model = crit.model
    return NumericModel(model, crit.chain) if tuple(model.params) == tuple(crit.params) else None


# ---------------------------------------------------------------- ordering set samples
def _polylines(points, *, nm=None, loss=None, tol=None, factor=5.0, neighbours=8):
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


def _joined(lines, ncols):
    """Polylines as one array, separated by NaN rows (one artist per set)."""
    parts = []
    for line in lines:
        if parts:
            parts.append(np.full((1, ncols), np.nan))
        parts.append(line)
    return np.concatenate(parts) if parts else np.zeros((0, ncols))


# ------------------------------------------------------------------------ critical sets
def critical_overlay(crit, ax=None, *, dims=(0, 1), label=True):
    """Draw the critical sets of a CriticalResult on 2-D axes (or 3-D axes with three ``dims``).

    Sets of dimension 1 become lines (samples chained into polylines, separate branches kept
    apart), points become markers, higher-dimensional sets a scatter (a translucent surface
    in 3-D). One artist per set, with gid ``"critical:<kind>"``; with ``label`` each legend
    text appears once.
    """
    dims = tuple(int(i) for i in dims)
    n = len(crit.params)
    if len(dims) not in (2, 3) or len(set(dims)) != len(dims) or not all(0 <= i < n for i in dims):
        raise FlowlabInputError(f"dims must pick 2 or 3 distinct columns of {list(crit.params)}, got {dims}")
    three_d = len(dims) == 3
    if ax is None:
        if three_d:
            import matplotlib.pyplot as plt

            ax = plt.figure(figsize=(8.4, 6.0), layout="constrained").add_subplot(projection="3d")
            _OWN_3D.add(ax)
        else:
            ax = _axes(None, figsize=(5.6, 5.6))
    if three_d and getattr(ax, "name", "") != "3d":
        raise FlowlabInputError("three dims need a 3-D axes (projection='3d')")
    nm = _numeric_model_of(crit)
    levels = sorted({float(s.loss) for s in crit.sets} | {crit.chain.entropy_rate, crit.chain.unigram_loss})
    present = _labels_on(ax) if label else set()
    for s in crit.sets:
        st = KIND_STYLE.get(s.kind, KIND_STYLE["degenerate"])
        text = _set_label(s, crit.chain)
        lab = text if label and text not in present else None
        if lab:
            present.add(lab)
        gid = f"critical:{s.kind}"
        pts = np.asarray(s.points, dtype=np.float64)
        if len(pts) == 0:
            continue
        if s.dimension == 0 or len(pts) == 1:
            cols = [pts[:, i] for i in dims]
            ax.plot(*cols, ls="none", marker=st["marker"], ms=st["ms"], color=st["color"], mec="white", mew=1.2,
                    zorder=st["zorder"] + 2, gid=gid, label=lab)
        elif s.dimension == 1:
            others = [abs(v - s.loss) for v in levels if abs(v - s.loss) > 1e-12 * max(1.0, abs(s.loss))]
            tol = 0.25 * min(others) if others and nm is not None else None
            lines = _polylines(pts, nm=nm, loss=s.loss, tol=tol)
            xyz = _joined(lines, pts.shape[1])
            ax.plot(*[xyz[:, i] for i in dims], color=st["color"], ls=st["ls"], lw=st["lw"], zorder=st["zorder"],
                    solid_capstyle="round", gid=gid, label=lab)
        else:
            cols = [pts[:, i] for i in dims]
            if three_d:
                artist = None
                try:
                    artist = ax.plot_trisurf(*cols, color=st["color"], alpha=0.3, linewidth=0, shade=False)
                except (RuntimeError, ValueError):  # a surface not a graph over the first two dims
                    artist = None
                if artist is None:
                    ax.scatter(*cols, s=6, color=st["color"], alpha=0.4, depthshade=False, gid=gid, label=lab)
                else:
                    artist.set_gid(gid)
                    if lab:
                        artist.set_label(lab)
            else:
                ax.scatter(*cols, s=6, color=st["color"], alpha=0.45, zorder=st["zorder"], gid=gid, label=lab,
                           linewidths=0)
    if label:
        _legend(ax)
    return ax


# ---------------------------------------------------------------------- energy landscape
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


def _draw_separatrix(ax, nm, box, crit, resolution):
    """The separatrix: the branches of {E = E(saddle)} along which the flow runs INTO a saddle.

    A saddle's level set of the conserved E is an X: two branches are its stable manifold (the
    boundary between the basins), the other two leave it towards a minimum and bound nothing;
    other components of the same level (e.g. in w > 0 for model ew) bound nothing either. The
    stable branches are kept (those where -grad L points towards the saddle), drawn as one
    contour set at the saddle level with gid "separatrix". None when there is no saddle.
    """
    from matplotlib.lines import Line2D
    from matplotlib.path import Path

    levels = _saddle_levels(nm, crit)
    if not levels:
        return None
    x, y = _plane_grid(nm, box, resolution)
    X, Y = np.meshgrid(x, y)
    E = np.ma.masked_invalid(nm.invariants(np.stack([X, Y], -1))["E"])
    cs = ax.contour(X, Y, E, levels=[lv for lv, _ in levels], colors=SEPARATRIX_STYLE["color"],
                    linestyles=SEPARATRIX_STYLE["ls"], linewidths=SEPARATRIX_STYLE["lw"], zorder=2.5)
    cell = max((x[-1] - x[0]) / (len(x) - 1), (y[-1] - y[0]) / (len(y) - 1))
    paths = []
    for path, (_, saddles) in zip(cs.get_paths(), levels):
        kept = []
        for piece in _subpaths(path):
            v = piece.vertices
            if piece.codes is not None:  # a closed loop's last vertex is a placeholder
                v = np.where((piece.codes == Path.CLOSEPOLY)[:, None], v[:1], v)
            for s in saddles:
                kept.extend(Path(b) for b in _stable_branches(nm, v, np.asarray(s, float), cell))
        paths.append(Path.make_compound_path(*kept) if kept else Path(np.zeros((0, 2))))
    cs.set_paths(paths)
    cs.set_gid("separatrix")
    _add_extra(ax, Line2D([], [], color=SEPARATRIX_STYLE["color"], ls=SEPARATRIX_STYLE["ls"],
                          lw=SEPARATRIX_STYLE["lw"]), "separatrix", cs)
    return cs


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


def _subpaths(path):
    """The pieces of a compound Path (split at MOVETO), vertices and codes unsimplified."""
    from matplotlib.path import Path

    verts = np.asarray(path.vertices, float)
    if len(verts) == 0:
        return []
    codes = path.codes
    starts = [0] if codes is None else np.flatnonzero(codes == Path.MOVETO).tolist() or [0]
    ends = starts[1:] + [len(verts)]
    return [Path(verts[a:b], None if codes is None else codes[a:b]) for a, b in zip(starts, ends) if b > a]


def _color_levels(Z, n, cover=(), *, equalise=False):
    """About ``n`` levels over the 2nd..98th percentile of Z, widened to include ``cover``.

    Round, evenly spaced levels by default; with ``equalise`` the levels are quantiles of Z (to
    3 significant digits), for a skewed field such as the loss, which is flat over most of the
    plane and steep in a few corners.
    """
    from matplotlib.ticker import MaxNLocator

    vals = np.ma.compressed(Z) if np.ma.isMaskedArray(Z) else np.asarray(Z).ravel()
    vals = vals[np.isfinite(vals)]
    lo, hi = (float(v) for v in np.percentile(vals, [2, 98]))
    if equalise and hi > lo:
        q = np.quantile(vals, np.linspace(0.02, 0.98, max(int(n), 2) + 1))
        levels = np.unique([float(f"{v:.3g}") for v in q])
        if len(levels) >= 3:
            return levels
    for c in cover:
        pad = 0.05 * max(hi - lo, 1e-9)
        lo, hi = min(lo, c - pad), max(hi, c + pad)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    levels = MaxNLocator(nbins=max(int(n), 2), steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return levels[np.isfinite(levels)]


def energy_landscape(model, chain, *, crit=None, extent=None, ax=None, resolution=300, field="stream", levels=24):
    """The conserved energy E over a 2-parameter plane (paper Fig. 1 a/c), or the loss without E.

    Filled contours of E (clipped to its 2..98 percentiles, undefined line masked) with a
    colour bar, the direction field of the flow -grad L/|grad L| (``field``: "stream",
    "quiver" or None), the separatrix (the branches of the level of E through the saddle along
    which the flow runs into it: the boundary of the basins) and the critical sets (``crit``,
    computed in the box when not given). ``extent``: {name: (lo, hi)}, default -3..3. Without an
    invariant E the filled contours show the loss, with quantile levels.
    """
    from .critical import critical_sets, make_box
    from .numeric import NumericModel

    if len(model.params) != 2:
        raise FlowlabInputError(
            f"energy_landscape draws a 2-parameter plane; {model.name!r} has {list(model.params)} (use flow_3d)"
        )
    if field not in ("stream", "quiver", None):
        raise FlowlabInputError(f"field must be 'stream', 'quiver' or None, got {field!r}")
    resolution = integer(resolution, "resolution", 8, PLOT_LIMITS["resolution"])
    ax = _axes(ax, figsize=(5.8, 5.9))
    box = make_box(model, extent)
    xn, yn = model.params
    nm = NumericModel(model, chain)
    if crit is None:
        crit = critical_sets(model, chain, box)
    x, y = _plane_grid(nm, box, resolution)
    X, Y = np.meshgrid(x, y)
    theta = np.stack([X, Y], -1)
    has_energy = "E" in nm.invariant_names
    if has_energy:
        Z = np.ma.masked_invalid(nm.invariants(theta)["E"])
        cbar_label = rf"$E({xn},{yn})$"
    else:
        Z = np.ma.masked_invalid(nm.loss(theta))
        cbar_label = r"$L$ [nats]"
    seps = [lv for lv, _ in _saddle_levels(nm, crit)]
    from matplotlib.colors import BoundaryNorm

    lv = _color_levels(Z, levels, seps, equalise=not has_energy)
    cmap = _energy_cmap()
    norm = BoundaryNorm(lv, cmap.N, extend="both")  # every band its own shade, even for uneven levels
    cf = ax.contourf(X, Y, Z, levels=lv, cmap=cmap, norm=norm, extend="both", zorder=0)
    cf.set_gid("energy")
    cax = ax.inset_axes([1.035, 0.0, 0.045, 1.0])  # follows the axes' box (equal aspect) exactly
    cbar = ax.figure.colorbar(cf, cax=cax)
    cbar.set_label(cbar_label)
    if field is not None:
        _direction_field(ax, nm, box, field)
    if has_energy:
        _draw_separatrix(ax, nm, box, crit, resolution)
    critical_overlay(crit, ax, dims=(0, 1), label=True)
    ax.set_xlim(*box[xn])
    ax.set_ylim(*box[yn])
    ax.set_xlabel(_tex(xn))
    ax.set_ylabel(_tex(yn))
    ax.set_aspect("equal")
    ax.set_title(_chain_title(chain))
    _legend(ax)
    return ax


def _direction_field(ax, nm, box, field):
    """-grad L / |grad L| as streamlines or arrows (gid "field"); undefined where grad L = 0."""
    xn, yn = nm.params
    m = 60 if field == "stream" else 21
    x, y = np.linspace(*box[xn], m), np.linspace(*box[yn], m)
    X, Y = np.meshgrid(x, y)
    g = -nm.gradient(np.stack([X, Y], -1))
    norm = np.hypot(g[..., 0], g[..., 1])
    scale = np.max(norm[np.isfinite(norm)], initial=0.0)
    still = ~(norm > 1e-12 * max(scale, 1e-300))
    with np.errstate(all="ignore"):
        U = np.where(still, 0.0, g[..., 0] / norm)
        V = np.where(still, 0.0, g[..., 1] / norm)
    if field == "stream":
        # the normalised field reverses across an attracting or repelling set: streamlines stop at
        # such cells instead of zig-zagging along the set
        stop = still.copy()
        for axis in (0, 1):
            a = [slice(None)] * 2
            b = [slice(None)] * 2
            a[axis], b[axis] = slice(None, -1), slice(1, None)
            rev = U[tuple(a)] * U[tuple(b)] + V[tuple(a)] * V[tuple(b)] < 0
            stop[tuple(a)] |= rev
            stop[tuple(b)] |= rev
        U, V = np.ma.masked_where(stop, U), np.ma.masked_where(stop, V)
        sp = ax.streamplot(x, y, U, V, density=1.1, color="0.30", linewidth=0.55, arrowsize=0.75, arrowstyle="-|>",
                           zorder=1, broken_streamlines=True)
        sp.lines.set_gid("field")
        sp.arrows.set_gid("field")
        sp.lines.set_alpha(0.75)
        return sp
    q = ax.quiver(X, Y, np.ma.masked_where(still, U), np.ma.masked_where(still, V), color="0.30", alpha=0.75,
                  angles="xy", pivot="mid", scale=1.6 * m, width=0.0022, headwidth=3.5, zorder=1)
    q.set_gid("field")
    return q


# -------------------------------------------------------------------------- basin map
#: A point of a full critical set drawn on a slice must have |grad L| (full model) at most this.
SLICE_GRAD_TOL = 1e-6


def _sliced_model(model, fixed):
    """The model restricted to a slice: some parameters held at the given values, exactly.

    Each value enters as the exact rational of its float64 value (``sympy.Rational(float)``), never
    rounded to a "simple" number. The restriction's critical points are candidates only: they
    include points where a fixed coordinate's derivative does not vanish (see :func:`_slice_sets`).
    """
    from dataclasses import replace

    import sympy as sp

    from .models import param_symbol

    subs = {param_symbol(k): sp.Rational(float(v)) for k, v in fixed.items()}
    params = tuple(n for n in model.params if n not in fixed)
    return replace(model, name=f"{model.name}|" + ",".join(f"{k}={v!r}" for k, v in fixed.items()),
                   params=params, logit=model.logit.subs(subs), invariants=())


def _slice_sets(model, chain, sliced, box, full=None):
    """The full model's critical sets intersected with a slice, as a CriticalResult over the free parameters.

    ``full``: the CriticalResult of the full model (computed with the symbolic path when None). A
    point is drawn when it is a critical point of the restricted model (a candidate) or a sample of
    a full set lying in the slice, *and* it is a member of a full symbolic set (whose kind it takes)
    with |grad L| of the full model at most :data:`SLICE_GRAD_TOL`. Without symbolic full sets (a
    model with no profiled structure) nothing can be vouched for and None is returned: no overlay.
    """
    from .critical import CriticalResult, CriticalSet, critical_sets, make_box
    from .numeric import NumericModel

    free = [n for n in model.params if n not in sliced]
    idx = {n: i for i, n in enumerate(model.params)}
    # the full box reaches +-1 around the slice (so that sets crossing it are sampled and kept), or
    # +-1e-3 when the wider box leaves the region where the symbolic structure holds
    for width in ((1.0, 1e-3) if full is None else ()):
        full_box = {**box, **{k: (v - width * max(1.0, abs(v)), v + width * max(1.0, abs(v)))
                              for k, v in sliced.items()}}
        try:
            full = critical_sets(model, chain, make_box(model, full_box), method="symbolic")
            break
        except FlowlabInputError:
            continue
    if full is None:
        return None
    members = [s for s in full.sets if s.member is not None]
    if not members:
        return None
    restricted = _sliced_model(model, sliced)
    cands = critical_sets(restricted, chain, box)

    def lift(pts):
        out = np.empty((len(pts), len(model.params)))
        for j, n in enumerate(free):
            out[:, idx[n]] = pts[:, j]
        for n, v in sliced.items():
            out[:, idx[n]] = v
        return out

    pool = [lift(np.asarray(s.points, float).reshape(-1, len(free))) for s in cands.sets]
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


def basin_map(grid, *, crit=None, ax=None, separatrix=True):
    """The labels of a 2-D BasinGrid as an image (paper Fig. 1 b/d), with separatrix and critical sets.

    The image is drawn from ``grid.label`` (1 global -> green, 0 non-global -> red,
    -1 undetermined -> grey), first parameter along x. On a slice (a grid with fixed parameters)
    the overlay shows the full model's critical sets where they meet the slice (``crit``, when
    given, must be the full model's), or nothing when they cannot be vouched for
    (:func:`_slice_sets`); the separatrix is drawn for full 2-parameter grids only.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    from .critical import critical_sets
    from .numeric import NumericModel

    label = np.asarray(grid.label)
    free = [n for n in grid.params if len(grid.axes[n]) > 1]
    if len(free) != 2:
        raise FlowlabInputError(
            f"basin_map draws a 2-D grid or a 2-D slice; this one has shape {label.shape} over {list(grid.params)}"
        )
    sliced = {n: float(grid.axes[n][0]) for n in grid.params if n not in free}
    label = label.reshape([len(grid.axes[n]) for n in free])
    ax = _axes(ax, figsize=(5.4, 5.9))
    xn, yn = free
    x, y = np.asarray(grid.axes[xn], float), np.asarray(grid.axes[yn], float)
    dx = (x[-1] - x[0]) / max(len(x) - 1, 1)
    dy = (y[-1] - y[0]) / max(len(y) - 1, 1)
    extent = (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)
    cmap = ListedColormap([COLORS["undetermined"], COLORS["local"], COLORS["global"]], name="flowlab_basins")
    norm = BoundaryNorm([-1.5, -0.5, 0.5, 1.5], cmap.N)
    im = ax.imshow(label.T, origin="lower", extent=extent, cmap=cmap, norm=norm, alpha=BASIN_ALPHA,
                   interpolation="nearest", zorder=0)
    im.set_gid("basins")
    box = {xn: (float(x[0]), float(x[-1])), yn: (float(y[0]), float(y[-1]))}
    if sliced:
        # only the full model's critical sets, where they meet the slice (the restriction's own
        # critical points include points where a fixed coordinate's derivative does not vanish)
        if crit is not None and (crit.model != grid.model or crit.chain != grid.chain):
            raise FlowlabInputError(f"a slice overlays the critical sets of the full model {list(grid.params)} on the "
                                    f"grid's chain; got sets of {crit.model.name!r} over {list(crit.params)}")
        crit = _slice_sets(grid.model, grid.chain, sliced, box, crit)
    elif crit is None:
        crit = critical_sets(grid.model, grid.chain, box)
    if separatrix and not sliced:
        nm = NumericModel(grid.model, grid.chain)
        if "E" in nm.invariant_names:
            _draw_separatrix(ax, nm, box, crit, max(240, len(x), len(y)))
    present = [v for v in (1, 0, -1) if v != -1 or np.any(label == -1)]
    for v in present:
        color = {1: COLORS["global"], 0: COLORS["local"], -1: COLORS["undetermined"]}[v]
        _add_extra(ax, Patch(facecolor=color, alpha=BASIN_ALPHA, edgecolor="none"), BASIN_LABELS[v], im)
    if crit is not None:
        critical_overlay(crit, ax, dims=(0, 1), label=True)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(_tex(xn))
    ax.set_ylabel(_tex(yn))
    ax.set_aspect("equal")
    title = _chain_title(grid.chain)
    if sliced:
        title += ",  " + ", ".join(f"${k} = {v:g}$" for k, v in sliced.items())
    ax.set_title(title)
    _legend(ax)
    return ax


# ------------------------------------------------------------------------ trajectories
def _draw_paths(ax, results, cols):
    from matplotlib.lines import Line2D

    present = _labels_on(ax)
    start = end = None
    for r in results:
        th = np.asarray(r.theta, float)
        color = COLORS.get(r.reached, COLORS["undetermined"])
        lab = REACHED_LABEL.get(r.reached, r.reached)
        lab = None if lab in present else lab
        if lab:
            present.add(lab)
        data = [th[:, i] for i in cols]
        ax.plot(*data, color=color, lw=1.6, zorder=4, gid="trajectory", label=lab, solid_capstyle="round")
        (start,) = ax.plot(*[d[:1] for d in data], ls="none", marker="o", ms=6, mfc="white", mec=color, mew=1.5,
                           zorder=6, gid="trajectory:start")
        (end,) = ax.plot(*[d[-1:] for d in data], ls="none", marker="o", ms=5.5, color=color, mec="white", mew=0.8,
                         zorder=6, gid="trajectory:end")
    if start is not None:
        _add_extra(ax, Line2D([], [], ls="none", marker="o", ms=6, mfc="white", mec="0.35", mew=1.5), "start", start)
        _add_extra(ax, Line2D([], [], ls="none", marker="o", ms=5.5, color="0.35", mec="white", mew=0.8), "end", end)


def trajectories(results, *, ax=None, background=None, crit=None, extent=None):
    """Paths of FlowResults in the plane of their first two parameters, coloured by what they reached.

    ``background="energy"`` draws :func:`energy_landscape` underneath (with ``crit`` and
    ``extent``); otherwise ``crit``, when given, is overlaid.
    """
    results = list(results)
    if not results:
        raise FlowlabInputError("trajectories needs at least one FlowResult")
    if background not in (None, "energy"):
        raise FlowlabInputError(f"background must be None or 'energy', got {background!r}")
    ax = _axes(ax, figsize=(5.8, 5.9) if background else (5.6, 5.9))
    params = results[0].params
    if background == "energy":
        if extent is None:
            reach = max(3.0, 1.05 * max(float(np.max(np.abs(np.asarray(r.theta)[:, :2]))) for r in results))
            extent = {p: (-reach, reach) for p in params[:2]}
        energy_landscape(results[0].model, results[0].chain, crit=crit, extent=extent, ax=ax)
    elif crit is not None:
        critical_overlay(crit, ax, dims=(0, 1), label=True)
    _draw_paths(ax, results, (0, 1))
    if background is None:
        if extent is not None:
            ax.set_xlim(*extent[params[0]])
            ax.set_ylim(*extent[params[1]])
        ax.set_title(_chain_title(results[0].chain))
    ax.set_xlabel(_tex(params[0]))
    ax.set_ylabel(_tex(params[1]))
    ax.set_aspect("equal")
    _legend(ax)
    return ax


def flow_3d(model, chain, starts, *, crit=None, ax=None, t_max=1e3, extent=None):
    """Gradient flows of a 3-parameter model (e.g. ewb) from each row of ``starts``, with the critical sets."""
    from .critical import critical_sets, make_box
    from .flow import gradient_flow

    if len(model.params) != 3:
        raise FlowlabInputError(f"flow_3d draws 3-parameter models; {model.name!r} has {list(model.params)}")
    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if starts.ndim != 2 or starts.shape[1] != 3 or len(starts) == 0:
        raise FlowlabInputError(f"starts must be rows of 3 values {list(model.params)}, got shape {starts.shape}")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure(figsize=(8.4, 6.0), layout="constrained").add_subplot(projection="3d")
        _OWN_3D.add(ax)
    elif getattr(ax, "name", "") != "3d":
        raise FlowlabInputError("flow_3d needs a 3-D axes (add_subplot(projection='3d'))")
    box = make_box(model, extent)
    if crit is None:
        crit = critical_sets(model, chain, box)
    critical_overlay(crit, ax, dims=(0, 1, 2), label=True)
    results = [gradient_flow(model, chain, s, t_max=t_max) for s in starts]
    _draw_paths(ax, results, (0, 1, 2))
    reach = np.concatenate([np.asarray(r.theta, float) for r in results])
    limits = (ax.set_xlim, ax.set_ylim, ax.set_zlim)
    for i, (setter, lim, p) in enumerate(zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), limits, model.params)):
        setter(_tex(p))
        lim(min(box[p][0], float(np.min(reach[:, i]))), max(box[p][1], float(np.max(reach[:, i]))))
    ax.set_title(f"model {model.name}, " + _chain_title(chain))
    _legend(ax)
    return ax


# ---------------------------------------------------------------------------- loss curve
def loss_curve(result, ax=None, *, label: str | None = None, references: bool = True, linestyle: str = "-"):
    """Loss along a flow (log time axis) with the unigram and bigram losses as references."""
    ax = _axes(ax)
    t = np.asarray(result.t, dtype=np.float64)
    color = COLORS[result.reached]
    ax.plot(t, result.loss, color=color, ls=linestyle, lw=1.8,
            label=label or f"{result.model.name}, reached {result.reached}")
    if references:
        chain = result.chain
        ax.axhline(chain.unigram_loss, ls="--", lw=1, color=COLORS["local"],
                   label=rf"unigram $h(\pi_1)$ = {chain.unigram_loss:.4f}")
        ax.axhline(chain.entropy_rate, ls=":", lw=1.2, color=COLORS["global"],
                   label=rf"bigram $H$ = {chain.entropy_rate:.4f}")
    ax.set_xscale("symlog", linthresh=0.1)  # linear near t = 0, logarithmic after
    ax.set_xlabel(r"flow time $t$")
    ax.set_ylabel(r"loss $L(\theta(t))$ [nats]")
    ax.legend(fontsize=8)
    return ax


# ------------------------------------------------------------------- training checks
#: Colours of the training initialisations: the guideline reaches the global minimum, the standard one is stuck.
INIT_COLORS = {"guideline": COLORS["global"], "standard": COLORS["local"]}


def _run_field(run, name):
    """A field of a training run: a flowlab.train.TrainResult (attribute) or a transformer result (dict)."""
    if isinstance(run, dict):
        return run[name]
    return getattr(run, name)


def _run_curve(run):
    """(steps, losses) of a training run."""
    if isinstance(run, dict):
        return np.asarray(run["steps"], float), np.asarray(run["losses"], float)
    return np.asarray(run.steps, float), np.asarray(run.loss, float)


def _stack_runs(curves, what):
    steps = curves[0][0]
    for s, _ in curves[1:]:
        if s.shape != steps.shape or not np.array_equal(s, steps):
            raise FlowlabInputError(f"{what}: the runs must be logged at the same steps (same settings, other seeds)")
    return steps, np.stack([v for _, v in curves])


def _init_color(runs, color):
    if color is not None:
        return color
    init = _run_field(runs[0], "init")
    return INIT_COLORS.get(init, COLORS["undetermined"])


def training_curves(runs, *, ax=None, unigram=None, bigram=None, label=None, color=None):
    """Mean +- std (over seeds) of the loss against the training step, for runs of one initialisation.

    ``runs``: :class:`flowlab.train.TrainResult` objects (exact expected loss of ``ewb``) or
    transformer results (dicts with ``steps`` and ``losses``), logged at the same steps.
    ``unigram`` / ``bigram``: reference losses drawn as horizontal lines (red dashed / green dotted).
    The colour defaults to the initialisation's: guideline green, standard red.
    """
    runs = list(runs)
    if not runs:
        raise FlowlabInputError("training_curves needs at least one run")
    ax = _axes(ax)
    steps, values = _stack_runs([_run_curve(r) for r in runs], "training_curves")
    mean, std = values.mean(axis=0), values.std(axis=0)
    color = _init_color(runs, color)
    if label is None:
        label = f"{_run_field(runs[0], 'init')} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
    ax.plot(steps, mean, color=color, lw=1.8, label=label, gid="training:mean")
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.25, lw=0, gid="training:std")
    if unigram is not None:
        ax.axhline(unigram, ls="--", lw=1, color=COLORS["local"], gid="reference:unigram",
                   label=rf"unigram $h(\pi_1)$ = {unigram:.4f}")
    if bigram is not None:
        ax.axhline(bigram, ls=":", lw=1.2, color=COLORS["global"], gid="reference:bigram",
                   label=rf"bigram $H$ = {bigram:.4f}")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss [nats]")
    ax.legend(fontsize=LEGEND_FONTSIZE)
    return ax


#: Line styles of the matrices in :func:`rank_one_fractions`.
MATRIX_STYLES = {"W_V": "-", "W_1": "--"}


def rank_one_fractions(runs, *, ax=None, matrices=("W_V", "W_1"), label=None, color=None):
    """Mean +- std (over seeds) of sigma_1^2 / sum sigma_i^2 of W_V and W_1 against the training step.

    ``runs``: transformer results (dicts with ``steps`` and ``rank_one_fraction``). A fraction of 1
    means the matrix is rank one; an undefined fraction (all-zero matrix) is left out of the line.
    """
    import warnings

    runs = list(runs)
    if not runs:
        raise FlowlabInputError("rank_one_fractions needs at least one run")
    ax = _axes(ax)
    color = _init_color(runs, color)
    name = label or str(_run_field(runs[0], "init"))
    for m in matrices:
        curves = []
        for r in runs:
            frac = r["rank_one_fraction"].get(m) if isinstance(r, dict) else None
            if frac is None:
                raise FlowlabInputError(f"rank_one_fractions: a run has no rank-one fraction of {m!r}")
            curves.append((np.asarray(r["steps"], float), np.array([np.nan if v is None else v for v in frac], float)))
        steps, values = _stack_runs(curves, "rank_one_fractions")
        with warnings.catch_warnings():  # an all-NaN column (zero matrix in every run) stays NaN, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        ax.plot(steps, mean, color=color, ls=MATRIX_STYLES.get(m, "-."), lw=1.8, label=f"{name}: ${m}$",
                gid=f"rank_one:{m}")
        ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.18, lw=0)
    ax.axhline(1.0, color="0.4", lw=0.8, ls=":", gid="reference:rank_one")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("training step")
    ax.set_ylabel(r"$\sigma_1^2 / \sum_i \sigma_i^2$")
    ax.legend(fontsize=LEGEND_FONTSIZE)
    return ax


def figure4_panels(result, axes=None):
    """The Figure 4 reproduction from :func:`flowlab.train.figure4`'s result: returns the Axes used.

    Panels: (a) SGD on the canonical ``ewb`` (exact expected loss), (b) the transformer (held-out
    loss, when it was trained), (c) rank-one fractions of W_V and W_1 over the transformer's
    training. Mean +- std over the seeds; unigram and bigram losses as references.
    """
    chain = result["chain"]
    tr = result.get("transformer")
    n = 3 if tr else 1
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), layout="constrained", squeeze=False)
        axes = axes[0]
    axes = list(np.atleast_1d(axes))
    if len(axes) < n:
        raise FlowlabInputError(f"figure4_panels needs {n} axes, got {len(axes)}")
    h, H = chain.unigram_loss, chain.entropy_rate
    title = rf"$p={chain.p:g},\ q={chain.q:g}$"
    for i, init in enumerate(("standard", "guideline")):
        runs = result["canonical"][init]
        training_curves(runs, ax=axes[0], unigram=h if i == 0 else None, bigram=H if i == 0 else None)
    axes[0].set_title(f"(a) SGD on model ewb, {title}")
    axes[0].set_ylabel("exact expected loss [nats]")
    if tr:
        for i, init in enumerate(("standard", "guideline")):
            training_curves(tr[init], ax=axes[1], unigram=h if i == 0 else None, bigram=H if i == 0 else None)
        s = tr["standard"][0]["settings"]
        axes[1].set_title(f"(b) transformer (d={s['d']}, N={s['seq_len']}, {s['optimizer']}), {title}")
        axes[1].set_ylabel("validation loss [nats]")
        for init in ("standard", "guideline"):
            rank_one_fractions(tr[init], ax=axes[2])
        extra = result.get("transformer_adam")
        if extra:
            rank_one_fractions(extra, ax=axes[2], label="standard, Adam", color=COLORS["max"])
        axes[2].set_title("(c) low-rank check: energy in the top singular direction")
    return axes[:n]
