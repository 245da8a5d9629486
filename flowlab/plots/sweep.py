"""Figures of a sweep, drawn from its ``xarray.Dataset`` only (``flowlab.sweep(...).open()`` or
``xarray.open_zarr(STORE, consolidated=False)``). Every function takes ``ax=None`` and returns the Axes.

The paper's prediction (MODELS.md section 3): a small Gaussian initialisation near the origin reaches
the bigram model (global) when p + q < 1 and the unigram model when p + q > 1.
"""

from __future__ import annotations

import json

import numpy as np

from flowlab.engine.errors import FlowlabInputError

FONTSIZE = 8


def _axes(ax, figsize=(3.6, 3.2)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def _edges(c: np.ndarray) -> np.ndarray:
    """Cell edges around the (sorted) coordinates, for pcolormesh."""
    if c.size == 1:
        return np.array([c[0] - 0.01, c[0] + 0.01])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _model(ds) -> str:
    return json.loads(ds.attrs.get("settings", "{}")).get("model", "?")


def phase_diagram(ds, sigma: float | None = None, ax=None):
    """P(global | p, q) at the grid's ``sigma`` nearest the one given (default: the smallest), with the line
    p + q = 1 and the paper's prediction on each side; cells not computed or degenerate are left blank."""
    ax = _axes(ax)
    sigmas = np.asarray(ds["sigma"].values)
    s = float(sigmas.min() if sigma is None else sigmas[np.argmin(np.abs(sigmas - sigma))])
    cut = ds.sel(sigma=s)
    p, q = np.asarray(cut["p"].values), np.asarray(cut["q"].values)
    z = np.asarray(cut["prob_global"].transpose("q", "p").values, dtype=np.float64)
    mesh = ax.pcolormesh(_edges(p), _edges(q), np.ma.masked_invalid(z), cmap="RdBu", vmin=0, vmax=1,
                         shading="flat", gid="phase")
    ax.figure.colorbar(mesh, ax=ax, label="P(global)")
    t = np.linspace(0, 1, 2)
    ax.plot(t, 1 - t, color="black", lw=1.2, ls="--", gid="p+q=1", label="p + q = 1")
    ax.text(0.04, 0.04, "predicted:\nglobal", transform=ax.transAxes, fontsize=FONTSIZE, va="bottom", gid="predicted")
    ax.text(0.96, 0.96, "predicted:\nunigram", transform=ax.transAxes, fontsize=FONTSIZE, ha="right", va="top",
            gid="predicted")
    ax.set_xlim(_edges(p)[0], _edges(p)[-1])
    ax.set_ylim(_edges(q)[0], _edges(q)[-1])
    ax.set_xlabel("p", fontsize=FONTSIZE)
    ax.set_ylabel("q", fontsize=FONTSIZE)
    ax.set_title(f"{_model(ds)}: P(global), σ = {s:g}, {json.loads(ds.attrs['settings'])['starts']} starts",
                 fontsize=FONTSIZE)
    return ax


def prob_vs_sigma(ds, points, ax=None):
    """P(global) against sigma (log axis) with the 95% intervals, for a few (p, q) of the grid."""
    ax = _axes(ax)
    if len(ds["sigma"]) < 2:
        raise FlowlabInputError("P(global) against sigma needs a sweep over at least two sigmas")
    s = np.asarray(ds["sigma"].values)
    for p, q in points:
        cell = ds.sel(p=p, q=q, method="nearest")
        y = np.asarray(cell["prob_global"].values, dtype=np.float64)
        err = np.abs(np.vstack([y - cell["ci_low"].values, cell["ci_high"].values - y]))
        ax.errorbar(s, y, yerr=err, marker="o", ms=3, capsize=2,
                    label=f"p={float(cell['p']):.3g}, q={float(cell['q']):.3g}")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("σ (scale of the Gaussian initialisation)", fontsize=FONTSIZE)
    ax.set_ylabel("P(global)", fontsize=FONTSIZE)
    ax.legend(fontsize=FONTSIZE - 1)
    ax.set_title(f"{_model(ds)}: P(global) against σ", fontsize=FONTSIZE)
    return ax


def t1_vs_m(ds, ax=None):
    """Co-occurrence sweep: T1 against the width m (log-log), one line per (L, seed), with the slope -1 the paper
    predicts (T1 ~ 1/m up to log factors) through the first point of the first line."""
    ax = _axes(ax)
    m = np.asarray(ds["m"].values, dtype=np.float64)
    first = None
    for L in ds["L"].values:
        for seed in ds["seed"].values:
            y = np.asarray(ds["T1"].sel(L=L, seed=seed).values, dtype=np.float64)
            ax.plot(m, y, marker="o", ms=3, label=f"L={int(L)}, seed={int(seed)}")
            if first is None and np.isfinite(y[0]):
                first = y[0]
    if first is not None:
        ax.plot(m, first * m[0] / m, color="black", ls="--", lw=1, gid="slope-1", label="∝ 1/m")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width m", fontsize=FONTSIZE)
    ax.set_ylabel("T₁ (flow time)", fontsize=FONTSIZE)
    ax.legend(fontsize=FONTSIZE - 1)
    return ax


#: The ntp_order rates a figure shows: variable prefix -> axis label.
NTP_RATES = {"dir_rate": "a in 1 − cos(W_t, W*) ∝ t^−a", "loss_rate": "r in L_t − L_∞ ∝ r^t",
             "norm_slope": "slope of ‖W_t‖_F per step"}


def ntp_rate_vs_vocab(ds, rate: str = "dir_rate", ax=None):
    """ntp_order sweep: one fitted ``rate`` (``dir_rate``, ``loss_rate`` or ``norm_slope``) of both stages against
    K = |V|: the mean over seeds, with the seeds' range as the error bar, one line per (stage, sentences);
    cells without a fit (NaN) are left out of the mean."""
    if rate not in NTP_RATES:
        raise FlowlabInputError(f"unknown rate {rate!r}; choose one of {', '.join(NTP_RATES)}")
    ax = _axes(ax)
    K = np.asarray(ds["vocab"].values, dtype=np.float64)
    for stage, name in (("ov", "stage 1 (W_ov)"), ("kq", "stage 2 (W_kq)")):
        for n in ds["sentences"].values:
            y = np.asarray(ds[f"{rate}_{stage}"].sel(sentences=n).transpose("vocab", "seed").values, dtype=np.float64)
            seen = np.isfinite(y).any(axis=1)
            if not seen.any():
                continue
            mean = np.nanmean(y[seen], axis=1)
            err = np.vstack([mean - np.nanmin(y[seen], axis=1), np.nanmax(y[seen], axis=1) - mean])
            ax.errorbar(K[seen], mean, yerr=err, marker="o" if stage == "ov" else "s", ms=3, capsize=2,
                        gid=f"{rate}_{stage}", label=f"{name}, {int(n)} sentences")
    ax.set_xlabel("K = |V| (vocabulary size, d = K)", fontsize=FONTSIZE)
    ax.set_ylabel(NTP_RATES[rate], fontsize=FONTSIZE)
    ax.tick_params(labelsize=FONTSIZE - 1)
    ax.legend(fontsize=FONTSIZE - 2)
    return ax


def ntp_rates_figure(ds):
    """ntp_order sweep: the three fitted rates of both stages against K, one panel each; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2), constrained_layout=True)
    settings = json.loads(ds.attrs.get("settings", "{}"))
    for ax, rate in zip(axes, NTP_RATES):
        ntp_rate_vs_vocab(ds, rate, ax=ax)
    fig.suptitle(f"ntp_order (reconstruction): fitted rates against K, {ds.sizes['seed']} seed(s), "
                 f"{settings.get('steps1')} + {settings.get('steps2')} iterations", fontsize=FONTSIZE)
    return fig
