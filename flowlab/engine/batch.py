"""Many trajectories of an autonomous ODE at once: vectorised Dormand–Prince 5(4) with per-point steps.

A basin map asks the same question of many thousands of initial points: where does the flow
dy/dt = F(y) from each of them end up? A Python loop over ``solve_ivp`` pays the interpreter's
overhead at every step of every point. Here the points are integrated together, as the rows
of one (k, n) array, so that one call of a vectorised ``rhs`` advances all of them; the
per-step cost is a fixed number of NumPy operations on whole arrays.

The scheme, and why:

* **Dormand–Prince 5(4)**, the pair behind ``solve_ivp(method="RK45")``: seven stages, fifth
  order solution, an embedded fourth order solution for the error estimate, and FSAL (the last
  stage is F at the new point, so an accepted step costs six evaluations, and the stored F is
  also what the decision predicate sees, at no extra cost).
* **Each point has its own step size.** Points near a critical point can take long steps
  while points crossing a steep region take short ones; a common step for the whole batch
  would be set by the worst point. Per point, the error norm is the RMS over components of
  ``err / (atol + rtol * max(|y|, |y_new|))``; the step is accepted when the norm is <= 1 and
  the next step is ``h * clip(0.9 * norm**(-1/5), 0.2, 10)`` (an elementary controller, as in
  Hairer–Nørsett–Wanner's DOPRI5 and SciPy's RK45), with no increase right after a rejection.
  The initial step is Hairer's heuristic, evaluated for all points at once. No step passes
  ``t_max``: the last step is clipped so the point lands exactly on ``t_max``. Because every
  operation acts row by row, a point's trajectory, step sequence and result do not depend on
  which other points share the batch (given an ``rhs`` that is itself row-wise).
* **Only active points are evaluated.** A point stops as soon as it is decided, reaches
  ``t_max`` or fails; the rows still running are gathered for each step, and when they fill
  less than ``compact_below`` of the working arrays these are compacted (with the index map
  back to the caller's rows kept), so the work and memory follow the active set. Memory is the
  O(M n) input/output plus the seven stages of the active set.
* **A decision predicate stops a point as soon as its fate is known** (e.g. "inside the
  basin of the global minimum and close to it"): integrating further would only cost time.
  The predicate sees states and their F values and returns a label >= 0, or ``UNDECIDED``.
* **Undetermined is an honest answer.** A point that is still undecided at ``t_max`` gets
  status 0 and label ``UNDECIDED``; a point whose state or F becomes non-finite, whose step
  size underflows or which exhausts ``max_steps`` gets status -1. Neither is ever turned into
  a guess. A non-finite F at a trial stage rejects the step (the step shrinks by the minimum
  factor, 0.2), since a shorter step may well stay in the domain; a point that keeps producing
  non-finite values therefore fails by step-size underflow, after a few dozen rejected trials,
  and never affects the other rows.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowlab.engine.checks import integer
from flowlab.engine.errors import FlowlabInputError

#: The label (and ``decide`` return value) of a point whose fate is not decided.
UNDECIDED = -1

#: ``BatchResult.status`` values.
_DECIDED, _REACHED_T_MAX, _FAILED = 1, 0, -1

# Dormand–Prince 5(4) tableau (Dormand & Prince 1980; Hairer–Nørsett–Wanner, Table II.5.2).
_A21 = 1 / 5
_A31, _A32 = 3 / 40, 9 / 40
_A41, _A42, _A43 = 44 / 45, -56 / 15, 32 / 9
_A51, _A52, _A53, _A54 = 19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729
_A61, _A62, _A63, _A64, _A65 = 9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656
# Fifth-order weights (= the last row of A; b2 = b7 = 0).
_B1, _B3, _B4, _B5, _B6 = 35 / 384, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84
# Fifth- minus fourth-order weights (e2 = 0).
_E1, _E3, _E4, _E5, _E6, _E7 = 71 / 57600, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
_ERROR_EXPONENT = -1 / 5  # -1 / (1 + order of the embedded error estimate)
_UNDERFLOW = 1e-14  # a step is too small when h < _UNDERFLOW * max(1, |t|)


@dataclass(frozen=True)
class BatchResult:
    """Where and how each point stopped; row i belongs to row i of ``y0``.

    ``status`` is 1 (decided by the predicate; ``label`` holds its label), 0 (reached
    ``t_max`` undecided) or -1 (failed: non-finite state or rhs, step-size underflow, or
    ``max_steps`` exhausted). ``label`` is ``UNDECIDED`` (-1) unless ``status`` is 1. ``y`` and
    ``t`` are the last accepted state and its time (the initial point and 0 for a point that
    was decided or failed before its first step).
    """

    y: np.ndarray  # (M, n) float64
    t: np.ndarray  # (M,) float64
    label: np.ndarray  # (M,) int8
    status: np.ndarray  # (M,) int8
    steps: np.ndarray  # (M,) int64, accepted steps
    rejected: np.ndarray  # (M,) int64, rejected steps
    n_rhs_calls: int
    n_rhs_rows: int

    def counts(self) -> dict:
        """``{"decided", "t_max", "failed"}`` counts plus ``"label_<k>"`` per decided label (plain ints)."""
        out = {
            "decided": int(np.count_nonzero(self.status == _DECIDED)),
            "t_max": int(np.count_nonzero(self.status == _REACHED_T_MAX)),
            "failed": int(np.count_nonzero(self.status == _FAILED)),
        }
        labels, counts = np.unique(self.label[self.status == _DECIDED], return_counts=True)
        out.update({f"label_{int(lab)}": int(c) for lab, c in zip(labels, counts)})
        return out

    @property
    def message(self) -> str:
        """The per-point ``status`` summarised in words."""
        c = self.counts()
        return (f"{self.status.size} points: {c['decided']} decided, {c['t_max']} reached t_max undecided, "
                f"{c['failed']} failed")


# --------------------------------------------------------------------------- validation


def _positive(value, name: str, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FlowlabInputError(f"{name} must be a positive real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        allowed = "positive (inf allowed)" if allow_inf else "finite and positive"
        raise FlowlabInputError(f"{name} must be {allowed}, got {value!r}")
    return value




def _initial_points(y0) -> np.ndarray:
    try:
        arr = np.asarray(y0)
    except (TypeError, ValueError) as exc:
        raise FlowlabInputError(f"y0 must be a 2-D array of real numbers, shape (M, n) ({exc})") from None
    if arr.dtype.kind not in "iuf":
        raise FlowlabInputError(
            f"y0 must be a 2-D array of real numbers, shape (M, n); got dtype {arr.dtype} "
            "(booleans, complex numbers and objects are not allowed)"
        )
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise FlowlabInputError(
            f"y0 must be a 2-D array of shape (M, n) with n >= 1 (one initial point per row), got shape {arr.shape}"
        )
    arr = np.array(arr, dtype=np.float64, order="C")  # a private copy
    if not np.all(np.isfinite(arr)):
        raise FlowlabInputError("y0 contains NaN or infinite values; every initial point must be finite")
    return arr


class _Rhs:
    """Calls the user's rhs, checks the shape of what it returns, and counts the cost."""

    def __init__(self, rhs):
        self.rhs = rhs
        self.calls = 0
        self.rows = 0

    def __call__(self, y: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.rows += y.shape[0]
        out = np.ascontiguousarray(self.rhs(y), dtype=np.float64)
        if np.may_share_memory(out, y):  # e.g. rhs = lambda y: y; stages must not alias the states
            out = out.copy()
        if out.shape != y.shape:
            raise FlowlabInputError(
                f"rhs must return an array of the shape of its input (k, n) = {y.shape}, got shape {out.shape}"
            )
        return out


def _call_decide(decide, y: np.ndarray, f: np.ndarray) -> np.ndarray:
    out = np.asarray(decide(y, f))
    if out.shape != (y.shape[0],) or out.dtype.kind not in "iu":
        raise FlowlabInputError(
            f"decide must return an integer array of shape (k,) = ({y.shape[0]},) "
            f"(a label >= 0, or UNDECIDED = -1), got dtype {out.dtype} and shape {out.shape}"
        )
    if out.size and (out.min() < UNDECIDED or out.max() > np.iinfo(np.int8).max):
        raise FlowlabInputError(
            f"decide returned {int(out.min())}..{int(out.max())}; labels must be in 0..127, or UNDECIDED = -1"
        )
    return out.astype(np.int8)


# --------------------------------------------------------------------------- numerics


def _take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]`` for a 2-D array (np.take along axis 0 is many times faster than fancy indexing)."""
    return np.take(a, rows, axis=0)


def _put_rows(dst: np.ndarray, rows: np.ndarray, src: np.ndarray) -> None:
    """``dst[rows] = src`` for C-contiguous (k, n) float64 arrays, through a one-record-per-row view.

    Assigning whole rows as opaque n * 8-byte records is several times faster than NumPy's
    2-D fancy assignment, and copies the same bytes.
    """
    record = np.dtype((np.void, dst.shape[1] * dst.itemsize))
    dst.view(record).reshape(-1)[rows] = np.ascontiguousarray(src).view(record).reshape(-1)


def _row_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the components of each row, in a fixed order per row (independent of the batch).

    For the few components of a typical flow, adding columns is several times faster than
    NumPy's reduction along a short trailing axis.
    """
    n = x.shape[1]
    if n > 8:
        return x.sum(axis=1)
    out = x[:, 0].copy()
    for j in range(1, n):
        out += x[:, j]
    return out


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(_row_sum(x * x) / x.shape[1])


