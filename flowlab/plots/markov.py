"""Figures of the Markov system. Every function takes ``ax=None``, returns the Axes and never calls ``show()``.

Figures draw results and run no analysis: the planes, critical sets, separatrices, slices and
3-D flows they show are computed by :mod:`flowlab.systems.markov.landscape` (Landscape,
CriticalOverlay, Slice, Flows3D), the paths by the flow (FlowResult), the basins by
:func:`~flowlab.systems.markov.basins.basin_grid` (BasinGrid). This module imports nothing of a system.

One visual language across all figures (module constants below): global minima and the basin
I* in green, non-global (unigram) minima and the basin I_min in red, local maxima in blue,
saddles black, undetermined grey; the separatrix is a black dash-dot line. Parameters are
written as ``$e$``, ``$w$``, ``$b$`` and both axes of a parameter plane have equal scales.

Artists carry a ``gid`` saying what they show (``"critical:<kind>"``, ``"energy"``,
``"separatrix"``, ``"field"``, ``"basins"``, ``"basins:boundary"``, ``"trajectory"``,
``"trajectory:inset"``, ``"loss"``, ``"training:seed"``), so figures can be checked. Figures of several
panels share one legend (:func:`figure_legend`); smooth curves come from the results (the flow's
dense output, the surfaces of :class:`~flowlab.systems.markov.landscape.SurfacePiece`), never from
an analysis run here.
"""

from __future__ import annotations

import weakref

import numpy as np

from flowlab.engine.errors import FlowlabInputError

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
            # below the cube: the z axis label, which overhangs the axes' box on the right, stays clear
            leg = fig.legend(hs, ls, loc="outside lower center", fontsize=LEGEND_FONTSIZE, frameon=False,
                             handlelength=2.6, ncol=3 if len(hs) > 4 else len(hs), columnspacing=1.4)
            _FIGURE_LEGEND[ax] = leg
            return leg
        return ax.legend(hs, ls, loc="upper left", fontsize=LEGEND_FONTSIZE, framealpha=0.85, handlelength=2.6)
    below = offset_copy(ax.transAxes, fig=ax.figure, y=-LEGEND_OFFSET_PT, units="points")
    ncol = 3 if len(hs) >= 5 else min(len(hs), 2)
    return ax.legend(hs, ls, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=ncol,
                     fontsize=LEGEND_FONTSIZE, frameon=False, handlelength=2.6, columnspacing=1.2)


def figure_legend(fig, axes, *, ncol=4):
    """One legend for a figure of several panels: every panel's entries, each text once, below the panels
    (placed by the constrained layout engine). Panel legends are removed. Returns the legend."""
    hs, ls = [], []
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for h, lab in [*zip(handles, labels), *_extras(ax)]:
            if lab not in ls:
                hs.append(h)
                ls.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for old in list(fig.legends):
        old.remove()
    return fig.legend(hs, ls, loc="outside lower center", ncol=min(ncol, max(len(hs), 1)), fontsize=LEGEND_FONTSIZE + 1,
                      frameon=False, handlelength=2.6, columnspacing=1.6)


def _set_label(s) -> str:
    """Legend text of a critical set (an OverlaySet): words, with the model it realises when the loss says so."""
    suffix = " (unigram)" if s.unigram else ""
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


def _require(obj, attrs, what: str, hint: str):
    """Refuse an argument that is not the result a figure draws (duck typing: the attributes it reads)."""
    missing = [a for a in attrs if not hasattr(obj, a)]
    if missing:
        raise FlowlabInputError(f"{what} must be {hint}; got {type(obj).__name__} without {', '.join(missing)}")


def _joined(lines, ncols):
    """Polylines as one array, separated by NaN rows (one artist per set)."""
    parts = []
    for line in lines:
        if parts:
            parts.append(np.full((1, ncols), np.nan))
        parts.append(line)
    return np.concatenate(parts) if parts else np.zeros((0, ncols))


# ------------------------------------------------------------------------ critical sets
OVERLAY_HINT = "a CriticalOverlay (flowlab.systems.markov.landscape.overlay of a CriticalResult)"


