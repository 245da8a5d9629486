"""Basins of convergence: which initialisations reach a global minimum, which get stuck.

Labels: 1 = reaches a global minimum (the bigram model), 0 = reaches a non-global minimum
(the unigram set for ``ew``), -1 = undetermined.

**Flow method** (any model). Many initial points are integrated at once by
:func:`flowlab.batch.integrate_batch` (per-point adaptive Dormand-Prince) and each stops as soon
as its fate is *proved* (label 1), *reached* (label 1 without a level) or *entered* (label 0):

* label 1 (proved) when L(theta) < L_ng - margin, where L_ng is the lowest non-global critical
  value on the whole parameter space (:func:`nonglobal_level`, from
  :func:`flowlab.critical_symbolic.critical_levels`, never from the box): the loss never
  increases along the flow, so the limit is a critical point with a loss below every non-global
  one. Where no box-independent level exists, label 1 (reached) needs |grad L| <= ``grad_tol``
  and L - H <= the chain's gap-scaled loss tolerance;
* label 0 (entered: checked at one point, not a proof) when |grad L| <= ``grad_tol``,
  L - H > the loss tolerance, no Hessian eigenvalue below -``hess_tol`` and at least n - d
  eigenvalues >= ``curvature_min`` (d the largest dimension of a critical component, from the
  same box-independent analysis; d = 0 when unknown): there a Morse-Bott minimum set attracts;
* otherwise it runs on; at ``t_max`` it is **undetermined** (near a saddle, on a separatrix, or a
  time limit too short) and counted as such, never guessed.

A nearly degenerate chain (:attr:`flowlab.markov.MarkovChain.nearly_degenerate`) is refused by
the flow method: its losses cannot tell the sets apart.

**Invariant method** (``ew``): E = e^2 - w^2 - sign(w) log|w| is conserved and w keeps its sign,
so the fate follows from E, the sign of w and the side of the saddle (MODELS.md section 3): the
separatrix is the level of E at the saddle of the symbolic structure (:func:`unigram_saddle`). It is exact and
instant, and serves as the cross-check of the flow method.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ._checks import FlowlabInputError, integer, real_number
from .markov import MarkovChain
from .models import Model
from .numeric import NumericModel

GLOBAL, NONGLOBAL, UNDETERMINED = 1, 0, -1
METHODS = ("flow", "invariant")
#: Refuse grids above this many points outright (int8 labels: 1 byte each).
MAX_POINTS = 2**27
#: Energy margin around the separatrix excluded from agreement statistics (the issue's 0.02).
SEPARATRIX_BAND = 0.02


@dataclass(frozen=True)
class FlowSettings:
    """How the flow method integrates and decides."""

    t_max: float = 1e4
    rtol: float = 1e-6
    atol: float = 1e-9
    grad_tol: float = 1e-7
    hess_tol: float = 1e-9
    curvature_min: float = 1e-3
    loss_margin: float = 1e-12
    decide_every: int = 2
    chunk: int = 65536

    def __post_init__(self):
        for name in ("t_max", "rtol", "atol", "grad_tol", "hess_tol", "curvature_min"):
            if real_number(getattr(self, name), name) <= 0:
                raise FlowlabInputError(f"{name} must be positive, got {getattr(self, name)}")
        integer(self.chunk, "chunk")


@dataclass(frozen=True)
class Reference:
    """What the labels refer to, and the facts the rules rely on.

    ``nonglobal_level`` (L_ng) is the lowest loss of a non-global critical point on the *whole*
    parameter space (inf: there is none), from :func:`flowlab.critical_symbolic.critical_levels`;
    None when no box-independent level is known (label 1 then needs the loss to have reached H).
    ``min_set_dimension`` is the largest dimension of a component of {grad D = 0} (same source;
    0 when unknown, so label 0 then needs a positive definite Hessian). The sets listed are
    those found in the box, for display and for the invariant method.
    """

    nonglobal_level: float | None
    min_set_dimension: int
    global_sets: list[str]
    nonglobal_min_sets: list[str]
    saddle_points: list[list[float]]
    complete: bool
    level_source: str = ""
    loss_tolerance: float = 0.0  # |L - H| below this counts as "at the global level" (gap-scaled)
    outside_box: tuple[str, ...] = ()  # symbolic critical sets with no point in the box

    def as_dict(self):
        level = self.nonglobal_level
        return {
            "1": {"meaning": "reaches a global minimum (loss H)", "sets": self.global_sets,
                  "rule": ("proved for the exact flow: the loss fell below L_ng, the lowest non-global critical value "
                           "on the whole parameter space, and the loss never increases along the flow, so a limit "
                           "point can only be a global minimum (the integrated point carries the integrator's error)"
                           if level is not None else
                           "reached: |grad L| <= grad_tol and L - H <= loss_tolerance (no box-independent "
                           "non-global level is known, so nothing is concluded earlier)")},
            "0": {"meaning": "reaches a non-global minimum", "sets": self.nonglobal_min_sets,
                  "loss": None if level is None or math.isinf(level) else level,
                  "rule": ("entered (checked at one point, not proved): |grad L| <= grad_tol, L - H > loss_tolerance, "
                           "no Hessian eigenvalue below -hess_tol and at least n - d eigenvalues >= curvature_min, "
                           f"d = {self.min_set_dimension} the largest dimension of a critical component")},
            "-1": {"meaning": "undetermined (not decided by t_max)"},
            "nonglobal_level": {"value": None if level is None or math.isinf(level) else level,
                                "exists": level is not None and not math.isinf(level), "how": self.level_source},
            "loss_tolerance": self.loss_tolerance,
            "critical_sets_complete": self.complete,
            "critical_sets_outside_box": list(self.outside_box),
        }


def nonglobal_level(model: Model, chain: MarkovChain) -> tuple[float | None, int, str]:
    """(L_ng, largest component dimension, how) from box-independent analysis; L_ng None if unknown."""
    from .critical_symbolic import critical_levels

    try:
        lev = critical_levels(model, chain.pi1)
    except Exception as exc:  # any SymPy failure means: no box-independent level
        return None, 0, f"no box-independent level: the symbolic analysis failed ({type(exc).__name__})"
    values = lev.values_at(chain.p, chain.q)
    if values is None:
        return None, 0, f"no box-independent level: {lev.how if not lev.solved else 'a special chain'}"
    dstar = chain.optimal_gap
    d0 = [v for v in values if abs(v - dstar) > 1e-12 * max(1.0, abs(dstar))]
    prof = NumericModel(model.with_profiled_bias(), chain)
    losses = [float(prof.profiled_loss(np.array(v))[0]) for v in d0]
    how = f"ell(D0) over {len(d0)} gap value(s) D0 = {', '.join(f'{v:.6g}' for v in d0) or 'none'}: {lev.how}"
    if model.bias == "free":
        how += "; with the bias free the critical points are the lifts b = b*(theta) (dL/db = 0 iff b = b*)"
    return min(losses, default=math.inf), lev.dimension, how


def reference(model: Model, chain: MarkovChain, box=None, crit=None) -> Reference:
    """The facts the labels rely on (box-independent) and the critical sets in the box (for display)."""
    from .critical import critical_sets

    if crit is None:  # for display only (the labels rely on the box-independent level below): the symbolic
        try:          # sets when they apply, without the numeric cross-check `flowlab critical` runs
            crit = critical_sets(model, chain, box, samples=8, method="symbolic")
        except FlowlabInputError:
            crit = critical_sets(model, chain, box, samples=8)
    elif crit.model != model or crit.chain != chain:
        raise FlowlabInputError("the critical sets given belong to another model or chain")
    level, dim, how = nonglobal_level(model, chain)
    minima = [s for s in crit.sets if s.kind == "local_min"]
    return Reference(
        nonglobal_level=level,
        min_set_dimension=dim if level is not None else 0,
        global_sets=[s.text for s in crit.sets if s.kind == "global_min"],
        nonglobal_min_sets=[s.text for s in minima],
        saddle_points=[s.points[0].tolist() for s in crit.sets if s.kind == "saddle" and s.dimension == 0],
        complete=crit.complete,
        level_source=how,
        loss_tolerance=chain.loss_tolerance,
        outside_box=tuple(crit.outside_box),
    )


# ------------------------------------------------------------------------------ flow path
def _decider(nm: NumericModel, ref: Reference, s: FlowSettings):
    comp = nm.compiled
    p, q = nm.chain.p, nm.chain.q
    n = len(nm.params)
    need = n - ref.min_set_dimension
    level, H, tol = ref.nonglobal_level, nm.chain.entropy_rate, ref.loss_tolerance

    def decide(y, f):
        cols = y.T
        with np.errstate(all="ignore"):  # a point where L is undefined fails (counted), not a warning
            loss = np.broadcast_to(np.asarray(comp.loss(*cols, p, q)[0], float), (len(y),))
        small = np.sqrt(np.sum(f * f, axis=1)) <= s.grad_tol
        out = np.full(len(y), UNDETERMINED, dtype=np.int8)
        if level is not None:  # proved: below every non-global critical value, only a global minimum remains
            out[loss < level - s.loss_margin] = GLOBAL
        else:  # reached: converged onto the global level
            out[small & (loss - H <= tol)] = GLOBAL
        cand = (out == UNDETERMINED) & small & (loss - H > tol)
        if np.any(cand):
            idx = np.flatnonzero(cand)
            lam = np.linalg.eigvalsh(nm.hessian(y[idx]))
            ok = np.all(lam >= -s.hess_tol, axis=1) & (np.sum(lam >= s.curvature_min, axis=1) >= need)
            out[idx[ok]] = NONGLOBAL
        return out

    return decide


def flow_labels(nm: NumericModel, points, ref: Reference, settings: FlowSettings, *, progress=None):
    """Labels of the rows of ``points`` by the flow method; returns (labels, stats)."""
    from .batch import integrate_batch

    comp = nm.compiled
    p, q = nm.chain.p, nm.chain.q

    def rhs(y):
        with np.errstate(all="ignore"):  # non-finite rows fail those points only (counted in the stats)
            g = comp.gradient(*y.T, p, q)
        return -np.stack([np.broadcast_to(np.asarray(c, float), (len(y),)) for c in g], axis=1)

    decide = _decider(nm, ref, settings)
    points = np.asarray(points, dtype=np.float64)
    labels = np.empty(len(points), dtype=np.int8)
    stats = {"rhs_rows": 0, "steps": 0, "failed": 0, "t_max_reached": 0}
    done = 0
    for start in range(0, len(points), settings.chunk):
        chunk = points[start : start + settings.chunk]
        res = integrate_batch(
            rhs, chunk, t_max=settings.t_max, rtol=settings.rtol, atol=settings.atol, decide=decide,
            decide_every=settings.decide_every,
            progress=(lambda k, base=done: progress(base + k)) if progress else None,
        )
        labels[start : start + len(chunk)] = res.label
        stats["rhs_rows"] += int(res.n_rhs_rows)
        stats["steps"] += int(res.steps.sum())
        stats["failed"] += int(np.sum(res.status == -1))
        stats["t_max_reached"] += int(np.sum(res.status == 0))
        done += len(chunk)
    return labels, stats


# -------------------------------------------------------------------------- invariant path
def unigram_saddle(model: Model) -> np.ndarray:
    """The point of the unigram line e = 0 where its normal curvature changes sign, from the symbolic
    structure of the whole plane (not from a box): (0, -1/sqrt(2)) for ``ew``."""
    from .critical_symbolic import critical_structure

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


def invariant_labels(nm: NumericModel, points, ref: Reference) -> np.ndarray:
    """Labels of ``ew``-type models from the conserved E (exact; see the module docstring)."""
    if "E" not in nm.invariant_names or nm.model.bias != "profiled" or list(nm.params) != ["e", "w"]:
        raise FlowlabInputError(
            f"the invariant method needs a profiled (e, w) model with the conserved energy E (model ew); "
            f"{nm.model.name!r} does not qualify: use --method flow"
        )
    saddle = unigram_saddle(nm.model)
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


# ---------------------------------------------------------------------------- grid results
@dataclass(frozen=True)
class BasinGrid:
    model: Model
    chain: MarkovChain
    params: tuple[str, ...]
    axes: dict[str, np.ndarray]
    label: np.ndarray  # shape (N, ..., N), indexing="ij" in params order
    method: str
    reference: Reference
    settings: dict
    timings: dict
    cross_check: dict | None = None
    stats: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "global": int(np.sum(self.label == GLOBAL)),
            "nonglobal": int(np.sum(self.label == NONGLOBAL)),
            "undetermined": int(np.sum(self.label == UNDETERMINED)),
            "total": int(self.label.size),
        }

    def fractions(self) -> dict[str, float]:
        c = self.counts()
        return {k: c[k] / c["total"] for k in ("global", "nonglobal", "undetermined")}

    def as_dict(self) -> dict:
        return {
            "model": self.model.name,
            "chain": self.chain.as_dict(),
            "params": list(self.params),
            "grid": {k: {"lo": float(v[0]), "hi": float(v[-1]), "n": int(v.size)} for k, v in self.axes.items()},
            "shape": list(self.label.shape),
            "method": self.method,
            "settings": self.settings,
            "labels": self.reference.as_dict(),
            "counts": self.counts(),
            "fractions": self.fractions(),
            "cross_check": self.cross_check,
            "stats": self.stats,
            "timings": self.timings,
        }

    #: The files of a saved grid; the folder holding them is the result (one atomic unit).
    FILES: ClassVar[tuple[str, ...]] = ("basins.npz", "basins.json")

    def save(self, out) -> list[Path]:
        """Write the folder ``out`` with ``basins.npz`` (axes by parameter name + ``label``) and ``basins.json``.

        The folder is one unit: built under a temporary sibling name and renamed into place
        (:func:`flowlab.io.atomic_folder`), so an interrupt never leaves a new ``basins.npz``
        beside an old ``basins.json``. ``out`` must be new, empty or an earlier grid result.
        """
        import io as _io

        from .io import atomic_folder, atomic_write_bytes, to_json

        buf = _io.BytesIO()
        np.savez_compressed(buf, label=self.label, **{k: v for k, v in self.axes.items()})
        payload = (buf.getvalue(), to_json(self.as_dict()).encode("utf-8"))
        with atomic_folder(out, "basins folder", self.FILES) as tmp:
            for name, data in zip(self.FILES, payload):
                atomic_write_bytes(tmp / name, data)
        return [Path(out) / name for name in self.FILES]


def _axes(model: Model, ranges, n: int, fixed=None) -> dict[str, np.ndarray]:
    """One axis per parameter: n points over its range, or the single value of a fixed parameter."""
    from .critical import make_box

    n = integer(n, "grid (points per axis)", 2)
    fixed = dict(fixed or {})
    unknown = [k for k in fixed if k not in model.params]
    clash = [k for k in fixed if k in (ranges or {})]
    if unknown or clash:
        raise FlowlabInputError(
            f"fixed parameters must be parameters of {model.name!r} {list(model.params)} without a range; "
            f"got {', '.join(unknown + clash)}"
        )
    if len(fixed) >= len(model.params):
        raise FlowlabInputError("at least one parameter must vary over the grid")
    fixed = {k: real_number(v, f"fixed value of {k}") for k, v in fixed.items()}
    box = make_box(model, ranges)
    total = n ** (len(model.params) - len(fixed))
    if total > MAX_POINTS:
        raise FlowlabInputError(
            f"a {'x'.join([str(n)] * len(model.params))} grid has {total:.3g} points, above the limit "
            f"{MAX_POINTS:.3g} (labels alone would take {total / 2**30:.2g} GiB and the flow at ~1e5 points/s "
            f"about {total / 1e5 / 3600:.2g} h); use a coarser grid or a smaller range"
        )
    return {k: np.array([fixed[k]]) if k in fixed else np.linspace(lo, hi, n) for k, (lo, hi) in box.items()}


def _progress_bar(total, quiet, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, file=sys.stderr, unit="pt", smoothing=0.1)


def basin_grid(
    model: Model,
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
) -> BasinGrid:
    """Label every point of a grid over the box ``ranges`` ({name: (lo, hi)}, default -3..3).

    ``fixed`` ({name: value}) holds some parameters at one value: a slice (e.g. a = 0.5 of model
    ``ewa``); their axes have length 1 and the label array keeps the parameter order. ``crit``: the
    critical sets of the same model and chain, when already computed.

    A grid whose estimated time (from a pilot of 1024 points) exceeds ``max_seconds`` is refused
    before the work starts. With ``method="flow"`` on ``ew`` the labels are cross-checked against
    the invariant method (agreement away from the separatrix).

    >>> from flowlab import MarkovChain, get_model
    >>> g = basin_grid(get_model("ew"), MarkovChain(0.9, 0.9), grid=16)
    >>> g.label.shape, g.counts()["undetermined"] <= 2
    ((16, 16), True)
    """
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    settings = settings or FlowSettings()
    max_seconds = real_number(max_seconds, "max_seconds")
    axes = _axes(model, ranges, grid, fixed)
    t0 = time.perf_counter()
    # the critical sets are searched in the full box (a fixed parameter keeps its default range)
    from .critical import make_box

    box = {k: (float(v[0]), float(v[-1])) if v.size > 1 else make_box(model, {})[k] for k, v in axes.items()}
    if chain.degenerate:
        raise FlowlabInputError(
            f"p + q = 1 ({chain}): the chain is i.i.d., unigram = bigram, and every "
            "initialisation trivially reaches a global minimum; basins are not defined"
        )
    if method == "flow":
        _require_resolvable_flow(model, chain)
    ref = reference(model, chain, box, crit)
    t_ref = time.perf_counter() - t0
    nm = NumericModel(model, chain)
    mesh = np.stack(np.meshgrid(*axes.values(), indexing="ij"), axis=-1).reshape(-1, len(axes))
    timings = {"critical_sets_s": t_ref}
    stats: dict = {}
    if method == "invariant":
        t1 = time.perf_counter()
        labels = invariant_labels(nm, mesh, ref)
        timings["labels_s"] = time.perf_counter() - t1
        check = None
    else:
        _refuse_if_slow(nm, mesh, ref, settings, max_seconds, "grid", "use a coarser grid")
        t1 = time.perf_counter()
        with _progress_bar(len(mesh), quiet, f"basins {model.name}") as bar:
            labels, stats = flow_labels(nm, mesh, ref, settings, progress=lambda k: bar.update(k - bar.n))
        timings["labels_s"] = time.perf_counter() - t1
        timings["points_per_s"] = len(mesh) / timings["labels_s"]
        check = _cross_check(nm, mesh, labels, ref) if cross_check else None
    timings["total_s"] = time.perf_counter() - t0
    return BasinGrid(
        model=model,
        chain=chain,
        params=model.params,
        axes=axes,
        label=labels.reshape([v.size for v in axes.values()]),
        method=method,
        reference=ref,
        settings={"grid": grid, "fixed": {k: float(v[0]) for k, v in axes.items() if v.size == 1},
                  **(settings.__dict__ if method == "flow" else {})},
        timings=timings,
        cross_check=check,
        stats=stats,
    )


def _require_resolvable_flow(model: Model, chain: MarkovChain) -> None:
    """Refuse the flow method on a nearly degenerate chain (its losses cannot tell the sets apart)."""
    if chain.nearly_degenerate:
        hint = ("; the invariant method (--method invariant) is exact there: it needs only the sign of "
                "D* and the conserved E" if model.name == "ew" and model.bias == "profiled" else "")
        chain.require_resolvable("the flow method's labels", hint)


def _cross_check(nm, points, labels, ref) -> dict | None:
    """Flow labels against the invariant labels, everywhere and away from the separatrix (``ew`` only)."""
    try:
        exact = invariant_labels(nm, points, ref)
    except FlowlabInputError:
        return None
    both = (labels != UNDETERMINED) & (exact != UNDETERMINED)
    saddle = unigram_saddle(nm.model)
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


def _refuse_if_slow(nm, points, ref, settings, max_seconds: float, what: str, advice: str) -> None:
    """Refuse, before the work, a labelling estimated (from a pilot of up to 1024 of the points) to take
    longer than ``max_seconds``. Up to 1024 points the pilot would be the work itself: nothing to estimate."""
    if len(points) <= 1024:
        return
    t1 = time.perf_counter()
    pilot = points[np.random.default_rng(0).choice(len(points), min(1024, len(points)), replace=False)]
    flow_labels(nm, pilot, ref, settings)
    rate = len(pilot) / max(time.perf_counter() - t1, 1e-9)
    estimate = len(points) / rate
    if estimate > max_seconds:
        raise FlowlabInputError(
            f"the {len(points)}-point {what} would take about {estimate:.0f} s at {rate:.0f} points/s "
            f"(pilot of {len(pilot)} points), above max_seconds={max_seconds!r}; {advice} or raise max_seconds"
        )


# ------------------------------------------------------------------------ random starts
def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    ph = k / n
    den = 1 + z * z / n
    mid = (ph + z * z / (2 * n)) / den
    half = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    # exact ends for k = 0 and k = n (mid - half is 0 or mid + half is 1 up to rounding)
    return (0.0 if k == 0 else max(0.0, mid - half), 1.0 if k == n else min(1.0, mid + half))


def gaussian_basin(
    model: Model,
    chain: MarkovChain,
    sigma: float,
    samples: int = 1000,
    seed: int = 0,
    *,
    method: str = "flow",
    settings: FlowSettings | None = None,
    quiet: bool = True,
    max_seconds: float = 1800.0,
) -> dict:
    """P(reach a global minimum) for theta0 ~ N(0, sigma^2 I), with a 95% interval.

    ``ci95`` is the Wilson interval, widened to cover the undetermined draws: its lower end
    counts them as not global, its upper end as global. More than 2^27 draws, or draws estimated
    (from a pilot of 1024) to take longer than ``max_seconds``, are refused before the work.
    """
    sigma = real_number(sigma, "sigma")
    if sigma <= 0:
        raise FlowlabInputError(f"sigma must be positive, got {sigma}")
    if isinstance(samples, int) and samples > MAX_POINTS:
        raise FlowlabInputError(
            f"{samples} draws are above the limit {MAX_POINTS} (the starts alone would take "
            f"{samples * 8 * len(model.params) / 2**30:.3g} GiB); use fewer samples"
        )
    samples = integer(samples, "samples", 1, MAX_POINTS)
    max_seconds = real_number(max_seconds, "max_seconds")
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    chain.require_nondegenerate("which minimum a random initialisation reaches")
    if method == "flow":
        _require_resolvable_flow(model, chain)
    settings = settings or FlowSettings()
    t0 = time.perf_counter()
    theta = np.random.default_rng(seed).normal(0.0, sigma, size=(samples, len(model.params)))
    half = max(3.0, 6 * sigma)
    ref = reference(model, chain, {k: (-half, half) for k in model.params})
    nm = NumericModel(model, chain)
    if method == "invariant":
        labels = invariant_labels(nm, theta, ref)
    else:
        _refuse_if_slow(nm, theta, ref, settings, max_seconds, "Gaussian sample", "use fewer samples")
        with _progress_bar(samples, quiet, f"gaussian {model.name}") as bar:
            labels, _ = flow_labels(nm, theta, ref, settings, progress=lambda k: bar.update(k - bar.n))
    n1, n0, nu = (int(np.sum(labels == v)) for v in (GLOBAL, NONGLOBAL, UNDETERMINED))
    lo = wilson_interval(n1, samples)[0]
    hi = wilson_interval(n1 + nu, samples)[1]
    return {
        "model": model.name,
        "chain": chain.as_dict(),
        "params": list(model.params),
        "sigma": sigma,
        "samples": samples,
        "seed": seed,
        "method": method,
        "prob_global": n1 / samples,
        "ci95": [lo, hi],
        "counts": {"global": n1, "nonglobal": n0, "undetermined": nu},
        "labels": ref.as_dict(),
        "seconds": time.perf_counter() - t0,
    }
