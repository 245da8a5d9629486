"""Figures of the ``ntp_order`` system (a reconstruction, MODELS.md §7), drawn from results only.

- :func:`figure2`: the six panels of the paper's Figure 2 as reconstructed: stage-1 loss,
  cos(W_ov, W_ov*), ‖W_ov‖; stage-2 loss, cos(W_kq, W_kq*), ‖W_kq‖ (with the fitted rates);
- :func:`partial_order`: one query's DAG, every token placed at its learned attention score
  W_kq[x, q] (so a learned order that respects the DAG has every arrow pointing down).

Every function takes ``ax=None`` (or ``axes=None``), returns the Axes and never calls ``show()``.
matplotlib is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

from flowlab.engine.errors import FlowlabInputError

STAGE_COLORS = {1: "#2166ac", 2: "#b2182b"}
FIT_STYLE = {"color": "black", "ls": "--", "lw": 1.0}


def _axes(ax, figsize=(4.2, 3.2)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, constrained_layout=True)[1]


def _fit_text(fit, fmt) -> str:
    if fit.value is None:
        return "fit: undetermined"
    return fmt.format(fit.value) + f"  ($R^2$ = {fit.r2:.4f})"


def stage_loss(trace, summary, *, stage: int, ax=None):
    """Loss against the iteration (log scale); with a positive infimum L_inf (stage-2 ``ce``) also
    the excess L_t − L_inf, whose geometric decay is the fitted rate."""
    ax = _axes(ax)
    ax.semilogy(trace.t, trace.loss, color=STAGE_COLORS[stage], lw=1.6, label="loss $L_t$")
    if trace.floor > 0:
        excess = trace.loss - trace.floor
        ok = excess > 0
        ax.semilogy(trace.t[ok], excess[ok], color=STAGE_COLORS[stage], lw=1.2, ls=":", label=r"$L_t - L_\infty$")
        ax.axhline(trace.floor, **FIT_STYLE, label=r"$L_\infty$ (attention on $x^*$)")
    ax.set_xlabel("iteration $t$" if trace.method != "flow" else "time $t$")
    ax.set_ylabel("loss" if stage == 2 else r"loss $L_0$")
    ax.set_title(f"stage {stage}: training loss", fontsize=10)
    ax.minorticks_off()
    ax.legend(fontsize=7.5, loc="lower left" if trace.floor > 0 else "upper right",
              title=_fit_text(summary.loss_rate, r"$L_t-L_\infty \propto r^t$, $r$ = {:.5f}"), title_fontsize=7.5)
    return ax


def stage_cos(trace, summary, *, stage: int, ax=None):
    """cos(W_t, W*) against the iteration, with an inset of 1 − cos on log-log axes and its fit."""
    ax = _axes(ax)
    if trace.dir_error is None:
        raise FlowlabInputError("the trace has no directional errors: train with the targets given")
    name = r"W_{ov}" if stage == 1 else r"W_{kq}"
    ax.plot(trace.t, 1.0 - trace.dir_error, color=STAGE_COLORS[stage], lw=1.6)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_ylim(min(0.0, float(np.min(1.0 - trace.dir_error))) - 0.02, 1.02)
    ax.set_xlabel("iteration $t$" if trace.method != "flow" else "time $t$")
    ax.set_ylabel(rf"$\cos({name}, {name}^*)$")
    ax.set_title(f"stage {stage}: direction (final cos = {1.0 - trace.dir_error[-1]:.5f})", fontsize=10)
    inset = ax.inset_axes([0.42, 0.12, 0.54, 0.5])
    ok = (trace.t > 0) & (trace.dir_error > 0)
    inset.loglog(trace.t[ok], trace.dir_error[ok], color=STAGE_COLORS[stage], lw=1.2)
    fit = summary.dir_rate
    if fit.value is not None:
        sel = ok & (trace.t >= fit.window[0])
        c = np.exp(np.mean(np.log(trace.dir_error[sel]) + fit.value * np.log(trace.t[sel])))
        inset.loglog(trace.t[sel], c * trace.t[sel] ** -fit.value, **FIT_STYLE)
    inset.set_title(_fit_text(fit, r"$1-\cos \propto t^{{-{:.3f}}}$"), fontsize=7)
    inset.tick_params(labelsize=6)
    inset.minorticks_off()  # log minor ticks add little here and dominate the drawing time
    inset.set_in_layout(False)
    return ax


def stage_norm(trace, summary, *, stage: int, ax=None):
    """‖W_t‖_F against the iteration with the fitted line."""
    ax = _axes(ax)
    name = r"W_{ov}" if stage == 1 else r"W_{kq}"
    ax.plot(trace.t, trace.norm, color=STAGE_COLORS[stage], lw=1.6, label=rf"$\|{name}\|_F$")
    fit = summary.norm_slope
    if fit.value is not None:
        ax.plot(trace.t, fit.value * trace.t + fit.intercept, **FIT_STYLE, label="linear fit")
    ax.set_xlabel("iteration $t$" if trace.method != "flow" else "time $t$")
    ax.set_ylabel(rf"$\|{name}\|_F$")
    ax.set_title(f"stage {stage}: norm", fontsize=10)
    ax.text(0.03, 0.95, _fit_text(fit, "slope {:.4g}"), transform=ax.transAxes, ha="left", va="top", fontsize=7.5)
    ax.legend(fontsize=7.5, loc="lower right")
    return ax


def figure2(result, axes=None):
    """The six panels (2 × 3 Axes) of Figure 2 (reconstructed) from an ``NtpOrderResult``."""
    if axes is None:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(12.0, 6.6), constrained_layout=True)
        s = result.settings
        fig.suptitle(f"ntp_order (reconstruction of Huang, Liang, Yang 2024): K = d = {s['vocab']}, "
                     f"{s['sentences']} sentences, {s['method']} GD, "
                     f"$\\eta_1$ = {s['lr1']:.4g}, $\\eta_2$ = {s['lr2']:.4g}", fontsize=11)
    axes = np.asarray(axes)
    if axes.shape != (2, 3):
        raise FlowlabInputError(f"figure2 needs a 2 x 3 grid of Axes, got shape {axes.shape}")
    for row, (trace, summary) in enumerate(((result.run.stage1, result.stage1), (result.run.stage2, result.stage2))):
        stage_loss(trace, summary, stage=row + 1, ax=axes[row, 0])
        stage_cos(trace, summary, stage=row + 1, ax=axes[row, 1])
        stage_norm(trace, summary, stage=row + 1, ax=axes[row, 2])
    return axes


def _hasse(C: np.ndarray) -> list[tuple[int, int]]:
    """The covering pairs (a, b) of a transitively closed strict order C (its transitive reduction)."""
    cover = C & ~((C.astype(np.int64) @ C.astype(np.int64)) > 0)
    return [(int(a), int(b)) for a, b in zip(*np.nonzero(cover))]


def _positions(nodes, edges, score) -> dict:
    """x: longest-path depth from the sources, spread within a layer; y: the learned score."""
    depth = {v: 0 for v in nodes}
    for _ in range(len(nodes)):
        changed = False
        for a, b in edges:
            if depth[b] < depth[a] + 1:
                depth[b], changed = depth[a] + 1, True
        if not changed:
            break
    pos = {}
    for d in set(depth.values()):
        layer = sorted((v for v in nodes if depth[v] == d), key=lambda v: score[v])
        for i, v in enumerate(layer):
            pos[v] = (d + (0.84 * (i / (len(layer) - 1) - 0.5) if len(layer) > 1 else 0.0), score[v])
    return pos


def partial_order(result, query: int | None = None, ax=None):
    """One query's strict order (the Hasse diagram of the closure of its DAG), each token placed at
    its learned attention score W_kq[x, q] (vertical) and its depth in the order (horizontal).

    ``query`` defaults to the query with the most DAG edges. Covering pairs a > b whose learned
    scores respect the order are drawn grey, the others red dashed; the title counts, over all
    pairs of the closure, those the learned scores reverse.
    """
    data, W = result.data, result.run.stage2.W
    if query is None:
        query = int(np.argmax([len(e) for e in data.orders]))
    if not 0 <= query < data.vocab:
        raise FlowlabInputError(f"query must be a token 0..{data.vocab - 1}, got {query}")
    C = data.closure[query]
    if not C.any():
        raise FlowlabInputError(f"the order of query {query} has no edges: nothing to draw")
    import matplotlib as mpl

    ax = _axes(ax, figsize=(7.6, 5.0))
    edges = _hasse(C)
    nodes = sorted({v for e in edges for v in e})
    score = {v: float(W[v, query]) for v in nodes}
    pos = _positions(nodes, edges, score)
    norm = mpl.colors.Normalize(min(score.values()), max(score.values()))
    cmap = mpl.colormaps["viridis"]
    for a, b in edges:
        ok = score[a] > score[b]
        ax.annotate("", xy=pos[b], xytext=pos[a], zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": "0.45" if ok else "#b2182b", "lw": 0.9,
                                "ls": "-" if ok else "--", "shrinkA": 9, "shrinkB": 9})
    for v in nodes:
        ax.scatter(*pos[v], s=250, color=cmap(norm(score[v])), edgecolor="black", zorder=2)
        ax.text(*pos[v], str(v), ha="center", va="center", fontsize=7, zorder=3,
                color="white" if norm(score[v]) < 0.5 else "black")
    if query in pos:
        ax.scatter(*pos[query], s=520, facecolor="none", edgecolor="#b2182b", lw=1.5, zorder=2,
                   label=f"the query token {query}")
        ax.legend(fontsize=8, loc="upper right")
    pairs = np.argwhere(C)
    reversed_ = int(sum(W[a, query] <= W[b, query] for a, b in pairs))
    ax.set_xlabel("depth in the order (longest chain above the token)")
    ax.set_ylabel(rf"learned attention score $W_{{kq}}[x, {query}]$")
    ax.set_xticks(sorted({round(p[0]) for p in pos.values()}))
    ax.set_title(f"query {query}: Hasse diagram of the closure ({len(edges)} covering pairs $a \\succ b$)\n"
                 f"learned scores reverse {reversed_} of {len(pairs)} ordered pairs", fontsize=9)
    ax.figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="learned score")
    return ax