def _draw_set(ax, s, st, dims, three_d, gid, lab):
    """One critical set: markers for points, a NaN-separated polyline for a 1-D set, else a scatter/surface."""
    pts = np.asarray(s.points, dtype=np.float64)
    cols = [pts[:, i] for i in dims]
    if s.dimension == 0 or len(pts) == 1:
        ax.plot(*cols, ls="none", marker=st["marker"], ms=st["ms"], color=st["color"], mec="white", mew=1.2,
                zorder=st["zorder"] + 2, gid=gid, label=lab)
    elif s.dimension == 1:
        xyz = _joined(s.lines, pts.shape[1])
        ax.plot(*[xyz[:, i] for i in dims], color=st["color"], ls=st["ls"], lw=st["lw"], zorder=st["zorder"],
                solid_capstyle="round", gid=gid, label=lab)
    elif three_d and s.surfaces:
        for piece in s.surfaces:
            artist = _draw_piece(ax, piece, dims, st["color"])
            artist.set_gid(gid)
        if lab:
            _add_extra(ax, _surface_proxy(st["color"]), lab, artist)
    elif three_d:  # a 2-D set without smooth pieces: its samples
        ax.scatter(*cols, s=6, color=st["color"], alpha=0.4, depthshade=False, gid=gid, label=lab)
    else:
        ax.scatter(*cols, s=6, color=st["color"], alpha=0.45, zorder=st["zorder"], gid=gid, label=lab, linewidths=0)


#: Opacity of the surfaces of 2-D critical sets in 3-D.
SURFACE_ALPHA = 0.32


def _surface_proxy(color):
    from matplotlib.patches import Patch

    return Patch(facecolor=color, alpha=SURFACE_ALPHA + 0.1, edgecolor=color)


def _draw_piece(ax, piece, dims, color):
    """One SurfacePiece on 3-D axes: a graph as a surface (NaN where the branch is absent), a planar
    region as a filled contour {field > 0} in its plane."""
    V, U = np.meshgrid(np.asarray(piece.v, float), np.asarray(piece.u, float), indexing="ij")
    others = [i for i in range(3) if i != piece.axis]
    coords = {others[0]: U, others[1]: V}
    if piece.shape == "graph":
        pts = np.asarray(piece.points, float)
        # rasterized in vector formats (at the figure's dpi): thousands of shaded quads are slow to write and to view
        return ax.plot_surface(*[pts[..., i] for i in dims], color=color, alpha=SURFACE_ALPHA, linewidth=0,
                               shade=True, antialiased=True, rstride=1, cstride=1, rasterized=True)
    # mplot3d's contourf contours the argument in the slot of ``zdir`` over the other two
    field = np.asarray(piece.field, float)
    coords[piece.axis] = field
    top = float(np.nanmax(field))
    return ax.contourf(*[coords[i] for i in dims], levels=[0.0, top * (1 + 1e-9) + 1e-300],
                       zdir="xyz"[dims.index(piece.axis)], offset=piece.offset, colors=[color], alpha=SURFACE_ALPHA)


def critical_overlay(overlay, ax=None, *, dims=(0, 1), label=True):
    """Draw the critical sets of a CriticalOverlay on 2-D axes (or 3-D axes with three ``dims``).

    ``overlay``: :func:`flowlab.systems.markov.landscape.overlay` of a CriticalResult (the
    ``overlay`` of a Landscape, Slice or Flows3D). Sets of dimension 1 become lines (its
    polylines: separate branches kept apart), points become markers, higher-dimensional sets a
    scatter (a translucent surface in 3-D). One artist per set, with gid ``"critical:<kind>"``;
    with ``label`` each legend text appears once.
    """
    _require(overlay, ("params", "sets"), "the critical sets", OVERLAY_HINT)
    if any(not hasattr(s, "lines") for s in overlay.sets):
        raise FlowlabInputError(f"the critical sets must be {OVERLAY_HINT}; a CriticalResult's samples are not drawn")
    dims = tuple(int(i) for i in dims)
    n = len(overlay.params)
    if len(dims) not in (2, 3) or len(set(dims)) != len(dims) or not all(0 <= i < n for i in dims):
        raise FlowlabInputError(f"dims must pick 2 or 3 distinct columns of {list(overlay.params)}, got {dims}")
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
    present = _labels_on(ax) if label else set()
    for s in overlay.sets:
        text = _set_label(s)
        lab = text if label and text not in present else None
        if lab:
            present.add(lab)
        if len(s.points) == 0:
            continue
        _draw_set(ax, s, KIND_STYLE.get(s.kind, KIND_STYLE["degenerate"]), dims, three_d, f"critical:{s.kind}", lab)
    if label:
        _legend(ax)
    return ax


