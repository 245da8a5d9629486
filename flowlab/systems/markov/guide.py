"""A guideline initialisation: the basin analysis of ``ew`` turned into a concrete starting point.

:func:`guide` picks, from a basin grid of ``ew`` computed by the flow, a point labelled global away from
every non-global label, checks it by the gradient flow of ``ewb`` and against the conserved energy, and
gives the reasoning (:func:`guide_text` renders it). It is the ``guideline`` initialisation of
:mod:`flowlab.systems.markov.train` and :mod:`flowlab.systems.markov.transformer`.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np

from flowlab.engine.checks import FlowlabInputError, integer, real_number
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.defaults import GUIDE_DEFAULTS
from flowlab.systems.markov.sgd import predict

#: The separatrix level of ``ew`` in closed form (MODELS.md section 3), quoted next to the computed one.
SEPARATRIX_CLOSED_FORM = -(1.0 + math.log(2.0)) / 2.0
#: guide() answers by (p, q, grid, extent, margin, e_min): the basin grid is computed once per process.
_GUIDE_CACHE: dict = {}


def _nearest_distances(points, others, chunk: int = 2048) -> np.ndarray:
    """For each row of ``points``, the distance to the nearest row of ``others`` (inf if none)."""
    if len(others) == 0:
        return np.full(len(points), np.inf)
    out = np.empty(len(points))
    for i in range(0, len(points), chunk):
        diff = points[i : i + chunk, None, :] - others[None, :, :]
        out[i : i + chunk] = np.sqrt(np.min(np.sum(diff * diff, axis=-1), axis=1))
    return out


def guide(
    chain: MarkovChain,
    *,
    grid: int = GUIDE_DEFAULTS["grid"],
    extent: float = GUIDE_DEFAULTS["extent"],
    margin: float = GUIDE_DEFAULTS["margin"],
    e_min: float = GUIDE_DEFAULTS["e_min"],
) -> dict:
    """A recommended initialisation for ``chain`` from the basin analysis of ``ew``, with the reasoning.

    A basin grid of ``ew`` (flow method) over [-extent, extent]^2 is computed; the point is the
    grid point labelled global with e >= ``e_min`` (away from the critical line e = 0, where the
    gradient vanishes and training would crawl) whose distance to every non-global or
    undetermined grid label is at least ``margin``, with the smallest norm (ties: the larger
    distance, then the larger w). With b = 0 it is checked by the gradient flow of ``ewb`` (``predicted``) and
    against the conserved energy (``in_I_star``). JSON-ready.

    >>> g = guide(MarkovChain(0.5, 0.8))
    >>> g["predicted"], g["in_I_star"], g["point"]["w"] < -2 ** -0.5
    ('global', True, True)
    """
    if not isinstance(chain, MarkovChain):
        raise FlowlabInputError(f"chain must be a MarkovChain, got {type(chain).__name__}")
    chain.require_nondegenerate("a guideline initialisation (every initialisation reaches the bigram model)")
    grid = integer(grid, "grid", 4)
    extent = real_number(extent, "extent")
    margin = real_number(margin, "margin")
    e_min = real_number(e_min, "e_min")
    if extent <= 0 or margin < 0 or not 0 <= e_min < extent:
        raise FlowlabInputError(f"need extent > 0, margin >= 0 and 0 <= e_min < extent; got {extent}, {margin}, {e_min}")
    key = (chain.p, chain.q, grid, extent, margin, e_min)
    if key not in _GUIDE_CACHE:
        _GUIDE_CACHE[key] = _guide(chain, grid, extent, margin, e_min)
    return copy.deepcopy(_GUIDE_CACHE[key])


def _guide(chain: MarkovChain, grid: int, extent: float, margin: float, e_min: float) -> dict:
    from flowlab.systems.markov.basins import basin_grid
    from flowlab.systems.markov.models import get_model
    from flowlab.systems.markov.numeric import NumericModel

    t0 = time.perf_counter()
    ew = get_model("ew")
    bg = basin_grid(ew, chain, {"e": (-extent, extent), "w": (-extent, extent)}, grid)
    e, w, distance, relaxed = _choose_point(bg, extent, margin, e_min)
    point = {"e": e, "w": w, "b": 0.0}

    nm = NumericModel(ew, chain)
    saddles = bg.sets.saddle_points
    saddle = list(saddles[0]) if saddles else [0.0, -(2**-0.5)]
    e_sep = float(nm.invariants(np.array(saddle))["E"])
    energy = float(nm.invariants(np.array([e, w]))["E"])
    in_star, region, small = _region(chain, e, w, energy, e_sep, saddle)
    pred, message = predict(chain, [e, w, 0.0])
    reasoning = [
        f"optimal logit gap D* = log((1-p)(1-q)/(pq)) = {chain.optimal_gap:.6g} "
        f"({'positive: p + q < 1' if chain.optimal_gap > 0 else 'negative: p + q > 1'}); "
        "model ew has D(e, w) = e^2 (1 + 2w|w|), so the global minima {D = D*} lie where 1 + 2w|w| has the sign of D*",
        "critical sets (flowlab.systems.markov.critical): global minima " + "; ".join(bg.sets.global_min)
        + " | non-global minima " + ("; ".join(bg.sets.local_min) or "none")
        + f" | saddle at (e, w) = ({saddle[0]:.6g}, {saddle[1]:.6g})",
        f"the energy E = e^2 - w^2 - sign(w) log|w| is conserved by the flow; the separatrix is its level at the "
        f"saddle, E_sep = {e_sep:.10g} (closed form -(1 + log 2)/2 = {SEPARATRIX_CLOSED_FORM:.10g})",
        f"basin grid of ew by the flow, {grid}x{grid} on [-{extent:g}, {extent:g}]^2: fractions "
        + ", ".join(f"{k} {v:.3f}" for k, v in bg.fractions().items()),
        f"chosen: the smallest-norm grid point labelled global with e >= {e_min:g} and at least {margin:g} from every "
        f"non-global or undetermined label" + (" (none met the margin: the farthest one instead)" if relaxed else "")
        + f": (e, w) = ({e:g}, {w:g}), distance {distance:.3f}, E = {energy:.6g} "
        f"({'above' if energy > e_sep else 'below'} E_sep)",
        f"check: the gradient flow of ewb from (e, w, b) = ({e:g}, {w:g}, 0) reaches '{pred}' ({message})",
        small,
    ]
    return {
        "chain": chain.as_dict(),
        "regime": chain.regime,
        "region": region,
        "point": point,
        "energy": energy,
        "separatrix": e_sep,
        "separatrix_closed_form": SEPARATRIX_CLOSED_FORM,
        "in_I_star": bool(in_star),
        "distance_to_nonglobal": float(distance),
        "predicted": pred,
        "prediction_message": message,
        "small_init": small,
        "reasoning": reasoning,
        "settings": {"grid": grid, "extent": extent, "margin": margin, "e_min": e_min, "relaxed": bool(relaxed)},
        "seconds": time.perf_counter() - t0,
        "status": "relaxed" if relaxed else "found",
        "message": (f"(e, w, b) = ({e:g}, {w:g}, 0)" + (" (no point met the margin: the farthest one)" if relaxed else "")
                    + f"; the gradient flow of ewb from it reaches '{pred}'"),
    }


def _choose_point(bg, extent: float, margin: float, e_min: float) -> tuple[float, float, float, bool]:
    """(e, w, distance to the nearest non-global label, relaxed) of the grid point :func:`guide` recommends."""
    from flowlab.systems.markov.basins import GLOBAL

    mesh = np.stack(np.meshgrid(bg.axes["e"], bg.axes["w"], indexing="ij"), axis=-1).reshape(-1, 2)
    labels = bg.label.reshape(-1)
    good = labels == GLOBAL
    dist = np.full(len(mesh), 0.0)
    dist[good] = _nearest_distances(mesh[good], mesh[~good])
    # w = 0 is invariant and E is undefined there: the point is taken off it
    cand = good & (mesh[:, 0] >= e_min - 1e-12) & (dist >= margin - 1e-9) & (np.abs(mesh[:, 1]) > 1e-12)
    relaxed = not np.any(cand)
    if relaxed:  # no point meets the margin: the one farthest from every non-global label
        cand = good & (mesh[:, 0] > 0) & (np.abs(mesh[:, 1]) > 1e-12)
        if not np.any(cand):
            raise FlowlabInputError(f"no grid point of [-{extent}, {extent}]^2 is labelled global; enlarge extent")
    idx = np.flatnonzero(cand)
    norms = np.round(np.linalg.norm(mesh[idx], axis=1), 12)
    # smallest norm, then farthest from non-global labels, then the larger w (e.g. w = 0.1 before -0.1)
    order = np.lexsort((-mesh[idx, 1], -dist[idx], norms)) if not relaxed else np.argsort(-dist[idx])
    best = idx[order[0]]
    e, w = (float(round(v, 10)) for v in mesh[best])
    return e, w, float(dist[best]), relaxed


def _region(chain: MarkovChain, e: float, w: float, energy: float, e_sep: float, saddle) -> tuple[bool, str, str]:
    """(whether (e, w) lies in I*, the recommended region, what a small initialisation does), by regime."""
    if chain.optimal_gap < 0:  # p + q > 1
        in_star = (w < saddle[1]) or (saddle[1] < w < 0 and energy > e_sep)
        region = (
            "p + q > 1: I* = {w < -1/sqrt(2), e != 0} U {-1/sqrt(2) < w < 0, E(e, w) > E_sep}. Initialise the FFN "
            "weight negative, w < -1/sqrt(2) (so that 1 + 2w|w| < 0 and the logit gap can reach D* < 0), with an "
            "embedding e of order one; every w > 0 and every small initialisation near the origin end at the unigram model."
        )
        small = "a small initialisation near the origin (e.g. N(0, 0.02^2)) lies in I_min: it ends at the unigram loss"
    else:
        in_star = not (w < saddle[1] and energy < e_sep) and e != 0
        region = (
            "p + q < 1: I* = everything with e != 0 except I_min = {w < -1/sqrt(2), E(e, w) < E_sep}. Any w > -1/sqrt(2) "
            "works, so a small initialisation near the origin already reaches the bigram model; avoid a strongly "
            "negative FFN weight with a small embedding."
        )
        small = "a small initialisation near the origin lies in I*: it already reaches the bigram loss"
    return in_star, region, small


def guide_text(g: dict) -> str:
    """A human-readable rendering of :func:`guide`'s answer."""
    c = g["chain"]
    pt = g["point"]
    lines = [
        f"Guideline initialisation for p = {c['p']!r}, q = {c['q']!r} ({g['regime']})",
        f"  recommended region: {g['region']}",
        f"  initialisation:     e = {pt['e']:g}, w = {pt['w']:g}, b = {pt['b']:g}"
        f"   (flow of ewb: {g['predicted']}; in I*: {g['in_I_star']})",
        f"  small init:         {g['small_init']}",
        "  reasoning:",
    ]
    lines += [f"    - {r}" for r in g["reasoning"]]
    return "\n".join(lines) + "\n"
