"""Basins of convergence of any :class:`~flowlab.engine.system.System`: which starts reach a global minimum.

Labels: 1 = reaches a global minimum, 0 = reaches a non-global minimum, -1 = undetermined.

**Flow method.** Many initial points are integrated at once by
:func:`flowlab.engine.batch.integrate_batch` (per-point adaptive Dormand-Prince) and each stops as
soon as its fate is decided, from the system's :class:`~flowlab.engine.system.Reference` only:

* label 1 (*proved*) when the reference is ``complete`` (its ``levels`` hold every non-global
  critical value on the whole parameter space) and L(theta) < L_ng - margin, L_ng the lowest of
  them (+inf when there is none): the loss never increases along the flow, so the limit is a
  critical point with a loss below every non-global one. When the reference is not complete,
  label 1 (*reached*) needs |grad L| <= ``grad_tol`` and L - optimal_loss <= ``loss_tol``;
* label 0 (*entered*: checked at one point, not a proof) when |grad L| <= ``grad_tol``,
  L - optimal_loss > ``loss_tol``, no Hessian eigenvalue below -``hess_tol`` and at least n - d
  eigenvalues >= ``curvature_min`` (d = ``reference.set_dimension``, 0 when unknown): there a
  Morse-Bott minimum set attracts;
* otherwise it runs on; at ``t_max`` it is **undetermined** (near a saddle, on a separatrix, or a
  time limit too short) and counted as such, never guessed.

With no optimal loss known (``optimal_loss`` None) nothing is *reached* and nothing *entered*.
A reference whose losses cannot tell the sets apart (``unresolved``) or where every critical point
is global (``all_global``) is refused. Nothing here knows what the loss means.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from flowlab.engine.checks import integer, real_number
from flowlab.engine.defaults import available_cpus
from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.system import Reference

GLOBAL, NONGLOBAL, UNDETERMINED = 1, 0, -1
#: Refuse grids or samples above this many points outright (int8 labels: 1 byte each).
MAX_POINTS = 2**27
#: Points of the pilot run that estimates the time of a labelling before it starts.
PILOT_POINTS = 1024


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
    #: processes labelling pieces of a batch at once (this one and workers - 1 others); None: every
    #: free CPU for batches of at least AUTO_PROCESS_POINTS points, else one (:func:`auto_processes`). Processes,
    #: not threads: two threads ran at 0.85x of one (the per-step NumPy operations are too small to release
    #: the GIL for long). The labels do not depend on it.
    workers: int | None = None

    def __post_init__(self):
        for name in ("t_max", "rtol", "atol", "grad_tol", "hess_tol", "curvature_min"):
            if real_number(getattr(self, name), name) <= 0:
                raise FlowlabInputError(f"{name} must be positive, got {getattr(self, name)}")
        integer(self.chunk, "chunk")
        if self.workers is not None:
            integer(self.workers, "workers", 1, 256)

    def n_workers(self, points: int = 0) -> int:
        """The processes that label ``points`` rows (:func:`auto_processes`)."""
        return auto_processes(points, self)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BoxSets:
    """The critical sets found in the box, for display (the labels never rely on them).

    ``global_min``/``local_min``: descriptions of the sets of each kind; ``saddle_points``: isolated
    saddles; ``complete``: whether the list is known to be exhaustive in the box; ``outside_box``:
    sets of the whole space with no point in the box.
    """

    global_min: tuple[str, ...] = ()
    local_min: tuple[str, ...] = ()
    saddle_points: tuple[tuple[float, ...], ...] = ()
    complete: bool = False
    outside_box: tuple[str, ...] = ()


def proof_level(reference: Reference) -> float | None:
    """L_ng for the *proved* rule: the lowest non-global level (+inf: none) of a complete reference, else None."""
    if not reference.complete:
        return None
    level = reference.nonglobal_level
    return math.inf if level is None else float(level)


def _json_level(level):
    return None if level is None or math.isinf(level) else level


def label_rules(reference: Reference, sets: BoxSets = BoxSets()) -> dict:
    """What each label means and the rule that gives it (the ``labels`` entry of the JSON)."""
    level = proof_level(reference)
    rule1 = ("proved for the exact flow: the loss fell below L_ng, the lowest non-global critical value on the "
             "whole parameter space, and the loss never increases along the flow, so a limit point can only be "
             "a global minimum (the integrated point carries the integrator's error)" if level is not None else
             "reached: |grad L| <= grad_tol and L - optimal_loss <= loss_tol (no complete list of the non-global "
             "levels is known, so nothing is concluded earlier)")
    rule0 = ("entered (checked at one point, not proved): |grad L| <= grad_tol, L - optimal_loss > loss_tol, no "
             "Hessian eigenvalue below -hess_tol and at least n - d eigenvalues >= curvature_min, "
             f"d = {reference.set_dimension if level is not None else 0} the largest dimension of a critical component")
    return {
        "1": {"meaning": "reaches a global minimum (the optimal loss)", "sets": list(sets.global_min), "rule": rule1},
        "0": {"meaning": "reaches a non-global minimum", "sets": list(sets.local_min),
              "loss": _json_level(level), "rule": rule0},
        "-1": {"meaning": "undetermined (not decided by t_max)"},
        "nonglobal_level": {"value": _json_level(level), "exists": level is not None and not math.isinf(level),
                            "how": reference.source},
        "loss_tolerance": reference.loss_tol,
        "critical_sets_complete": bool(sets.complete),
        "critical_sets_outside_box": list(sets.outside_box),
    }


def check_reference(reference: Reference, what: str = "basins") -> None:
    """Refuse a reference on which no global/local verdict can rest."""
    if not isinstance(reference, Reference):
        raise FlowlabInputError(f"reference must be a flowlab.engine.system.Reference, got {type(reference).__name__}")
    if reference.all_global:
        raise FlowlabInputError(f"every critical point is a global minimum ({reference.all_global}): {what} are "
                                "not defined")
    if reference.unresolved:
        raise FlowlabInputError(f"{what}: no global/local verdict can be given ({reference.unresolved})")


# ------------------------------------------------------------------------------ flow method
def _rows(fn, y: np.ndarray, trailing: tuple) -> np.ndarray:
    """fn on the finite rows of y (NaN on the others: they fail alone), without warnings."""
    with np.errstate(all="ignore"):
        if np.isfinite(y).all():  # the usual case: one flat reduction, no per-row one
            return np.asarray(fn(y), dtype=np.float64).reshape((len(y),) + trailing)
        ok = np.all(np.isfinite(y), axis=1)
        out = np.full((len(y),) + trailing, np.nan)
        if ok.any():
            out[ok] = np.asarray(fn(y[ok]), dtype=np.float64).reshape((int(ok.sum()),) + trailing)
    return out


class _Decider:
    """The decision rule of the module docstring, as ``decide(y, f)`` for integrate_batch (f = -grad L).

    A system may offer ``loss_below(level)``: None, or a vectorised test of L(y) < level returning per row
    1 (below), 0 (not below) or -1 (not told), cheaper than the loss (e.g. an interval of a scalar
    observable); the loss is then evaluated only on the rows it does not tell and where |grad L| is small.
    """

    def __init__(self, system, reference: Reference, settings: FlowSettings, n: int):
        self.system, self.s = system, settings
        self.level = proof_level(reference)
        self.optimal, self.tol = reference.optimal_loss, reference.loss_tol
        self.need = n - (reference.set_dimension if self.level is not None else 0)
        self.below = None
        if self.level is not None and math.isfinite(self.level) and hasattr(system, "loss_below"):
            self.below = system.loss_below(self.level - settings.loss_margin)

    def _proved(self, y, loss):
        """Rows whose loss is below L_ng - margin (``loss``: the loss at every row, or None to compute it)."""
        bound = self.level - self.s.loss_margin
        if loss is not None:
            return loss < bound
        told = self.below(y)
        out = told == 1
        ask = np.flatnonzero(told == -1)
        if ask.size:
            out[ask] = _rows(self.system.loss, y[ask], ()) < bound
        return out

    def __call__(self, y, f):
        s = self.s
        small = np.sqrt(np.sum(f * f, axis=1)) <= s.grad_tol
        loss = _rows(self.system.loss, y, ()) if self.below is None else None
        out = np.full(len(y), UNDETERMINED, dtype=np.int8)
        if self.level is not None:  # proved: below every non-global critical value, only a global minimum remains
            out[self._proved(y, loss)] = GLOBAL
        if self.optimal is None:
            return out
        idx = np.flatnonzero(small & (out == UNDETERMINED))  # converged rows not yet decided
        if idx.size == 0:
            return out
        near = (loss[idx] if loss is not None else _rows(self.system.loss, y[idx], ())) - self.optimal
        if self.level is None:  # reached: converged onto the global level
            out[idx[near <= self.tol]] = GLOBAL
        idx = idx[near > self.tol]
        if idx.size:
            lam = np.linalg.eigvalsh(self.system.hessian(y[idx]))
            ok = np.all(lam >= -s.hess_tol, axis=1) & (np.sum(lam >= s.curvature_min, axis=1) >= self.need)
            out[idx[ok]] = NONGLOBAL
        return out


# ------------------------------------------------------------------------ pieces and processes
#: Pieces shared between processes hold at least this many points: smaller pieces cost more per point (one
#: process on a 256^2 ew grid labelled 2048-point pieces at 0.3x, 8192-point ones at 0.7x and 16384-point
#: ones at 0.8x the rate of 65536-point ones: each piece ends in a tail of steps on its few slowest rows,
#: where the per-step NumPy overhead dominates, about 0.1 s per piece).
MIN_PIECE = 16384
#: With ``workers`` unset, batches of at least this many points use the CPUs that are free (see
#: :func:`auto_processes`); smaller ones run in this process. Break-even measured on 2 cores (ew grid, one
#: other process busy, load ~1.8): in a fresh process (a cold fork server, as in a command-line run) two
#: processes took 1.18 s vs 1.17 s for one on 65536 points and 2.25 s vs 2.37 s on 131044; with the fork
#: server warm (a later call in the same process) 2.7 s vs 4.3 s on 262144 points (1.6x). Under heavier
#: load (4-7 on 2 cores) two processes ran at about 0.5x of one at every size: hence the load check.
#: Re-measure on an idle machine with benchmarks/basins.py.
AUTO_PROCESS_POINTS = 131072


def auto_processes(points: int, settings: FlowSettings, *, min_piece: int = MIN_PIECE,
                   threshold: int = AUTO_PROCESS_POINTS) -> int:
    """How many processes label ``points`` rows: ``settings.workers`` when set (at most one per point), else
    for at least ``threshold`` points the available CPUs that the 1-minute load average leaves free (this
    process's own included: a busy machine gains nothing from more processes, each handover of work then
    waits for a time slice), at most one per ``min_piece`` points, and one below; one in a daemonic process
    (e.g. a Dask worker), which may not start processes."""
    import multiprocessing
    import os

    if multiprocessing.current_process().daemon:
        return 1
    if settings.workers is not None:
        return max(1, min(settings.workers, points))
    if points < threshold:
        return 1
    free = available_cpus() - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, min(available_cpus(), round(free) + 1, points // max(1, min_piece)))


class _Job:
    """What a process needs to label rows: the system, its decision rule and the settings."""

    def __init__(self, system, reference: Reference, settings: FlowSettings):
        self.system, self.reference, self.settings = system, reference, settings
        self.n = len(system.params)
        self.decide = _Decider(system, reference, settings, self.n)

    def rhs(self, y):  # non-finite rows fail those points only (counted in the stats)
        return -_rows(self.system.gradient, y, (self.n,))

    def run(self, points: np.ndarray, progress=None) -> tuple[np.ndarray, dict]:
        """(labels, stats) of the rows of one piece."""
        from flowlab.engine.batch import integrate_batch

        s = self.settings
        res = integrate_batch(self.rhs, points, t_max=s.t_max, rtol=s.rtol, atol=s.atol, decide=self.decide,
                              decide_every=s.decide_every, progress=progress)
        return res.label, {"rhs_rows": int(res.n_rhs_rows), "steps": int(res.steps.sum()),
                           "failed": int(np.sum(res.status == -1)), "t_max_reached": int(np.sum(res.status == 0))}


#: The job of a worker process, set once by :func:`_start_worker` (the system is sent once, not per piece).
_WORKER: dict = {}


def _pickled(job: _Job) -> bytes:
    """The job as bytes for the helper processes (the system pickles as what it was made of, the decision rule
    with what it computed once, e.g. the ends of ``loss_below``)."""
    import pickle

    try:
        return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a system holding unpicklable state (e.g. a closure)
        raise FlowlabInputError(f"the system {type(job.system).__name__} cannot be sent to other processes "
                                f"({type(exc).__name__}: {exc}); label it with workers=1") from None


def _start_worker(payload: bytes) -> None:
    """Pool initializer: the job, built once from this process's parent's own bytes (:func:`_pickled`); Ctrl-C
    is the parent's to handle (it ends the pool)."""
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["job"] = pickle.loads(payload)