# ---------------------------------------------------------------------- energy landscape
LANDSCAPE_HINT = "a Landscape (flowlab.systems.markov.landscape.landscape)"


def _draw_separatrix(ax, land):
    """The separatrix of a Landscape: its stable branches at each saddle level, one contour set (gid "separatrix").

    The contour set of E at the saddle levels is drawn on the landscape's grid, and its paths are
    replaced by the branches along which the flow runs into a saddle. None when there is no saddle.
    """
    from matplotlib.lines import Line2D
    from matplotlib.path import Path

    if not land.separatrix:
        return None
    X, Y = np.meshgrid(land.x, land.y)
    E = np.ma.masked_invalid(land.values)
    cs = ax.contour(X, Y, E, levels=[s.level for s in land.separatrix], colors=SEPARATRIX_STYLE["color"],
                    linestyles=SEPARATRIX_STYLE["ls"], linewidths=SEPARATRIX_STYLE["lw"], zorder=2.5)
    cs.set_paths([Path.make_compound_path(*[Path(b) for b in s.branches]) if s.branches else Path(np.zeros((0, 2)))
                  for s in land.separatrix])
    cs.set_gid("separatrix")
    _add_extra(ax, Line2D([], [], color=SEPARATRIX_STYLE["color"], ls=SEPARATRIX_STYLE["ls"],
                          lw=SEPARATRIX_STYLE["lw"]), "separatrix", cs)
    return cs


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




def _sides_of_undefined_lines(x, y, Z):
    """The grid split at rows/columns where Z is undefined everywhere (E on w = 0): blocks (x, y, Z),
    each carried up to the line with its own side's adjacent values (so no blank band is left), and
    the lines [(axis, value)] (axis 1: a row, y = value; axis 0: a column, x = value)."""
    blocks = [(x, y, Z)]
    cuts = []
    for axis in (1, 0):  # rows (y) first, then columns (x)
        out = []
        for bx, by, bz in blocks:
            coord = by if axis == 1 else bx
            vals = bz if axis == 1 else bz.T
            dead = np.flatnonzero(np.all(~np.isfinite(vals), axis=1))
            dead = [int(i) for i in dead if 0 < i < len(coord) - 1]
            edges = [-1, *dead, len(coord)]
            for i in dead:
                cuts.append((axis, float(coord[i])))
            for a, b in zip(edges[:-1], edges[1:]):
                lo, hi = max(a, 0), min(b, len(coord) - 1)
                piece = vals[lo:hi + 1].copy()
                if a >= 0:
                    piece[0] = piece[1]
                if b < len(coord):
                    piece[-1] = piece[-2]
                sub = coord[lo:hi + 1]
                out.append((bx, sub, piece) if axis == 1 else (sub, by, piece.T))
        blocks = out
    return [(np.meshgrid(bx, by)[0], np.meshgrid(bx, by)[1], bz) for bx, by, bz in blocks], cuts


