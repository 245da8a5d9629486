"""Figures. Every function takes ``ax=None``, returns the Axes and never calls ``show()``."""

from __future__ import annotations

import numpy as np

#: Colours used for the same meaning in every figure.
COLORS = {"global": "#1b7837", "local": "#b2182b", "undetermined": "#7f7f7f"}


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.0, 3.6), layout="constrained")
    return ax


def loss_curve(result, ax=None, *, label: str | None = None, references: bool = True, linestyle: str = "-"):
    """Loss along a flow (log time axis) with the unigram and bigram losses as references."""
    ax = _axes(ax)
    t = np.asarray(result.t, dtype=np.float64)
    color = COLORS[result.reached]
    ax.plot(t, result.loss, color=color, ls=linestyle, lw=1.8,
            label=label or f"{result.model}, reached {result.reached}")
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