def _ready() -> bool:
    """A worker's first task: its completion tells the parent that a process is ready for a piece."""
    return True


def _run_piece(points: np.ndarray):
    return _WORKER["job"].run(points)


class _Pieces:
    """Hands out consecutive row ranges [start, stop) to whichever process asks (thread-safe), and adds up
    the finished work for the progress bar. With one process the pieces are ``chunk`` rows (one batch as
    far as memory allows); with several, a piece is the rest over the number of processes (at most ``chunk``,
    at least ``min_piece``): large pieces while helpers start, smaller ones at the end, so that the processes
    finish at about the same time with few pieces (each piece costs a slow tail of steps on its last rows)."""

    def __init__(self, total: int, processes: int, chunk: int, min_piece: int, progress):
        self.total, self.processes, self.chunk, self.min_piece = total, processes, chunk, min_piece
        self.next = self.done = self.partial = 0
        self.lock, self.progress = threading.Lock(), progress

    def take(self) -> tuple[int, int] | None:
        with self.lock:
            rest = self.total - self.next
            if rest <= 0:
                return None
            size = rest if self.processes == 1 else max(self.min_piece, -(-rest // self.processes))
            start, self.next = self.next, self.next + min(rest, size, self.chunk)
            return start, self.next

    def report(self, finished: int = 0, partial: int | None = None) -> None:
        """``finished`` more rows done in some process; ``partial`` rows done of this process's current piece."""
        with self.lock:
            self.done += finished
            if partial is not None:
                self.partial = partial
            if self.progress is not None:
                self.progress(self.done + self.partial)


def flow_labels(system, points, reference: Reference, settings: FlowSettings, *, progress=None,
                min_piece: int = MIN_PIECE, threshold: int = AUTO_PROCESS_POINTS):
    """Labels of the rows of ``points`` by the flow method; returns (labels int8, stats).

    The rows are integrated in pieces of at most ``settings.chunk`` points, by :func:`auto_processes`
    processes: this one, and the others from :func:`_label_in_pool` (``min_piece``, ``threshold``: see
    :func:`auto_processes`). Each row's trajectory (its steps, its decisions) is independent of the other rows of its
    batch, so the labels and the summed stats do not depend on the pieces nor on the processes.
    """
    points = np.asarray(points, dtype=np.float64)
    job = _Job(system, reference, settings)
    processes = auto_processes(len(points), settings, min_piece=min_piece, threshold=threshold)
    pieces = _Pieces(len(points), processes, settings.chunk, min(min_piece, -(-len(points) // processes)), progress)
    labels = np.empty(len(points), dtype=np.int8)
    stats = {"rhs_rows": 0, "steps": 0, "failed": 0, "t_max_reached": 0, "workers": processes}

    lock = threading.Lock()

    def store(piece, result) -> bool:  # called by this process's threads (here and the helpers' feeder)
        with lock:
            labels[piece[0] : piece[1]] = result[0]
            for key, value in result[1].items():
                stats[key] += value
        return True

    payload = None
    if processes > 1:
        try:
            payload = _pickled(job)
        except FlowlabInputError:
            if settings.workers is not None:  # asked for: say why it cannot be; by default: one process
                raise
            processes = stats["workers"] = pieces.processes = 1
    if payload is None:
        _label_here(job, points, pieces, store, lambda: None)
    else:
        _label_in_pool(job, points, pieces, store, processes - 1, payload, settings.workers is None)
    return labels, stats


def _label_here(job: _Job, points: np.ndarray, pieces: _Pieces, store, check) -> None:
    """Label pieces in this process until none is left to hand out; ``check()`` raises a helper's error."""

    def partial(k):
        check()
        pieces.report(partial=k)

    while (piece := pieces.take()) is not None:
        result = job.run(points[piece[0] : piece[1]], progress=partial)
        if store(piece, result):
            pieces.report(finished=piece[1] - piece[0], partial=0)
        check()


def _context(system):
    """Where helper processes come from: a fork server (started once per process, with the engine and the
    system's module imported) or, where there is none, "spawn"; never "fork" (the parent may hold threads,
    e.g. of BLAS or torch, whose locks a forked child would inherit held)."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__, type(system).__module__])  # no effect once it runs
    return ctx


class _Superseded(Exception):
    """A helper finished the piece that this process was labelling as well."""


class _Helpers:
    """The helper processes of :func:`_label_in_pool`, each sent the job once (pool initializer), and a thread
    that keeps each ready helper busy with one piece at a time until the pieces run out, a process fails (the
    error goes to ``errors``, the main thread raises it) or ``stop`` is set. With ``optional`` (helpers not
    asked for), helpers that fail to start are no error: this process labels every piece itself."""

    def __init__(self, points: np.ndarray, pieces: _Pieces, store, helpers: int, payload: bytes, system,
                 optional: bool):
        from concurrent.futures import Future

        self.points, self.pieces, self._store = points, pieces, store
        self.start, self.optional, self.started = (helpers, payload, _context(system)), optional, False
        self.pool, self.running = None, {}  # future -> its piece (None: the helper's start)
        self.stored: set[int] = set()
        self.lock, self.errors, self.stop = threading.Lock(), [], threading.Event()
        # the feeder sleeps until a helper is done or close() sets this: no periodic wake-up takes the GIL
        # from the main thread's labelling (on a busy machine each handover can wait for a time slice)
        self.wakeup = Future()
        self.thread = threading.Thread(target=self.feed, daemon=True)
        self.thread.start()

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def store(self, piece, result) -> bool:
        """Store a piece's labels unless its other copy (see :meth:`busiest`) was stored first."""
        with self.lock:
            if piece[0] in self.stored:
                return False
            self.stored.add(piece[0])
        self._store(piece, result)
        return True

    def busiest(self):
        """(future, piece) of the piece a helper took last and is still labelling, or None."""
        with self.lock:
            for future, piece in reversed(list(self.running.items())):
                if piece is not None and piece[0] not in self.stored and not future.done():
                    return future, piece
        return None

    def feed(self) -> None:
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        try:  # the pool starts here: the first start of a fork server takes a while, the main thread works on
            helpers, payload, context = self.start
            self.pool = ProcessPoolExecutor(helpers, mp_context=context, initializer=_start_worker,
                                            initargs=(payload,))
            with self.lock:
                self.running.update({self.pool.submit(_ready): None for _ in range(helpers)})
            while not self.stop.is_set() and self.running:
                with self.lock:
                    futures = list(self.running)
                for future in wait([*futures, self.wakeup], return_when=FIRST_COMPLETED)[0]:
                    if future is self.wakeup:
                        continue
                    piece, result = self.running[future], future.result()
                    self.started = True
                    if piece is not None and self.store(piece, result):
                        self.pieces.report(finished=piece[1] - piece[0])
                    new = None if self.stop.is_set() else self.pieces.take()
                    with self.lock:
                        del self.running[future]
                        if new is not None:
                            self.running[self.pool.submit(_run_piece, self.points[new[0] : new[1]])] = new
        except BaseException as exc:  # handed to the main thread (unless no helper could start and none was asked for)
            if self.started or not self.optional:
                self.errors.append(exc)
            self.stop.set()

    def close(self) -> None:
        self.stop.set()
        if not self.wakeup.done():
            self.wakeup.set_result(None)
        self.thread.join()
        if self.pool is not None:
            _end_pool(self.pool)


def _label_in_pool(job: _Job, points: np.ndarray, pieces: _Pieces, store, helpers: int, payload: bytes,
                   optional: bool) -> None:
    """Label with this process and ``helpers`` other processes (:class:`_Helpers`).

    This process labels pieces from the start while the helpers start (a fork of the fork server, then the
    system rebuilt from what it was made of); a helper takes a piece only once it is ready. When no piece
    is left to hand out, this process labels the pieces that helpers are still on as well (the labels are
    the same; the first copy done is kept), so a helper slowed down by a busy machine delays nobody. An
    error in any process, or Ctrl-C (the helpers ignore it), ends every helper before it propagates.
    """
    pool = _Helpers(points, pieces, store, helpers, payload, job.system, optional)
    try:
        _label_here(job, points, pieces, pool.store, pool.check)
        while (item := pool.busiest()) is not None:
            _label_copy(job, points, item, pool)
        while pool.thread.is_alive() and pieces.done < pieces.total:
            pool.thread.join(0.05)
        pool.check()
    finally:
        pool.close()


def _label_copy(job: _Job, points: np.ndarray, item, pool: _Helpers) -> None:
    """Label the piece of ``item`` = (future, piece) here too, unless its helper finishes it first."""
    future, piece = item

    def partial(k):
        pool.check()
        if future.done():
            raise _Superseded

    try:
        result = job.run(points[piece[0] : piece[1]], progress=partial)
    except _Superseded:
        return
    if pool.store(piece, result):
        pool.pieces.report(finished=piece[1] - piece[0], partial=0)


def _end_pool(pool) -> None:
    """Shut ``pool`` down and end its processes now (a helper may still be starting, or working on a piece
    after an error): none is left behind."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()
    pool.shutdown(wait=True)


def refuse_if_slow(system, points, reference, settings, max_seconds: float, what: str, advice: str):
    """Refuse, before the work, a labelling estimated (from a pilot of 1024 of the points) to take longer
    than ``max_seconds``. Returns (pilot row indices, their labels, stats) so the pilot's work is kept;
    None up to 1024 points (the pilot would be the work itself: nothing to estimate)."""
    if len(points) <= PILOT_POINTS:
        return None
    t1 = time.perf_counter()
    idx = np.sort(np.random.default_rng(0).choice(len(points), PILOT_POINTS, replace=False))
    labels, stats = flow_labels(system, points[idx], reference, settings)
    rate = len(idx) / max(time.perf_counter() - t1, 1e-9)
    estimate = len(points) / rate
    if estimate > max_seconds:
        raise FlowlabInputError(
            f"the {len(points)}-point {what} would take about {estimate:.0f} s at {rate:.0f} points/s "
            f"(pilot of {len(idx)} points), above max_seconds={max_seconds!r}; {advice} or raise max_seconds"
        )
    return idx, labels, stats


def label_points(system, points, reference, settings, *, max_seconds, quiet, desc, what, advice):
    """:func:`refuse_if_slow`, then :func:`flow_labels` of the points the pilot did not label, with a tqdm
    bar on stderr (unless ``quiet``). The labels are those of one :func:`flow_labels` call on all points
    (each row's trajectory is independent of the others)."""
    from tqdm.auto import tqdm

    pilot = refuse_if_slow(system, points, reference, settings, max_seconds, what, advice)
    if pilot is None:
        rest, done = points, 0
    else:
        keep = np.ones(len(points), dtype=bool)
        keep[pilot[0]] = False
        rest, done = points[keep], len(pilot[0])
    with tqdm(total=len(points), desc=desc, disable=quiet, file=sys.stderr, unit="pt", smoothing=0.1) as bar:
        bar.update(done)
        labels, stats = flow_labels(system, rest, reference, settings, progress=lambda k: bar.update(done + k - bar.n))
    if pilot is None:
        return labels, stats
    out = np.empty(len(points), dtype=np.int8)
    out[keep], out[pilot[0]] = labels, pilot[1]
    for key in ("rhs_rows", "steps", "failed", "t_max_reached"):
        stats[key] += pilot[2][key]
    return out, stats


# ---------------------------------------------------------------------------- grid results
def label_counts(label: np.ndarray) -> dict[str, int]:
    """{"global", "nonglobal", "undetermined", "total"} of an array of labels."""
    return {
        "global": int(np.sum(label == GLOBAL)),
        "nonglobal": int(np.sum(label == NONGLOBAL)),
        "undetermined": int(np.sum(label == UNDETERMINED)),
        "total": int(label.size),
    }


def _message(counts: dict, what: str) -> str:
    return (f"{what}: {counts['global']} global, {counts['nonglobal']} non-global, "
            f"{counts['undetermined']} undetermined of {counts['total']}")


@dataclass(frozen=True)
class BasinGrid:
    """Labels on a grid: ``label[i, j, ...]`` belongs to ``axes[params[0]][i], axes[params[1]][j], ...``.

    ``system`` is the system's ``describe()``; ``reference`` the levels the labels rest on; ``sets``
    the critical sets in the box (display only). A fixed parameter has an axis of length 1.
    """

    system: dict
    params: tuple[str, ...]
    axes: dict[str, np.ndarray]
    label: np.ndarray  # shape (N, ..., N), indexing="ij" in params order
    method: str
    reference: Reference
    settings: dict
    seconds: float
    seconds_by_phase: dict = field(default_factory=dict)
    sets: BoxSets = BoxSets()
    cross_check: dict | None = None
    stats: dict = field(default_factory=dict)

    status: ClassVar[str] = "ok"

    @property
    def message(self) -> str:
        return _message(self.counts(), f"{'x'.join(str(n) for n in self.label.shape)} grid, method {self.method}")

    def counts(self) -> dict[str, int]:
        return label_counts(self.label)

    def fractions(self) -> dict[str, float]:
        c = self.counts()
        return {k: c[k] / c["total"] for k in ("global", "nonglobal", "undetermined")}

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "message": self.message,
            **self.system,
            "params": list(self.params),
            "grid": {k: {"lo": float(v[0]), "hi": float(v[-1]), "n": int(v.size)} for k, v in self.axes.items()},
            "shape": list(self.label.shape),
            "method": self.method,
            "settings": self.settings,
            "reference": self.reference.as_dict(),
            "optimal_loss": self.reference.optimal_loss,
            "labels": label_rules(self.reference, self.sets),
            "counts": self.counts(),
            "fractions": self.fractions(),
            "cross_check": self.cross_check,
            "stats": self.stats,
            "seconds": self.seconds,
            "seconds_by_phase": self.seconds_by_phase,
        }

    #: The files of a saved grid; the folder holding them is the result (one atomic unit).
    FILES: ClassVar[tuple[str, ...]] = ("basins.npz", "basins.json")

    def save(self, out) -> list[Path]:
        """Write the folder ``out`` with ``basins.npz`` (axes by parameter name + ``label``) and ``basins.json``.

        The folder is one unit: built under a temporary sibling name and renamed into place
        (:func:`flowlab.engine.io.atomic_folder`), so an interrupt never leaves a new ``basins.npz``
        beside an old ``basins.json``. ``out`` must be new, empty or an earlier grid result.
        """
        import io as _io

        from flowlab.engine.io import atomic_folder, atomic_write_bytes, to_json

        buf = _io.BytesIO()
        np.savez_compressed(buf, label=self.label, **{k: v for k, v in self.axes.items()})
        payload = (buf.getvalue(), to_json(self.as_dict()).encode("utf-8"))
        with atomic_folder(out, "basins folder", self.FILES) as tmp:
            for name, data in zip(self.FILES, payload):
                atomic_write_bytes(tmp / name, data)
        return [Path(out) / name for name in self.FILES]


def grid_axes(params, box, n: int, fixed=None, *, what: str = "the system") -> dict[str, np.ndarray]:
    """One axis per parameter: n points over its range in ``box`` ({name: (lo, hi)}), or the single
    value of a ``fixed`` parameter ({name: value}). Grids above :data:`MAX_POINTS` are refused."""
    params = tuple(params)
    n = integer(n, "grid (points per axis)", 2)
    fixed = dict(fixed or {})
    box = dict(box or {})
    unknown = [k for k in fixed if k not in params]
    clash = [k for k in fixed if k in box]
    if unknown or clash:
        raise FlowlabInputError(
            f"fixed parameters must be parameters of {what} {list(params)} without a range; "
            f"got {', '.join(unknown + clash)}"
        )
    if len(fixed) >= len(params):
        raise FlowlabInputError("at least one parameter must vary over the grid")
    fixed = {k: real_number(v, f"fixed value of {k}") for k, v in fixed.items()}
    extra, missing = [k for k in box if k not in params], [k for k in params if k not in box and k not in fixed]
    if extra or missing:
        raise FlowlabInputError(f"the box needs a range (lo, hi) for each of {list(params)} that is not fixed; "
                                f"unknown: {extra}, missing: {missing}")
    for k, (lo, hi) in box.items():
        if not real_number(lo, f"box lower bound of {k}") < real_number(hi, f"box upper bound of {k}"):
            raise FlowlabInputError(f"box of {k} must have lo < hi, got {lo}:{hi}")
    total = n ** (len(params) - len(fixed))
    if total > MAX_POINTS:
        raise FlowlabInputError(
            f"a {'x'.join([str(n)] * len(params))} grid has {total:.3g} points, above the limit "
            f"{MAX_POINTS:.3g} (labels alone would take {total / 2**30:.2g} GiB and the flow at ~1e5 points/s "
            f"about {total / 1e5 / 3600:.2g} h); use a coarser grid or a smaller range"
        )
    return {k: np.array([fixed[k]]) if k in fixed else np.linspace(*map(float, box[k]), n) for k in params}


def grid_points(axes: dict) -> np.ndarray:
    """The (M, n) points of the grid, in the order of ``label.reshape(-1)`` (indexing ij)."""
    return np.stack(np.meshgrid(*axes.values(), indexing="ij"), axis=-1).reshape(-1, len(axes))


def basin_grid(system, box, grid: int = 128, *, fixed=None, reference: Reference | None = None,
               settings: FlowSettings | None = None, max_seconds: float = 1800.0, quiet: bool = True,
               sets: BoxSets = BoxSets(), desc: str | None = None) -> BasinGrid:
    """Label every point of a grid over ``box`` ({name: (lo, hi)} for every parameter not ``fixed``) by the flow.

    ``reference`` defaults to ``system.reference()``. A grid whose estimated time (from a pilot of
    1024 points) exceeds ``max_seconds`` is refused before the work starts.
    """
    settings = settings or FlowSettings()
    max_seconds = real_number(max_seconds, "max_seconds")
    axes = grid_axes(system.params, box, grid, fixed, what=repr(system.name))
    reference = system.reference() if reference is None else reference
    check_reference(reference)
    t0 = time.perf_counter()
    mesh = grid_points(axes)
    labels, stats = label_points(system, mesh, reference, settings, max_seconds=max_seconds, quiet=quiet,
                                 desc=desc or f"basins {system.name}", what="grid", advice="use a coarser grid")
    seconds = time.perf_counter() - t0
    stats["points_per_s"] = len(mesh) / max(seconds, 1e-12)
    return BasinGrid(
        system=system.describe(), params=tuple(system.params), axes=axes,
        label=labels.reshape([v.size for v in axes.values()]), method="flow", reference=reference,
        settings={"grid": grid, "fixed": {k: float(v[0]) for k, v in axes.items() if v.size == 1},
                  **settings.as_dict()},
        seconds=seconds, seconds_by_phase={"labels": seconds}, sets=sets, stats=stats,
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


def check_gaussian(sigma, samples, n_params: int) -> tuple[float, int]:
    """(sigma, samples) checked: sigma > 0, 1 <= samples <= :data:`MAX_POINTS`."""
    sigma = real_number(sigma, "sigma")
    if sigma <= 0:
        raise FlowlabInputError(f"sigma must be positive, got {sigma}")
    if isinstance(samples, int) and samples > MAX_POINTS:
        raise FlowlabInputError(
            f"{samples} draws are above the limit {MAX_POINTS} (the starts alone would take "
            f"{samples * 8 * n_params / 2**30:.3g} GiB); use fewer samples"
        )
    return sigma, integer(samples, "samples", 1, MAX_POINTS)


def gaussian_starts(sigma: float, samples: int, seed: int, n_params: int) -> np.ndarray:
    """``samples`` draws theta0 ~ N(0, sigma^2 I) in n_params dimensions (seeded); too many are refused."""
    sigma, samples = check_gaussian(sigma, samples, n_params)
    seed = integer(seed, "seed", 0)
    return np.random.default_rng(seed).normal(0.0, sigma, size=(samples, n_params))


@dataclass(frozen=True)
class GaussianBasin:
    """P(reach a global minimum) for theta0 ~ N(0, sigma^2 I), from the label counts of ``samples`` draws.

    ``ci95`` is the Wilson interval, widened to cover the undetermined draws: its lower end counts
    them as not global, its upper end as global.
    """

    system: dict
    params: tuple[str, ...]
    sigma: float
    samples: int
    seed: int
    method: str
    reference: Reference
    n_global: int
    n_nonglobal: int
    n_undetermined: int
    seconds: float
    seconds_by_phase: dict = field(default_factory=dict)
    sets: BoxSets = BoxSets()

    status: ClassVar[str] = "ok"

    @classmethod
    def from_labels(cls, labels, **fields) -> GaussianBasin:
        c = label_counts(np.asarray(labels))
        return cls(n_global=c["global"], n_nonglobal=c["nonglobal"], n_undetermined=c["undetermined"], **fields)

    @property
    def prob_global(self) -> float:
        return self.n_global / self.samples

    @property
    def ci95(self) -> tuple[float, float]:
        return (wilson_interval(self.n_global, self.samples)[0],
                wilson_interval(self.n_global + self.n_undetermined, self.samples)[1])

    def counts(self) -> dict[str, int]:
        return {"global": self.n_global, "nonglobal": self.n_nonglobal, "undetermined": self.n_undetermined,
                "total": self.samples}

    @property
    def message(self) -> str:
        lo, hi = self.ci95
        return _message(self.counts(), f"P(global) = {self.prob_global:.4g}, 95% interval [{lo:.4g}, {hi:.4g}]")

    def as_dict(self) -> dict:
        return {
            "status": self.status, "message": self.message, **self.system, "params": list(self.params),
            "sigma": self.sigma, "samples": self.samples, "seed": self.seed, "method": self.method,
            "prob_global": self.prob_global, "ci95": list(self.ci95), "counts": self.counts(),
            "reference": self.reference.as_dict(), "optimal_loss": self.reference.optimal_loss,
            "labels": label_rules(self.reference, self.sets),
            "seconds": self.seconds, "seconds_by_phase": self.seconds_by_phase,
        }


def gaussian_basin(system, sigma: float, samples: int = 1000, seed: int = 0, *, reference: Reference | None = None,
                   settings: FlowSettings | None = None, max_seconds: float = 1800.0, quiet: bool = True,
                   sets: BoxSets = BoxSets(), desc: str | None = None) -> GaussianBasin:
    """P(reach a global minimum) for theta0 ~ N(0, sigma^2 I) by the flow, with a 95% interval.

    More than 2^27 draws, or draws estimated (from a pilot of 1024) to take longer than
    ``max_seconds``, are refused before the work.
    """
    theta = gaussian_starts(sigma, samples, seed, len(system.params))
    max_seconds = real_number(max_seconds, "max_seconds")
    settings = settings or FlowSettings()
    reference = system.reference() if reference is None else reference
    check_reference(reference, "which minimum a random initialisation reaches")
    t0 = time.perf_counter()
    labels, _ = label_points(system, theta, reference, settings, max_seconds=max_seconds, quiet=quiet,
                             desc=desc or f"gaussian {system.name}", what="Gaussian sample", advice="use fewer samples")
    seconds = time.perf_counter() - t0
    return GaussianBasin.from_labels(
        labels, system=system.describe(), params=tuple(system.params), sigma=float(sigma), samples=len(theta),
        seed=seed, method="flow", reference=reference, seconds=seconds, seconds_by_phase={"labels": seconds},
        sets=sets,
    )