def energy_landscape(landscape, *, ax=None, levels=24, legend=True):
    """The conserved energy E over a 2-parameter plane (paper Fig. 1 a/c), or the loss without E.

    ``landscape``: a :class:`~flowlab.systems.markov.landscape.Landscape`. Filled contours of E
    (``levels`` about this many, clipped to its 2..98 percentiles; a line where E is undefined, w = 0,
    is drawn as a thin grey line, each side filled up to it, with a legend entry) with a
    colour bar, the direction field of the flow -grad L/|grad L| (when the landscape has one), the
    separatrix (the branches of the level of E through the saddle along which the flow runs into
    it: the boundary of the basins) and the critical sets. Without an invariant E the filled
    contours show the loss, with quantile levels.
    """
    from matplotlib.colors import BoundaryNorm
    from matplotlib.lines import Line2D

    _require(landscape, ("x", "y", "values", "quantity", "direction", "overlay", "separatrix"), "landscape",
             LANDSCAPE_HINT)
    land = landscape
    ax = _axes(ax, figsize=(5.8, 5.9))
    xn, yn = land.params
    X, Y = np.meshgrid(land.x, land.y)
    has_energy = land.quantity == "E"
    Z = np.ma.masked_invalid(land.values)
    cbar_label = rf"$E({xn},{yn})$" if has_energy else r"$L$ [nats]"
    lv = _color_levels(Z, levels, [s.level for s in land.separatrix], equalise=not has_energy)
    cmap = _energy_cmap()
    norm = BoundaryNorm(lv, cmap.N, extend="both")  # every band its own shade, even for uneven levels
    blocks, cuts = _sides_of_undefined_lines(np.asarray(land.x, float), np.asarray(land.y, float),
                                             np.asarray(land.values, float))
    cf = None
    for bx, by, bz in blocks:  # each side of a line where E is undefined filled up to the line
        part = ax.contourf(bx, by, np.ma.masked_invalid(bz), levels=lv, cmap=cmap, norm=norm, extend="both",
                           zorder=0)
        part.set_gid("energy" if cf is None else "energy:side")
        cf = cf or part
    for axis, value in cuts:
        line = (ax.axhline if axis == 1 else ax.axvline)(value, color="0.45", lw=0.8, zorder=0.5, gid="undefined")
        _add_extra(ax, Line2D([], [], color="0.45", lw=0.8), rf"${(xn, yn)[axis]}=0$: $E$ undefined", line)
    cax = ax.inset_axes([1.035, 0.0, 0.045, 1.0])  # follows the axes' box (equal aspect) exactly
    cbar = ax.figure.colorbar(cf, cax=cax)
    cbar.set_label(cbar_label)
    if land.direction is not None:
        _direction_field(ax, land.direction)
    if has_energy:
        _draw_separatrix(ax, land)
    if land.overlay is not None:
        critical_overlay(land.overlay, ax, dims=(0, 1), label=True)
    ax.set_xlim(*land.box[xn])
    ax.set_ylim(*land.box[yn])
    ax.set_xlabel(_tex(xn))
    ax.set_ylabel(_tex(yn))
    ax.set_aspect("equal")
    ax.set_title(_chain_title(land.chain))
    if legend:
        _legend(ax)
    return ax


def _direction_field(ax, field):
    """A DirectionField as streamlines or arrows (gid "field"); nothing drawn where grad L = 0."""
    x, y, U, V, still = field.x, field.y, field.u, field.v, np.asarray(field.still, bool)
    if field.kind == "stream":
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
    X, Y = np.meshgrid(x, y)
    m = len(x)
    q = ax.quiver(X, Y, np.ma.masked_where(still, U), np.ma.masked_where(still, V), color="0.30", alpha=0.75,
                  angles="xy", pivot="mid", scale=1.6 * m, width=0.0022, headwidth=3.5, zorder=1)
    q.set_gid("field")
    return q


# -------------------------------------------------------------------------- basin map
BASIN_BOUNDARY_STYLE = {"color": "black", "ls": "--", "lw": 1.2}