def _initial_step(rhs: _Rhs, y0, f0, *, rtol, atol, t_max, max_step) -> np.ndarray:
    """Hairer's starting step (HNW I, II.4), per row: h ~ (0.01 / max(|f|, |f'|))^(1/5) in scaled norms."""
    scale = atol + rtol * np.abs(y0)
    d0 = _rms(y0 / scale)
    d1 = _rms(f0 / scale)
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
    h0 = np.minimum(h0, min(t_max, max_step))
    f1 = rhs(y0 + h0[:, None] * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    dm = np.maximum(d1, d2)
    h1 = np.where(dm <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / dm) ** 0.2)
    h = np.minimum(100 * h0, h1)
    h = np.where(np.isfinite(h), h, h0)  # f non-finite at the trial point: let the step control shrink h0
    return np.minimum(h, min(t_max, max_step))


def _dopri5_step(rhs: _Rhs, y, k1, h, rtol, atol):
    """One Dormand–Prince step for every row: (y_new, F(y_new), error norm).

    The error norm is NaN or inf for a row where any stage, y_new or F(y_new) is not finite.
    All arithmetic is elementwise on same-shape (k, n) arrays (h is repeated along the rows
    rather than broadcast: much faster for small n), so each row's result is independent of
    the others and of k.
    """
    k, n = y.shape
    hn = np.repeat(h, n).reshape(k, n)
    k2 = rhs(y + hn * (_A21 * k1))
    k3 = rhs(y + hn * (_A31 * k1 + _A32 * k2))
    k4 = rhs(y + hn * (_A41 * k1 + _A42 * k2 + _A43 * k3))
    k5 = rhs(y + hn * (_A51 * k1 + _A52 * k2 + _A53 * k3 + _A54 * k4))
    k6 = rhs(y + hn * (_A61 * k1 + _A62 * k2 + _A63 * k3 + _A64 * k4 + _A65 * k5))
    y_new = y + hn * (_B1 * k1 + _B3 * k3 + _B4 * k4 + _B5 * k5 + _B6 * k6)
    k7 = rhs(y_new)
    err = hn * (_E1 * k1 + _E3 * k3 + _E4 * k4 + _E5 * k5 + _E6 * k6 + _E7 * k7)
    err /= atol + rtol * np.maximum(np.abs(y), np.abs(y_new))
    err *= err
    # 0 * x is (+-)0 for finite x and NaN otherwise: this marks rows whose y_new or F(y_new) is not
    # finite (a non-finite earlier stage reaches them through the later ones) without a slow reduction,
    # and leaves the other rows' bits alone.
    err += y_new * 0.0
    err += k7 * 0.0
    return y_new, k7, np.sqrt(_row_sum(err) / n)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class _Options:
    """The validated settings of one :func:`integrate_batch` call."""

    t_max: float
    rtol: float
    atol: float
    decide: Callable | None
    decide_every: int
    max_steps: int
    first_step: float | None
    max_step: float
    compact_below: float
    progress: Callable | None


