"""Basins of the Markov systems: the flow method of :mod:`flowlab.engine.basins` on a
:class:`~flowlab.systems.markov.system.MarkovSystem`, and the exact invariant method of ``ew``.

Labels: 1 = reaches a global minimum (the bigram model), 0 = reaches a non-global minimum
(the unigram set for ``ew``), -1 = undetermined.

**Flow method** (any model): :func:`flowlab.engine.basins.flow_labels` with the system's reference,
whose non-global levels come from :func:`flowlab.systems.markov.system.box_independent_levels`
(the whole parameter space, never the box); see :mod:`flowlab.engine.basins` for the rule. A
nearly degenerate chain (:attr:`flowlab.systems.markov.chain.MarkovChain.nearly_degenerate`) is
refused by the flow method: its losses cannot tell the sets apart. The critical sets in the box
are computed for display only (:func:`box_sets`).

**Invariant method** (``ew``): E = e^2 - w^2 - sign(w) log|w| is conserved and w keeps its sign,
so the fate follows from E, the sign of w and the side of the saddle (MODELS.md section 3): the
separatrix is the level of E at the saddle of the symbolic structure (:func:`unigram_saddle`). It is exact and
instant, and serves as the cross-check of the flow method.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from flowlab.engine.basins import (  # noqa: F401  (FlowSettings, wilson_interval: part of this module's API)
    GLOBAL,
    NONGLOBAL,
    UNDETERMINED,
    BasinGrid,
    BoxSets,
    FlowSettings,
    GaussianBasin,
    check_gaussian,
    grid_axes,
    grid_points,
    wilson_interval,
)
from flowlab.engine.basins import basin_grid as flow_grid
from flowlab.engine.basins import gaussian_basin as flow_gaussian
from flowlab.engine.checks import FlowlabInputError, real_number
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.numeric import ModelSpec, NumericModel, compile_spec, make_box, spec_facts
from flowlab.systems.markov.system import MarkovSystem

if TYPE_CHECKING:
    from flowlab.systems.markov.models import Model

METHODS = ("flow", "invariant")
#: Energy margin around the separatrix excluded from agreement statistics (the issue's 0.02).
SEPARATRIX_BAND = 0.02


@dataclass(frozen=True)
class MarkovBasinGrid(BasinGrid):
    """A :class:`~flowlab.engine.basins.BasinGrid` that also carries its model (as given: a Model or a ModelSpec)
    and chain (for plots)."""

    model: Model | ModelSpec | None = None
    chain: MarkovChain | None = None


@lru_cache(maxsize=64)
def _critical_sets(model: Model, chain: MarkovChain, box: tuple, method: str, samples: int):
    from flowlab.systems.markov.critical import critical_sets

    return critical_sets(model, chain, dict(box), method=method, samples=samples)


def shared_critical_sets(model: Model, chain: MarkovChain, box=None, *, method: str = "auto", samples: int = 64):
    """:func:`flowlab.systems.markov.critical.critical_sets` computed once per (model, chain, box, method,
    samples) in a process and shared by every analysis (the result is frozen; an error is not cached)."""
    return _critical_sets(model, chain, tuple(sorted(make_box(model, box).items())), method, samples)


def _named(model: Model | ModelSpec):
    """``model``, or the compiled model of a spec: its ``name``, ``params`` and ``bias`` without SymPy when warm."""
    return compile_spec(model) if isinstance(model, ModelSpec) else model


def box_sets(model: Model | ModelSpec, chain: MarkovChain, box=None, crit=None) -> BoxSets:
    """The critical sets in the box, for display only (the labels rely on the box-independent reference); for a
    :class:`ModelSpec` through the on-disk cache (:func:`~flowlab.systems.markov.numeric.spec_facts`)."""
    if isinstance(model, ModelSpec) and crit is None:
        def valid(facts) -> bool:
            return (isinstance(facts, dict) and set(facts) == {f.name for f in fields(BoxSets)}
                    and isinstance(facts["complete"], bool) and all(isinstance(p, list) for p in facts["saddle_points"]))

        box = sorted(make_box(_named(model), box).items())
        facts = spec_facts("markov-box-sets", model, {"p": chain.p, "q": chain.q, "box": box},
                           lambda: asdict(box_sets(model.build(), chain, dict(box))), valid)
        return BoxSets(global_min=tuple(facts["global_min"]), local_min=tuple(facts["local_min"]),
                       saddle_points=tuple(tuple(p) for p in facts["saddle_points"]), complete=facts["complete"],
                       outside_box=tuple(facts["outside_box"]))
    if isinstance(model, ModelSpec):
        model = model.build()
    if crit is None:  # the symbolic sets when they apply, without the numeric cross-check `flowlab critical` runs
        try:
            crit = shared_critical_sets(model, chain, box, samples=8, method="symbolic")
        except FlowlabInputError:
            crit = shared_critical_sets(model, chain, box, samples=8)
    elif crit.model != model or crit.chain != chain:
        raise FlowlabInputError("the critical sets given belong to another model or chain")
    return BoxSets(
        global_min=tuple(s.text for s in crit.sets if s.kind == "global_min"),
        local_min=tuple(s.text for s in crit.sets if s.kind == "local_min"),
        saddle_points=tuple(tuple(s.points[0].tolist()) for s in crit.sets if s.kind == "saddle" and s.dimension == 0),
        complete=bool(crit.complete),
        outside_box=tuple(crit.outside_box),
    )


def _require_method(method: str) -> None:
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


# -------------------------------------------------------------------------- invariant path
def unigram_saddle(model: Model | ModelSpec) -> np.ndarray:
    """The point of the unigram line e = 0 where its normal curvature changes sign, from the symbolic
    structure of the whole plane (not from a box): (0, -1/sqrt(2)) for ``ew``. For a :class:`ModelSpec` through
    the on-disk cache (:func:`~flowlab.systems.markov.numeric.spec_facts`)."""
    if isinstance(model, ModelSpec):
        def saddle_or_error():
            try:
                return {"saddle": unigram_saddle(model.build()).tolist()}
            except FlowlabInputError as exc:
                return {"error": str(exc)}

        facts = spec_facts("markov-unigram-saddle", model, {}, saddle_or_error,
                           lambda f: isinstance(f.get("saddle", f.get("error")), (list, str)))
        if "error" in facts:
            raise FlowlabInputError(facts["error"])
        return np.array(facts["saddle"], dtype=np.float64)
    from flowlab.systems.markov.critical_symbolic import critical_structure

    st = critical_structure(model)
    names = list(model.params)
    pts = []
    for comp in st.flat if st is not None and st.solved else ():
        for sol in comp.splits:
            x = np.zeros(len(names))
            for sym, v in (*comp.fixed, *sol):
                x[names.index(str(sym))] = float(v)
            pts.append(x)
    if len(pts) != 1:
        raise FlowlabInputError("the invariant method needs the single saddle of the unigram line (model ew)")
    return pts[0]


def invariant_labels(nm: NumericModel, points) -> np.ndarray:
    """Labels of ``ew``-type models from the conserved E (exact; see the module docstring)."""
    if "E" not in nm.invariant_names or nm.compiled.bias != "profiled" or list(nm.params) != ["e", "w"]:
        raise FlowlabInputError(
            f"the invariant method needs a profiled (e, w) model with the conserved energy E (model ew); "
            f"{nm.name!r} does not qualify: use --method flow"
        )
    saddle = unigram_saddle(nm.spec or nm.model)
    pts = np.asarray(points, dtype=np.float64)
    e, w = pts[:, 0], pts[:, 1]
    e_sep = float(nm.invariants(saddle)["E"])
    energy = nm.invariants(pts)["E"]
    D_star = nm.chain.optimal_gap
    below = energy < e_sep
    w_s = saddle[1]
    if D_star > 0:  # p + q < 1: the minima of the unigram line lie below the saddle
        stuck = (w < w_s) & below
        on_line_min = w < w_s
    else:  # p + q > 1: above the saddle; w > 0 cannot cross w = 0 and D > 0 there
        stuck = (w > 0) | ((w > w_s) & (w < 0) & below)
        on_line_min = w > w_s
    labels = np.where(stuck, NONGLOBAL, GLOBAL).astype(np.int8)
    # w = 0 is invariant (E undefined): there D = e^2 > 0 flows to D* if D* > 0, to e = 0 otherwise
    labels[w == 0] = GLOBAL if D_star > 0 else NONGLOBAL
    # on the unigram line the point is already critical: a minimum, or not a minimum at all
    line = e == 0
    labels[line] = np.where(on_line_min[line], NONGLOBAL, UNDETERMINED)
    if nm.chain.degenerate:
        labels[:] = GLOBAL
    return labels


def _require_resolvable_flow(model: Model, chain: MarkovChain) -> None:
    """Refuse the flow method on a nearly degenerate chain (its losses cannot tell the sets apart)."""
    if chain.nearly_degenerate:
        hint = ("; the invariant method (--method invariant) is exact there: it needs only the sign of "
                "D* and the conserved E" if model.name == "ew" and model.bias == "profiled" else "")
        chain.require_resolvable("the flow method's labels", hint)


def _cross_check(nm, points, labels) -> dict | None:
    """Flow labels against the invariant labels, everywhere and away from the separatrix (``ew`` only)."""
    try:
        exact = invariant_labels(nm, points)
    except FlowlabInputError:
        return None
    both = (labels != UNDETERMINED) & (exact != UNDETERMINED)
    saddle = unigram_saddle(nm.spec or nm.model)
    e_sep = float(nm.invariants(saddle)["E"])
    with np.errstate(all="ignore"):
        far = np.abs(nm.invariants(points)["E"] - e_sep) > SEPARATRIX_BAND
    far &= (points[:, 0] != 0) & (points[:, 1] != 0) & (exact != UNDETERMINED)
    decided = far & (labels != UNDETERMINED)
    agree = decided & (labels == exact)
    return {
        "reference": "invariant method (conserved E, MODELS.md section 3)",
        "points_far_from_separatrix": int(far.sum()),
        "agreement_far": float(agree.sum() / far.sum()) if far.any() else None,  # None: nothing to compare
        "disagreements_far": int(np.sum(decided & (labels != exact))),
        "undetermined_far": int(np.sum(far & (labels == UNDETERMINED))),
        "separatrix_band": SEPARATRIX_BAND,
        "points_decided_by_both": int(both.sum()),
        "disagreements": int(np.sum(both & (labels != exact))),  # anywhere, the separatrix included
    }


def _context_system(model: Model | ModelSpec, chain: MarkovChain, context: int | None, method: str) -> MarkovSystem:
    """The system whose flow is labelled: the long-context loss, or with ``context=N`` the exact finite-context
    loss over positions 1..N. Its reference is then H and the unigram level with ``complete=False``, so a label
    1 needs the end point itself (reached), never the long-context proof; the critical sets shown and the
    invariant cross-check belong to the long-context loss and are left out."""
    if context is None:
        return MarkovSystem(model, chain)
    if method != "flow":
        raise FlowlabInputError("--context: the invariant method uses the conserved E of the long-context loss; "
                                "the finite-context loss has none: use --method flow")
    return MarkovSystem(model, chain, context)


# ------------------------------------------------------------------------------ the grid
def basin_grid(
    model: Model | ModelSpec,
    chain: MarkovChain,
    ranges=None,
    grid: int = 128,
    *,
    method: str = "flow",
    settings: FlowSettings | None = None,
    max_seconds: float = 1800.0,
    cross_check: bool = True,
    quiet: bool = True,
    fixed=None,
    crit=None,
    context: int | None = None,
) -> MarkovBasinGrid:
    """Label every point of a grid over the box ``ranges`` ({name: (lo, hi)}, default -3..3).

    ``fixed`` ({name: value}) holds some parameters at one value: a slice (e.g. a = 0.5 of model
    ``ewa``); their axes have length 1 and the label array keeps the parameter order. ``crit``: the
    critical sets of the same model and chain, when already computed.

    A grid whose estimated time (from a pilot of 1024 points) exceeds ``max_seconds`` is refused
    before the work starts. With ``method="flow"`` on ``ew`` the labels are cross-checked against
    the invariant method (agreement away from the separatrix). ``context=N``: the flow of the exact
    finite-context loss (:func:`_context_system`).

    >>> from flowlab import MarkovChain, get_model
    >>> g = basin_grid(get_model("ew"), MarkovChain(0.9, 0.9), grid=16)
    >>> g.label.shape, g.counts()["undetermined"] <= 2
    ((16, 16), True)
    """
    _require_method(method)
    named = _named(model)
    settings = settings or FlowSettings()
    max_seconds = real_number(max_seconds, "max_seconds")
    fixed, full = dict(fixed or {}), make_box(named, ranges)
    box = {k: v for k, v in full.items() if k not in fixed or k in (ranges or {})}
    axes = grid_axes(named.params, box, grid, fixed, what=repr(named.name))
    t0 = time.perf_counter()
    if chain.degenerate:
        raise FlowlabInputError(
            f"p + q = 1 ({chain}): the chain is i.i.d., unigram = bigram, and every "
            "initialisation trivially reaches a global minimum; basins are not defined"
        )
    if method == "flow":
        _require_resolvable_flow(named, chain)
    system = _context_system(model, chain, context, method)
    # the critical sets are searched in the full box (long context only: display, never used by the labels)
    sets = box_sets(model, chain, full, crit) if context is None else BoxSets()
    cross_check = cross_check and context is None
    ref = system.reference()
    phases = {"critical_sets": time.perf_counter() - t0}
    if method == "invariant":
        t1 = time.perf_counter()
        labels = invariant_labels(system.numeric, grid_points(axes))
        phases["labels"] = time.perf_counter() - t1
        result = BasinGrid(system=system.describe(), params=named.params, axes=axes,
                           label=labels.reshape([v.size for v in axes.values()]), method=method, reference=ref,
                           settings={"grid": grid, "fixed": {k: float(v[0]) for k, v in axes.items() if v.size == 1}},
                           seconds=0.0, sets=sets)
    else:
        result = flow_grid(system, box, grid, fixed=fixed, reference=ref, settings=settings, max_seconds=max_seconds,
                           quiet=quiet, sets=sets, desc=f"basins {named.name}")
        phases.update(result.seconds_by_phase)
        if cross_check:
            t1 = time.perf_counter()
            result = replace(result, cross_check=_cross_check(system.numeric, grid_points(axes), result.label.reshape(-1)))
            phases["cross_check"] = time.perf_counter() - t1
    fields_ = {f.name: getattr(result, f.name) for f in fields(result)}
    fields_.update(seconds=time.perf_counter() - t0, seconds_by_phase=phases)
    return MarkovBasinGrid(**fields_, model=model, chain=chain)


# ------------------------------------------------------------------------ random starts
def gaussian_basin(
    model: Model | ModelSpec,
    chain: MarkovChain,
    sigma: float,
    samples: int = 1000,
    seed: int = 0,
    *,
    method: str = "flow",
    settings: FlowSettings | None = None,
    quiet: bool = True,
    max_seconds: float = 1800.0,
    context: int | None = None,
) -> GaussianBasin:
    """P(reach a global minimum) for theta0 ~ N(0, sigma^2 I), with a 95% interval
    (:class:`~flowlab.engine.basins.GaussianBasin`).

    ``ci95`` is the Wilson interval, widened to cover the undetermined draws: its lower end
    counts them as not global, its upper end as global. More than 2^27 draws, or draws estimated
    (from a pilot of 1024) to take longer than ``max_seconds``, are refused before the work.
    """
    from flowlab.engine.basins import gaussian_starts

    named = _named(model)
    sigma, samples = check_gaussian(sigma, samples, len(named.params))
    max_seconds = real_number(max_seconds, "max_seconds")
    _require_method(method)
    chain.require_nondegenerate("which minimum a random initialisation reaches")
    if method == "flow":
        _require_resolvable_flow(named, chain)
    t0 = time.perf_counter()
    half = max(3.0, 6 * sigma)
    system = _context_system(model, chain, context, method)
    sets = box_sets(model, chain, {k: (-half, half) for k in named.params}) if context is None else BoxSets()
    ref = system.reference()
    phases = {"critical_sets": time.perf_counter() - t0}
    if method == "invariant":
        labels = invariant_labels(system.numeric, gaussian_starts(sigma, samples, seed, len(named.params)))
        result = GaussianBasin.from_labels(labels, system=system.describe(), params=named.params, sigma=sigma,
                                           samples=samples, seed=seed, method=method, reference=ref, seconds=0.0,
                                           sets=sets)
        phases["labels"] = time.perf_counter() - t0 - phases["critical_sets"]
    else:
        result = flow_gaussian(system, sigma, samples, seed, reference=ref, settings=settings or FlowSettings(),
                               max_seconds=max_seconds, quiet=quiet, sets=sets, desc=f"gaussian {named.name}")
        phases.update(result.seconds_by_phase)
    return replace(result, seconds=time.perf_counter() - t0, seconds_by_phase=phases)