def _basin_fill(ax, label, x, y):
    """The labels as filled bands of the label field over the grid points, first parameter along x
    (gid "basins"): a boundary runs between the grid points whose labels differ (no pixel staircase).
    Returns the contour set, the extent drawn and the legend patches."""
    from matplotlib.patches import Patch

    colors = [COLORS["undetermined"], COLORS["local"], COLORS["global"]]
    cs = ax.contourf(x, y, label.T.astype(np.float64), levels=[-1.5, -0.5, 0.5, 1.5], colors=colors,
                     alpha=BASIN_ALPHA, zorder=0, antialiased=True)
    cs.set_gid("basins")
    patches = [(Patch(facecolor={1: COLORS["global"], 0: COLORS["local"], -1: COLORS["undetermined"]}[v],
                      alpha=BASIN_ALPHA, edgecolor="none"), BASIN_LABELS[v])
               for v in (1, 0, -1) if v != -1 or np.any(label == -1)]
    return cs, (x[0], x[-1], y[0], y[-1]), patches


def _basin_boundary(ax, label, x, y):
    """Where the labels change from 0 (non-global) to 1 (global): the 1/2 contour of the label field
    (gid "basins:boundary"), drawn on a slice, which has no separatrix of E; None where there is none."""
    from matplotlib.lines import Line2D

    field = np.where(label >= 0, label, np.nan).T.astype(np.float64)
    if not (np.any(field == 0) and np.any(field == 1)):
        return None
    cs = ax.contour(x, y, np.ma.masked_invalid(field), levels=[0.5], colors=BASIN_BOUNDARY_STYLE["color"],
                    linestyles=BASIN_BOUNDARY_STYLE["ls"], linewidths=BASIN_BOUNDARY_STYLE["lw"], zorder=2.5)
    cs.set_gid("basins:boundary")
    _add_extra(ax, Line2D([], [], **BASIN_BOUNDARY_STYLE), "basin boundary (between grid labels)", cs)
    return cs


def _check_basin_overlay(landscape, grid, free, sliced):
    """The overlay of a basin map must be the grid's: a Slice of the same slice, or a Landscape of the plane."""
    if sliced:
        _require(landscape, ("fixed", "overlay"), "the overlay of a slice",
                 "a Slice (flowlab.systems.markov.landscape.basin_landscape of the grid)")
        if dict(landscape.fixed) != sliced or tuple(landscape.params) != tuple(free):
            raise FlowlabInputError(f"the Slice is at {dict(landscape.fixed)} over {list(landscape.params)}; "
                                    f"the grid at {sliced} over {free}")
    else:
        _require(landscape, ("values", "separatrix", "overlay"), "the overlay of a basin map",
                 "a Landscape (flowlab.systems.markov.landscape.basin_landscape of the grid)")
        if tuple(landscape.params) != tuple(free):
            raise FlowlabInputError(f"the Landscape is over {list(landscape.params)}; the grid over {free}")


def basin_map(grid, *, landscape=None, ax=None, separatrix=True, legend=True):
    """The labels of a 2-D BasinGrid as filled bands (paper Fig. 1 b/d), with separatrix and critical sets.

    The bands are the filled contours of ``grid.label`` over the grid points (1 global -> green,
    0 non-global -> red, -1 undetermined -> grey; boundaries run between grid points whose labels
    differ, not along pixel edges), first parameter along x. Where no separatrix of E is drawn (a
    slice, a model without E) the boundary between labels 0 and 1 is drawn as a dashed line. ``landscape``:
    :func:`flowlab.systems.markov.landscape.basin_landscape` of the grid (None: the labels only);
    for a full 2-parameter grid a Landscape, whose separatrix is drawn unless ``separatrix`` is
    False and whose critical sets are overlaid; for a slice (a grid with fixed parameters) a
    Slice, the full model's critical sets where they meet the slice (nothing when none could be
    vouched for).
    """
    label = np.asarray(grid.label)
    free = [n for n in grid.params if len(grid.axes[n]) > 1]
    if len(free) != 2:
        raise FlowlabInputError(
            f"basin_map draws a 2-D grid or a 2-D slice; this one has shape {label.shape} over {list(grid.params)}"
        )
    sliced = {n: float(grid.axes[n][0]) for n in grid.params if n not in free}
    if landscape is not None:
        _check_basin_overlay(landscape, grid, free, sliced)
    label = label.reshape([len(grid.axes[n]) for n in free])
    ax = _axes(ax, figsize=(5.4, 5.9))
    xn, yn = free
    gx, gy = np.asarray(grid.axes[xn], float), np.asarray(grid.axes[yn], float)
    im, extent, patches = _basin_fill(ax, label, gx, gy)
    if separatrix and not sliced and landscape is not None and landscape.quantity == "E":
        _draw_separatrix(ax, landscape)
    elif separatrix:
        _basin_boundary(ax, label, gx, gy)
    for handle, text in patches:
        _add_extra(ax, handle, text, im)
    if landscape is not None and landscape.overlay is not None:
        critical_overlay(landscape.overlay, ax, dims=(0, 1), label=True)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel(_tex(xn))
    ax.set_ylabel(_tex(yn))
    ax.set_aspect("equal")
    title = _chain_title(grid.chain)
    if sliced:
        title += ",  " + ", ".join(f"${k} = {v:g}$" for k, v in sliced.items())
    ax.set_title(title)
    if legend:
        _legend(ax)
    return ax