def _options(rhs, y0, decide, progress, *, t_max, rtol, atol, decide_every, max_steps, first_step, max_step,
             compact_below) -> tuple[np.ndarray, _Options]:
    """Check the arguments of :func:`integrate_batch`, in order (a clear error naming the first bad one)."""
    if not callable(rhs):
        raise FlowlabInputError(f"rhs must be a callable rhs(y) -> array (k, n), got {rhs!r}")
    if decide is not None and not callable(decide):
        raise FlowlabInputError(f"decide must be None or a callable decide(y, f) -> int array (k,), got {decide!r}")
    if progress is not None and not callable(progress):
        raise FlowlabInputError(f"progress must be None or a callable progress(n_finished), got {progress!r}")
    y0 = _initial_points(y0)
    t_max = _positive(t_max, "t_max")
    rtol = _positive(rtol, "rtol")
    atol = _positive(atol, "atol")
    decide_every = integer(decide_every, "decide_every")
    max_steps = integer(max_steps, "max_steps")
    if first_step is not None:
        first_step = _positive(first_step, "first_step")
    max_step = _positive(max_step, "max_step", allow_inf=True)
    if isinstance(compact_below, bool) or not isinstance(compact_below, numbers.Real) or not 0 <= compact_below <= 1:
        raise FlowlabInputError(f"compact_below must be a number in [0, 1], got {compact_below!r}")
    return y0, _Options(t_max, rtol, atol, decide, decide_every, max_steps, first_step, max_step,
                        float(compact_below), progress)


