"""Figures of the co-occurrence system (MODELS.md §6). Every function takes ``ax=None`` (or
``axes=None``), draws results it is given (a Trajectory, claims, a scaling result), runs no analysis
and returns the Axes. Time is gradient-flow time t (for gradient descent: epoch × learning rate),
on a logarithmic axis so that Phase 1 (t ≲ 1/m) and Phase 2 are both visible; the phase boundary
T₁ is a dashed vertical line.
"""

from __future__ import annotations

import numpy as np

#: The four claimed attention correlations (solid) and the two others among μ_1..μ_3 (dashed).
ATTENTION_PAIRS = (((1, 0), "#1b7837", "-"), ((0, 1), "#5aae61", "-"), ((2, 0), "#b2182b", "-"),
                   ((2, 1), "#ef8a62", "-"), ((0, 2), "#2166ac", "--"), ((1, 2), "#67a9cf", "--"))
TYPE_COLORS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
TYPE_NAMES = (r"$I_1$ (both)", r"$I_2$ (only $\mu_1$)", r"$I_3$ (only $\mu_2$)", r"$I_4$ (neither)")
FONTSIZE = 8
TIME_LABEL = r"flow time $t$ (= epochs $\times$ lr)"


def _axes(ax, figsize=(3.5, 3.1)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def _positive_times(traj):
    keep = traj.t > 0
    return keep, traj.t[keep]


def _phase_line(ax, T1):
    """The phase boundary T₁ with the two phase names (nothing when T₁ is None)."""
    if T1 is None:
        return
    ax.axvline(T1, color="black", ls="--", lw=1.0, gid="phase-boundary")
    y = 0.02
    for text, ha in (("Phase 1 ", "right"), (" Phase 2", "left")):
        ax.text(T1, y, text, transform=ax.get_xaxis_transform(), ha=ha, va="bottom", fontsize=FONTSIZE - 1,
                style="italic")


def _finish(ax, ylabel, ncol=1):
    ax.set_xscale("log")
    ax.set_xlabel(TIME_LABEL, fontsize=FONTSIZE)
    ax.set_ylabel(ylabel, fontsize=FONTSIZE)
    ax.tick_params(labelsize=FONTSIZE)
    # below the axes (clear of every curve), as in flowlab.plots.markov
    ax.legend(fontsize=FONTSIZE - 1, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              columnspacing=1.0, handlelength=1.8)
    return ax


def attention_correlations(traj, *, T1=None, ax=None):
    """Figure 1(a): μ_iᵀ W_Kᵀ W_Q μ_j over training (claimed to rise: green; to fall: red)."""
    ax = _axes(ax)
    keep, t = _positive_times(traj)
    for (i, j), color, ls in ATTENTION_PAIRS:
        ax.plot(t, traj.attention[keep, i, j], color=color, ls=ls, lw=1.4, gid=f"attention:{i}{j}",
                label=rf"$\mu_{i + 1}^\top W_K^\top W_Q\,\mu_{j + 1}$")
    if np.ptp(traj.attention, axis=0).max() == 0.0:
        ax.text(0.5, 0.5, f"attention frozen ({traj.engine} engine)", transform=ax.transAxes, ha="center",
                fontsize=FONTSIZE)
    _phase_line(ax, T1)
    ax.set_title("(a) attention score correlation", fontsize=FONTSIZE + 1)
    return _finish(ax, "score correlation (dimensionless)", ncol=2)


def training_loss(traj, *, T1=None, ax=None):
    """Figure 1(b): the training loss, total and per type (mean over the samples of the type)."""
    ax = _axes(ax)
    keep, t = _positive_times(traj)
    ax.plot(t, traj.loss[keep], color="#1f77b4", lw=2.0, label="loss (all)", gid="loss:total")
    for k in range(4):
        ax.plot(t, traj.loss_by_type[keep, k], color=TYPE_COLORS[k], lw=1.2, label=TYPE_NAMES[k], gid=f"loss:{k}")
    ax.set_yscale("log")
    _phase_line(ax, T1)
    ax.set_title("(b) training loss", fontsize=FONTSIZE + 1)
    return _finish(ax, "logistic loss (nats)", ncol=2)


def figure1(traj, *, T1=None, axes=None):
    """The paper's Figure 1: (a) attention correlations, (b) losses; returns the two Axes."""
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 2, figsize=(7.0, 3.5), constrained_layout=True)
    attention_correlations(traj, T1=T1, ax=axes[0])
    training_loss(traj, T1=T1, ax=axes[1])
    return axes


def balancing(traj, *, T1=None, ax=None):
    """The balancing ratio R(t) (``traj.balancing``) with the band (1, 2) the paper predicts for Phase 2."""
    ax = _axes(ax)
    keep, t = _positive_times(traj)
    ax.axhspan(1.0, 2.0, color="#1b7837", alpha=0.15, lw=0, label=r"predicted band $1 < R < 2$", gid="band")
    ax.plot(t, traj.balancing[keep], color="black", lw=1.4, label=r"$R(t)$", gid="ratio")
    _phase_line(ax, T1)
    ax.set_title(r"automatic balancing: $R = (\Sigma_{I_2 I_3 I_4} g - \Sigma_{I_1} g)/(\Sigma_{I_1} g - \Sigma_{I_2} g)$",
                 fontsize=FONTSIZE)
    return _finish(ax, r"balancing ratio $R(t)$ (dimensionless)")


def scaling(ms, T1s, *, exponent=None, prefactor=None, ax=None):
    """T₁ against the width m (log-log), with the fitted line T₁ = prefactor · m^exponent."""
    ax = _axes(ax)
    ms, T1s = np.asarray(ms, dtype=np.float64), np.asarray(T1s, dtype=np.float64)
    ax.loglog(ms, T1s, "o", color="black", ms=5, label=r"$T_1$ measured", gid="T1")
    if exponent is not None and prefactor is not None:
        grid = np.geomspace(ms.min(), ms.max(), 50)
        ax.loglog(grid, prefactor * grid**exponent, color="#b2182b", lw=1.4, gid="fit",
                  label=rf"fit $T_1 \propto m^{{{exponent:.2f}}}$")
        ax.loglog(grid, prefactor * grid.min() ** (exponent + 1) / grid, color="grey", ls=":", lw=1.2,
                  label=r"slope $-1$ (paper: $T_1 = \tilde O(1/m)$)", gid="reference")
    ax.set_xlabel(r"width $m$ (= rows of $W_Q, W_K, W_V$)", fontsize=FONTSIZE)
    ax.set_ylabel(r"$T_1$ (flow time)", fontsize=FONTSIZE)
    ax.tick_params(labelsize=FONTSIZE)
    ax.set_title("end of Phase 1 against width", fontsize=FONTSIZE + 1)
    ax.legend(fontsize=FONTSIZE - 1, frameon=False)
    return ax