def figure1_panels(rows, axes=None):
    """The paper's Figure 1: per row (one chain) the energy landscape and the basin map, one legend for all.

    ``rows``: (Landscape, BasinGrid, its :func:`~flowlab.systems.markov.landscape.basin_landscape`)
    per chain. Panels are lettered (a), (b), ... row by row; the legend (each entry once, including
    the line w = 0 where E is undefined) sits below the panels. Returns the axes, shape (n, 2).
    """
    rows = list(rows)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(len(rows), 2, figsize=(10.6, 4.9 * len(rows) + 0.6), layout="constrained",
                               squeeze=False)
    axes = np.asarray(axes, dtype=object).reshape(len(rows), 2)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for (plane, grid, basins), (left, right) in zip(rows, axes):
        energy_landscape(plane, ax=left, legend=False)
        basin_map(grid, landscape=basins, ax=right, legend=False)
        left.set_title(f"({next(letters)}) energy and flow, " + left.get_title())
        right.set_title(f"({next(letters)}) basins, " + right.get_title())
    figure_legend(axes[0, 0].figure, axes.ravel(), ncol=5)
    return axes


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




#: A path whose extent is below this fraction of the axes' span is shown again in an inset.
SMALL_PATH = 0.02


def _zoom_small_paths(ax, results, overlay, bounds):
    """An inset (gid "trajectory:inset") magnifying the paths too small to see at the axes' scale (e.g.
    a flow from a small initialisation that ends on the unigram line near the origin), with the
    critical sets; the magnified region is marked on the axes. None when every path is visible."""
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    span = max(abs(xlim[1] - xlim[0]), abs(ylim[1] - ylim[0]))
    small = [r for r in results if np.ptp(np.asarray(r.theta, float)[:, :2], axis=0).max() < SMALL_PATH * span]
    if not small:
        return None
    pts = np.concatenate([np.asarray(r.theta, float)[:, :2] for r in small])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    half = 0.5 * max(float(np.max(hi - lo)) * 1.25, 1e-3 * span)
    mid = 0.5 * (lo + hi)
    ins = ax.inset_axes(bounds)
    ins.set_gid("trajectory:inset")
    if overlay is not None:
        critical_overlay(overlay, ins, dims=(0, 1), label=False)
    _draw_paths(ins, small, (0, 1))
    ins.set_xlim(mid[0] - half, mid[0] + half)
    ins.set_ylim(mid[1] - half, mid[1] + half)
    ins.set_aspect("equal")
    ins.tick_params(labelsize=6.5, length=2, pad=1.5)
    ins.locator_params(nbins=3)
    ins.set_facecolor("white")
    ins.set_title(f"zoom: {len(small)} short path{'s' if len(small) > 1 else ''}", fontsize=7, pad=2)
    ax.indicate_inset_zoom(ins, edgecolor="0.2")
    return ins