def _trial(rhs: _Rhs, ya, fa, ta, ha, after_reject, o: _Options):
    """One trial step of the active rows: (y_new, F(y_new), t_new, next h, accepted, last step).

    A step that would pass ``t_max`` is clipped to land on it; rejected rows keep their state
    (y, F, t) and get a shorter next step (by the minimum factor when the error is not finite).
    """
    remaining = o.t_max - ta
    t_new = ta + ha
    last = (ha >= remaining) | (t_new >= o.t_max)  # clip the step to land exactly on t_max
    hs = np.where(last, remaining, ha)
    t_new[last] = o.t_max

    y_new, f_new, err = _dopri5_step(rhs, ya, fa, hs, o.rtol, o.atol)
    ok = np.isfinite(err)
    accept = err <= 1.0  # False for NaN
    with np.errstate(divide="ignore"):
        factor = np.clip(_SAFETY * err**_ERROR_EXPONENT, _MIN_FACTOR, _MAX_FACTOR)
    factor[~ok] = _MIN_FACTOR
    capped = accept & after_reject
    factor[capped] = np.minimum(factor[capped], 1.0)
    h_next = np.minimum(hs * factor, o.max_step)

    back = np.flatnonzero(~accept)
    if back.size:
        _put_rows(y_new, back, _take(ya, back))
        _put_rows(f_new, back, _take(fa, back))
        t_new[back] = ta[back]
    return y_new, f_new, t_new, h_next, accept, last


