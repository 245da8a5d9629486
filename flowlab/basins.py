"""Basins of convergence: which initialisations reach a global minimum, which get stuck.

Labels: 1 = reaches a global minimum (the bigram model), 0 = reaches a non-global minimum
(the unigram set for ``ew``), -1 = undetermined.

**Flow method** (any model). Many initial points are integrated at once by
:func:`flowlab.batch.integrate_batch` (per-point adaptive Dormand-Prince) and each stops as soon
as its fate is *proved* or *entered*:

* label 1 when L(theta) < L_ng - margin, where L_ng is the lowest loss of the non-global
  critical sets (:func:`flowlab.critical.critical_sets`): the loss never increases along the
  flow, so the limit is a critical point with a loss below every non-global one;
* label 0 when the point entered the quadratic neighbourhood of a non-global minimum set:
  |grad L| <= ``grad_tol``, loss at the non-global level, no Hessian eigenvalue below
  -``hess_tol`` and at least n - d eigenvalues >= ``curvature_min`` (d the dimension of the
  minimum set): there the set is a Morse-Bott minimum and attracts the flow;
* otherwise it runs on; at ``t_max`` it is **undetermined** (near a saddle, on a separatrix, or a
  time limit too short) and counted as such, never guessed.

**Invariant method** (``ew``): E = e^2 - w^2 - sign(w) log|w| is conserved and w keeps its sign,
so the fate follows from E, the sign of w and the side of the saddle (MODELS.md section 3): the
separatrix is the level of E at the saddle found by the critical-set analysis. It is exact and
instant, and serves as the cross-check of the flow method.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    """What the labels refer to, from the critical-set analysis of the same chain."""

    nonglobal_level: float  # L_ng: the lowest loss of a non-global critical set (inf if none)
    min_set_dimension: int  # the largest dimension of a non-global minimum set
    global_sets: list[str]
    nonglobal_min_sets: list[str]
    saddle_points: list[list[float]]
    complete: bool

    def as_dict(self):
        return {
            "1": {"meaning": "reaches a global minimum (loss H)", "sets": self.global_sets},
            "0": {"meaning": "reaches a non-global minimum", "sets": self.nonglobal_min_sets,
                  "loss": None if math.isinf(self.nonglobal_level) else self.nonglobal_level},
            "-1": {"meaning": "undetermined (not decided by t_max)"},
            "critical_sets_complete": self.complete,
        }


def reference(model: Model, chain: MarkovChain, box=None, crit=None) -> Reference:
    """The critical sets the labels refer to (computed, or taken from ``crit`` of the same chain)."""
    from .critical import critical_sets

    if crit is None:
        crit = critical_sets(model, chain, box, samples=8)
    elif crit.model != model or crit.chain != chain:
        raise FlowlabInputError("the critical sets given belong to another model or chain")
    nonglobal = [s for s in crit.sets if s.kind != "global_min"]
    minima = [s for s in nonglobal if s.kind == "local_min"]
    return Reference(
        nonglobal_level=min((s.loss for s in nonglobal), default=math.inf),
        min_set_dimension=max((s.dimension for s in minima), default=0),
        global_sets=[s.text for s in crit.sets if s.kind == "global_min"],
        nonglobal_min_sets=[s.text for s in minima],
        saddle_points=[s.points[0].tolist() for s in crit.sets if s.kind == "saddle" and s.dimension == 0],
        complete=crit.complete,
    )


# ------------------------------------------------------------------------------ flow path
def _decider(nm: NumericModel, ref: Reference, s: FlowSettings):
    comp = nm.compiled
    p, q = nm.chain.p, nm.chain.q
    n = len(nm.params)
    need = n - ref.min_set_dimension
    level = ref.nonglobal_level

    def decide(y, f):
        cols = y.T
        loss = np.broadcast_to(np.asarray(comp.loss(*cols, p, q)[0], float), (len(y),))
        out = np.full(len(y), UNDETERMINED, dtype=np.int8)
        out[loss < level - s.loss_margin] = GLOBAL
        cand = (out == UNDETERMINED) & (np.sqrt(np.sum(f * f, axis=1)) <= s.grad_tol)
        if np.any(cand):
            idx = np.flatnonzero(cand)
            lam = np.linalg.eigvalsh(nm.hessian(y[idx]))
            ok = np.all(lam >= -s.hess_tol, axis=1) & (np.sum(lam >= s.curvature_min, axis=1) >= need)
            ok &= loss[idx] >= level - 1e-9
            out[idx[ok]] = NONGLOBAL
        return out

    return decide


def flow_labels(nm: NumericModel, points, ref: Reference, settings: FlowSettings, *, progress=None):
    """Labels of the rows of ``points`` by the flow method; returns (labels, stats)."""
    from .batch import integrate_batch

    comp = nm.compiled
    p, q = nm.chain.p, nm.chain.q

    def rhs(y):
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
def invariant_labels(nm: NumericModel, points, ref: Reference) -> np.ndarray:
    """Labels of ``ew``-type models from the conserved E (exact; see the module docstring)."""
    if "E" not in nm.invariant_names or nm.model.bias != "profiled" or list(nm.params) != ["e", "w"]:
        raise FlowlabInputError(
            f"the invariant method needs a profiled (e, w) model with the conserved energy E (model ew); "
            f"{nm.model.name!r} does not qualify: use --method flow"
        )
    if len(ref.saddle_points) != 1:
        raise FlowlabInputError("the invariant method needs the single saddle of the unigram line")
    pts = np.asarray(points, dtype=np.float64)
    e, w = pts[:, 0], pts[:, 1]
    saddle = np.array(ref.saddle_points[0])
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

    def save(self, out) -> list[Path]:
        """Write ``basins.npz`` (axes by parameter name + ``label``) and ``basins.json`` atomically."""
        import io as _io

        from .io import atomic_write_bytes, atomic_write_text, to_json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        buf = _io.BytesIO()
        np.savez_compressed(buf, label=self.label, **{k: v for k, v in self.axes.items()})
        atomic_write_bytes(out / "basins.npz", buf.getvalue())
        atomic_write_text(out / "basins.json", to_json(self.as_dict()))
        return [out / "basins.npz", out / "basins.json"]


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
            f"p + q = 1 (p={chain.p:g}, q={chain.q:g}): the chain is i.i.d., unigram = bigram, and every "
            "initialisation trivially reaches a global minimum; basins are not defined"
        )
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
        t1 = time.perf_counter()
        pilot = mesh[np.random.default_rng(0).choice(len(mesh), min(1024, len(mesh)), replace=False)]
        flow_labels(nm, pilot, ref, settings)
        rate = len(pilot) / max(time.perf_counter() - t1, 1e-9)
        estimate = len(mesh) / rate
        if estimate > max_seconds:
            raise FlowlabInputError(
                f"the {len(mesh)}-point grid would take about {estimate:.0f} s at {rate:.0f} points/s "
                f"(pilot of {len(pilot)} points), above max_seconds={max_seconds:g}; use a coarser grid "
                "or raise max_seconds"
            )
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


def _cross_check(nm, points, labels, ref) -> dict | None:
    """Flow labels against the invariant labels, away from the separatrix (``ew`` only)."""
    try:
        exact = invariant_labels(nm, points, ref)
    except FlowlabInputError:
        return None
    saddle = np.array(ref.saddle_points[0])
    e_sep = float(nm.invariants(saddle)["E"])
    with np.errstate(all="ignore"):
        far = np.abs(nm.invariants(points)["E"] - e_sep) > SEPARATRIX_BAND
    far &= (points[:, 0] != 0) & (points[:, 1] != 0) & (exact != UNDETERMINED)
    decided = far & (labels != UNDETERMINED)
    agree = decided & (labels == exact)
    return {
        "reference": "invariant method (conserved E, MODELS.md section 3)",
        "points_far_from_separatrix": int(far.sum()),
        "agreement_far": float(agree.sum() / max(far.sum(), 1)),
        "disagreements_far": int(np.sum(decided & (labels != exact))),
        "undetermined_far": int(np.sum(far & (labels == UNDETERMINED))),
        "separatrix_band": SEPARATRIX_BAND,
    }


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
) -> dict:
    """P(reach a global minimum) for theta0 ~ N(0, sigma^2 I), with a 95% interval.

    ``ci95`` is the Wilson interval, widened to cover the undetermined draws: its lower end
    counts them as not global, its upper end as global.
    """
    sigma = real_number(sigma, "sigma")
    if sigma <= 0:
        raise FlowlabInputError(f"sigma must be positive, got {sigma}")
    samples = integer(samples, "samples")
    if method not in METHODS:
        raise FlowlabInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    chain.require_nondegenerate("which minimum a random initialisation reaches")
    settings = settings or FlowSettings()
    t0 = time.perf_counter()
    theta = np.random.default_rng(seed).normal(0.0, sigma, size=(samples, len(model.params)))
    half = max(3.0, 6 * sigma)
    ref = reference(model, chain, {k: (-half, half) for k in model.params})
    nm = NumericModel(model, chain)
    if method == "invariant":
        labels = invariant_labels(nm, theta, ref)
    else:
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