def trajectories(results, *, ax=None, background=None, overlay=None, extent=None, inset=True):
    """Paths of FlowResults in the plane of their first two parameters, coloured by what they reached.

    ``background``: a Landscape (:func:`flowlab.systems.markov.landscape.landscape`) drawn
    underneath with :func:`energy_landscape` (its box sets the limits); otherwise ``overlay`` (a
    CriticalOverlay), when given, is drawn and ``extent`` ({name: (lo, hi)}) sets the limits.
    ``inset``: paths too small to see (under 2 % of the axes' span) are magnified in an inset (True:
    upper left; or its bounds [x, y, width, height] in axes fractions; False: none).
    """
    results = list(results)
    if not results:
        raise FlowlabInputError("trajectories needs at least one FlowResult")
    if background is not None:
        _require(background, ("x", "y", "values", "overlay"), "background", f"None or {LANDSCAPE_HINT}")
    ax = _axes(ax, figsize=(5.8, 5.9) if background is not None else (5.6, 5.9))
    params = results[0].params
    if background is not None:
        energy_landscape(background, ax=ax)
    elif overlay is not None:
        critical_overlay(overlay, ax, dims=(0, 1), label=True)
    _draw_paths(ax, results, (0, 1))
    if background is None:
        if extent is not None:
            ax.set_xlim(*extent[params[0]])
            ax.set_ylim(*extent[params[1]])
        ax.set_title(_chain_title(results[0].chain))
    if inset:
        _zoom_small_paths(ax, results, background.overlay if background is not None else overlay,
                          [0.13, 0.60, 0.34, 0.34] if inset is True else inset)
    ax.set_xlabel(_tex(params[0]))
    ax.set_ylabel(_tex(params[1]))
    ax.set_aspect("equal")
    _legend(ax)
    return ax


#: Default view of a 3-D figure (elevation, azimuth in degrees).
VIEW_3D = (22.0, -58.0)


def _data_limits(flows, pad=0.04):
    """Per parameter: the range of what is drawn (paths and critical sets), padded, but not beyond the
    flows' box unless something drawn is."""
    drawn = [np.asarray(r.theta, float) for r in flows.flows]
    if flows.overlay is not None:
        drawn += [np.asarray(s.points, float) for s in flows.overlay.sets if len(s.points)]
    allpts = np.concatenate(drawn)
    out = []
    for i, p in enumerate(flows.params):
        col = allpts[:, i][np.isfinite(allpts[:, i])]
        dmin, dmax = float(np.min(col)), float(np.max(col))
        width = max(dmax - dmin, 1e-9)
        out.append((max(dmin - pad * width, min(flows.box[p][0], dmin)),
                    min(dmax + pad * width, max(flows.box[p][1], dmax))))
    return out


def flow_3d(flows, *, ax=None, view=VIEW_3D, legend=True):
    """Gradient flows of a 3-parameter model (e.g. ewb) with its critical sets, in 3-D.

    ``flows``: a :class:`~flowlab.systems.markov.landscape.Flows3D`
    (:func:`flowlab.systems.markov.landscape.flows_3d`). A 2-D critical set is drawn as its smooth
    pieces (each branch of {D = D*} its own surface, a planar set as a filled region). The drawn box
    covers every path and critical set, within the flows' box where the data fill less of it;
    ``view``: (elevation, azimuth) in degrees.
    """
    _require(flows, ("flows", "overlay", "box", "params"), "flows",
             "a Flows3D (flowlab.systems.markov.landscape.flows_3d)")
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure(figsize=(7.2, 6.6), layout="constrained").add_subplot(projection="3d")
        _OWN_3D.add(ax)
    elif getattr(ax, "name", "") != "3d":
        raise FlowlabInputError("flow_3d needs a 3-D axes (add_subplot(projection='3d'))")
    if flows.overlay is not None:
        critical_overlay(flows.overlay, ax, dims=(0, 1, 2), label=True)
    _draw_paths(ax, flows.flows, (0, 1, 2))
    setters = (ax.set_xlim, ax.set_ylim, ax.set_zlim)
    labels = (ax.set_xlabel, ax.set_ylabel, ax.set_zlabel)
    for setter, label, lim, p in zip(setters, labels, _data_limits(flows), flows.params):
        label(_tex(p), labelpad=2)
        setter(*lim)
    ax.view_init(*view)
    ax.set_box_aspect((1.0, 1.0, 0.9), zoom=0.96)
    ax.set_title(f"model {flows.model.name}, " + _chain_title(flows.chain), pad=0)
    if legend:
        _legend(ax)
    return ax