class _Run:
    """The state of one :func:`integrate_batch` call.

    The caller's output arrays (one row per initial point) and the working arrays: one row per
    point not finished at the last compaction, ``idx`` mapping them to the rows of ``y0``, and
    ``active`` marking the rows still running.
    """

    def __init__(self, rhs: _Rhs, y0: np.ndarray, o: _Options):
        M = y0.shape[0]
        self.rhs, self.o, self.M = rhs, o, M
        self.out_y = y0.copy()
        self.out_t = np.zeros(M)
        self.out_label = np.full(M, UNDECIDED, dtype=np.int8)
        self.out_status = np.full(M, _REACHED_T_MAX, dtype=np.int8)
        self.out_steps = np.zeros(M, dtype=np.int64)
        self.out_rejected = np.zeros(M, dtype=np.int64)
        self.n_active = self.n_finished = 0

    def result(self) -> BatchResult:
        return BatchResult(self.out_y, self.out_t, self.out_label, self.out_status, self.out_steps,
                           self.out_rejected, self.rhs.calls, self.rhs.rows)

    def start(self, y0: np.ndarray) -> None:
        """Evaluate F at the initial points, fail the non-finite ones, decide the rest, set up the working arrays."""
        f0 = self.rhs(y0)
        finite = np.isfinite(f0).all(axis=1)
        self.out_status[~finite] = _FAILED
        alive = np.flatnonzero(finite)
        if self.o.decide is not None and alive.size:
            lab = _call_decide(self.o.decide, _take(y0, alive), _take(f0, alive))
            hit = lab >= 0
            self.out_label[alive[hit]] = lab[hit]
            self.out_status[alive[hit]] = _DECIDED
            alive = alive[~hit]
        self.n_finished = self.M - alive.size
        if self.o.progress is not None and self.n_finished:
            self.o.progress(self.n_finished)
        if alive.size == 0:
            return
        self.idx = alive
        self.y, self.f, self.t = _take(y0, alive), _take(f0, alive), np.zeros(alive.size)
        if self.o.first_step is None:
            self.h = _initial_step(self.rhs, self.y, self.f, rtol=self.o.rtol, atol=self.o.atol,
                                   t_max=self.o.t_max, max_step=self.o.max_step)
        else:
            self.h = np.full(alive.size, min(self.o.first_step, self.o.max_step))
        self.steps = np.zeros(alive.size, dtype=np.int64)
        self.rejected = np.zeros(alive.size, dtype=np.int64)
        self.since = np.zeros(alive.size, dtype=np.int64)  # accepted steps since the last decide call
        self.after_reject = np.zeros(alive.size, dtype=bool)  # no step increase right after a rejection
        self.active = np.ones(alive.size, dtype=bool)
        self.n_active = alive.size
        # |t| = 0 here; a first step equal to a tiny t_max is the last step, not an underflow.
        self.finish(np.flatnonzero((self.h < _UNDERFLOW) & (self.h < self.o.t_max)), _FAILED)

    def finish(self, w: np.ndarray, status: int) -> None:
        """Record the working rows ``w`` as finished with ``status``."""
        if w.size == 0:
            return
        rows = self.idx[w]
        _put_rows(self.out_y, rows, _take(self.y, w))
        self.out_t[rows] = self.t[w]
        self.out_steps[rows] = self.steps[w]
        self.out_rejected[rows] = self.rejected[w]
        self.out_status[rows] = status
        self.active[w] = False
        self.n_active -= w.size

    def compact(self) -> None:
        """Drop the finished rows from the working arrays."""
        keep = np.flatnonzero(self.active)
        self.idx, self.y, self.f = self.idx[keep], _take(self.y, keep), _take(self.f, keep)
        self.t, self.h, self.steps, self.rejected = self.t[keep], self.h[keep], self.steps[keep], self.rejected[keep]
        self.since, self.after_reject = self.since[keep], self.after_reject[keep]
        self.active = np.ones(keep.size, dtype=bool)

    def step(self) -> None:
        """Advance every active point by one trial step; then decide, finish or keep it."""
        if self.n_active < self.o.compact_below * self.active.size:
            self.compact()
        full = self.n_active == self.active.size  # every working row is active: no gather or scatter
        if full:
            sel = slice(None)
            ya, fa, ta, ha = self.y, self.f, self.t, self.h
        else:
            sel = np.flatnonzero(self.active)
            ya, fa, ta, ha = _take(self.y, sel), _take(self.f, sel), self.t[sel], self.h[sel]
        y_new, f_new, t_new, h_next, accept, last = _trial(self.rhs, ya, fa, ta, ha, self.after_reject[sel], self.o)
        if full:  # the step's rows are swapped in whole, or stored
            self.y, self.f, self.t, self.h = y_new, f_new, t_new, h_next
        else:
            _put_rows(self.y, sel, y_new)
            _put_rows(self.f, sel, f_new)
            self.t[sel] = t_new
            self.h[sel] = h_next
        self.after_reject[sel] = ~accept
        steps_a = self.steps[sel] + accept
        self.steps[sel] = steps_a
        self.rejected[sel] += ~accept
        since_a = self.since[sel] + accept
        self.since[sel] = since_a
        self._settle(sel, y_new, f_new, accept, last, steps_a, since_a,
                     ~accept & (h_next < _UNDERFLOW * np.maximum(1.0, np.abs(ta))))

    def _settle(self, sel, y_new, f_new, accept, last, steps_a, since_a, underflow) -> None:
        """Finish this step's rows that are decided, at ``t_max``, out of steps or underflowed."""

        def where(mask):
            """Working-array positions of this step's rows selected by a boolean ``mask``."""
            return np.flatnonzero(mask) if isinstance(sel, slice) else sel[mask]

        decided = np.zeros(accept.size, dtype=bool)
        if self.o.decide is not None:
            due = accept & ((since_a >= self.o.decide_every) | last)
            if due.any():
                due_at = np.flatnonzero(due)
                self.since[where(due)] = 0
                lab = _call_decide(self.o.decide, _take(y_new, due_at), _take(f_new, due_at))
                hit = lab >= 0
                decided[due_at[hit]] = True
                self.out_label[self.idx[where(decided)]] = lab[hit]
                self.finish(where(decided), _DECIDED)
        self.finish(where(accept & last & ~decided), _REACHED_T_MAX)
        exhausted = accept & ~last & ~decided & (steps_a >= self.o.max_steps)
        self.finish(where(exhausted | underflow), _FAILED)
        if self.o.progress is not None and self.M - self.n_active != self.n_finished:
            self.n_finished = self.M - self.n_active
            self.o.progress(self.n_finished)


def integrate_batch(
    rhs: Callable[[np.ndarray], np.ndarray],
    y0,
    *,
    t_max: float,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    decide: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    decide_every: int = 1,
    max_steps: int = 200_000,
    first_step: float | None = None,
    max_step: float = np.inf,
    compact_below: float = 0.5,
    progress: Callable[[int], object] | None = None,
) -> BatchResult:
    """Integrate dy/dt = rhs(y) from every row of ``y0`` (shape (M, n)) until decided or ``t_max``.

    ``rhs(y)`` maps a (k, n) float64 array to a new (k, n) array, row by row (a row's result must
    not depend on the other rows; ``y`` must not be modified); it may return non-finite rows,
    which fail those points only.
    ``decide(y, f)`` (optional) gets the states (k, n) of active points and their rhs values, and
    returns an integer array (k,): a label >= 0 stops the point with that label, ``UNDECIDED``
    lets it continue. It is called on the initial points, after every ``decide_every`` accepted
    steps of a point, and on a point's state at ``t_max``. ``first_step`` replaces Hairer's
    initial-step heuristic, ``max_step`` caps every step; a point fails when its step falls
    below 1e-14 * max(1, |t|) or when it needs more than ``max_steps`` accepted steps. The working
    arrays are compacted when the active points fill less than ``compact_below`` of them (0: never;
    results do not depend on it). ``progress(n_finished)``, if given, is called with the number of
    finished points whenever it grows (e.g. ``lambda n: bar.update(n - bar.n)`` for tqdm).

    Exponential decay y' = -y, two points at once:

    >>> import numpy as np
    >>> res = integrate_batch(lambda y: -y, [[1.0], [2.0]], t_max=1.0)
    >>> bool(np.allclose(res.y[:, 0], [np.exp(-1), 2 * np.exp(-1)], rtol=1e-6, atol=0))
    True
    >>> res.t.tolist(), res.status.tolist(), res.counts()
    ([1.0, 1.0], [0, 0], {'decided': 0, 't_max': 2, 'failed': 0})
    """
    y0, o = _options(rhs, y0, decide, progress, t_max=t_max, rtol=rtol, atol=atol, decide_every=decide_every,
                     max_steps=max_steps, first_step=first_step, max_step=max_step, compact_below=compact_below)
    run = _Run(_Rhs(rhs), y0, o)
    if run.M == 0:
        return run.result()
    # Non-finite values are an expected outcome here (handled per point), not a warning.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        run.start(y0)
        while run.n_active:
            run.step()
    if progress is not None and run.n_finished != run.M:
        progress(run.M)
    return run.result()