# ---------------------------------------------------------------------------- loss curve
def _loss_path(result):
    """(t, loss) of a flow: the dense samples of the solver's interpolant when the flow has them, else its steps."""
    if getattr(result, "dense_t", None) is not None:
        return np.asarray(result.dense_t, float), np.asarray(result.dense_loss, float)
    return np.asarray(result.t, float), np.asarray(result.loss, float)


#: Smallest excess loss L - H drawn on the log axis of ``loss_curve(..., excess=True)`` (below: rounding).
EXCESS_FLOOR = 1e-13


def loss_curve(result, ax=None, *, label: str | None = None, references: bool = True, linestyle: str = "-",
               excess: bool = False):
    """Loss along a flow (log time axis) with the unigram and bigram losses as references.

    The curve is the flow's dense output when it has one (``gradient_flow(..., dense_output=N)``: the
    solver's interpolant sampled, smooth between steps), else straight segments between its steps.
    ``excess``: draw L - H (log axis, floored at :data:`EXCESS_FLOOR`) instead of L, so that flows near
    either level use the panel's height; the unigram reference is then h(pi1) - H.
    """
    ax = _axes(ax)
    t, loss = _loss_path(result)
    chain = result.chain
    color = COLORS[result.reached]
    y = np.maximum(loss - chain.entropy_rate, EXCESS_FLOOR) if excess else loss
    ax.plot(t, y, color=color, ls=linestyle, lw=1.8, gid="loss",
            label=label or f"{result.model.name}, reached {result.reached}")
    if references:
        gap = chain.unigram_loss - chain.entropy_rate
        ax.axhline(gap if excess else chain.unigram_loss, ls="--", lw=1, color=COLORS["local"],
                   label=(rf"unigram $h(\pi_1) - H$ = {gap:.4f}" if excess
                          else rf"unigram $h(\pi_1)$ = {chain.unigram_loss:.4f}"))
        if not excess:
            ax.axhline(chain.entropy_rate, ls=":", lw=1.2, color=COLORS["global"],
                       label=rf"bigram $H$ = {chain.entropy_rate:.4f}")
    ax.set_xscale("symlog", linthresh=0.1)  # linear near t = 0, logarithmic after
    ax.set_xlabel(r"flow time $t$")
    if excess:
        ax.set_yscale("log")
        ax.set_ylabel(r"excess loss $L(\theta(t)) - H$ [nats]")
    else:
        ax.set_ylabel(r"loss $L(\theta(t))$ [nats]")
    ax.legend(fontsize=8)
    return ax


# ------------------------------------------------------------------- training checks
#: Colours of the training initialisations: the guideline reaches the global minimum, the standard one is stuck.
INIT_COLORS = {"guideline": COLORS["global"], "standard": COLORS["local"]}


def _run_field(run, name):
    """A field of a training run: a flowlab.systems.markov.train.TrainResult (attribute) or a transformer result (dict)."""
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
    """Mean +- std (over seeds, a band) and every seed (thin lines) of the loss against the training step,
    for runs of one initialisation.

    ``runs``: :class:`flowlab.systems.markov.train.TrainResult` objects (exact expected loss of ``ewb``) or
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
        n, init = len(runs), _run_field(runs[0], "init")
        label = (rf"{init}: {n} seeds (thin), mean $\pm$ std; final {mean[-1]:.4f} $\pm$ {std[-1]:.1e}" if n > 1
                 else f"{init} (1 seed)")
    for run in values:  # every seed as a thin line: the spread stays visible when the band is thin
        ax.plot(steps, run, color=color, lw=0.7, alpha=0.55, gid="training:seed")
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
    """The Figure 4 reproduction from :func:`flowlab.systems.markov.train.figure4`'s result: returns the Axes used.

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
