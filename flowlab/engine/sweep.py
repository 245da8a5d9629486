"""Sweeps: one analysis per cell of a grid over named data parameters, on Dask, stored in Zarr.

A system describes its sweep with a :class:`SweepDefinition` (dimension names and coordinates,
the per-cell function, the output variables, a per-worker setup); this module knows no system.

* **Tiles**: the grid is cut into tiles (blocks of cells, aligned with the Zarr chunks); a tile is
  one Dask task. The per-worker state (compiled models) is built once per worker process
  (:func:`_worker_state`, cached by the settings).
* **Storage**: an ``xarray.Dataset`` (dims = swept parameters, variables = measured quantities,
  attrs = settings and versions) in a Zarr store. The client alone writes: a tile's region first,
  then the tile is recorded in the manifest ``flowlab-sweep.json`` (written atomically). A tile is
  done only when recorded, so a kill -9 at any moment loses at most the tiles in flight; a rerun
  (resume) computes only the unrecorded tiles and rewrites their chunks whole, giving the same
  bytes as an uninterrupted run (cells depend only on the settings and their index).
* A store made with other settings is refused, never mixed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flowlab.engine.checks import integer, real_number
from flowlab.engine.defaults import available_cpus
from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.io import atomic_write_text, check_output_dir, remove_stale_partials, to_json

MANIFEST = "flowlab-sweep.json"
#: Largest grid accepted (cells) and largest store (bytes) before any work.
MAX_CELLS = 2**22
MAX_STORE_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Variable:
    """One measured quantity per cell: name, NumPy dtype, fill value (not computed) and a description."""

    name: str
    dtype: str
    fill: Any
    description: str
    codes: dict | None = None  # for a status variable: {name: code}


@dataclass(frozen=True)
class SweepDefinition:
    """What a system sweeps. ``cell(state, coords, index, settings)`` returns {variable: value} for the
    cell at ``coords`` ({dim: value}) with flat index ``index`` (C order over ``dims``); ``setup(settings)``
    builds the per-worker state. Both must be module-level functions (picklable). ``seconds_per_cell``
    is the up-front estimate used to refuse unbounded sweeps."""

    system: str
    dims: tuple[str, ...]
    coords: dict
    variables: tuple[Variable, ...]
    settings: dict
    cell: Callable
    setup: Callable
    seconds_per_cell: float
    tile: tuple[int, ...] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in self.dims)

    def tile_shape(self) -> tuple[int, ...]:
        """The tile (= chunk) shape: the given one, or 1 along leading dims and up to 4 along the last two."""
        if self.tile is not None:
            return tuple(max(1, min(int(t), n)) for t, n in zip(self.tile, self.shape))
        k = len(self.shape)
        return tuple(1 if i < k - 2 else min(4, n) for i, n in enumerate(self.shape))

    def identity(self) -> dict:
        """Everything a stored result depends on: a store with another identity is refused."""
        from flowlab import __version__

        return {"system": self.system, "dims": list(self.dims),
                "coords": {d: [float(v) for v in self.coords[d]] for d in self.dims},
                "settings": self.settings, "tile": list(self.tile_shape()), "flowlab": __version__}


def parse_range(text: str, name: str) -> np.ndarray:
    """``START:STOP:N`` (N points from START to STOP inclusive), ``A,B,C`` or one number, as float64."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            lo, hi = real_number(float(parts[0]), name), real_number(float(parts[1]), name)
            n = int(parts[2])
            if n < 1 or n > MAX_CELLS or (n == 1 and lo != hi) or (n > 1 and not lo < hi):
                raise ValueError
            return np.linspace(lo, hi, n, dtype=np.float64)
        values = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except (ValueError, FlowlabInputError):
        raise FlowlabInputError(
            f"{name} must be START:STOP:N (START < STOP, 1 <= N <= {MAX_CELLS}), a list A,B,C or one number; "
            f"got {text!r}") from None
    if not np.all(np.isfinite(values)) or len(np.unique(values)) != len(values):
        raise FlowlabInputError(f"{name} values must be finite and distinct, got {text!r}")
    return values


def integer_axis(values, name: str, minimum: int, maximum: int | None = None) -> np.ndarray:
    """A swept integer parameter: distinct integers in [minimum, maximum], as float64 coordinates."""
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    shown = [float(v) for v in arr.ravel()][:8]
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise FlowlabInputError(f"{name} must be a non-empty list of integers (a range START:STOP:N must fall on "
                                f"integers), got {shown}")
    for v in arr:
        integer(int(v), name, minimum, maximum)
    if len(np.unique(arr)) != arr.size:
        raise FlowlabInputError(f"{name} values must be distinct, got {shown}")
    return arr


# ------------------------------------------------------------------------------ tiles
def tiles(shape, tile) -> list[tuple[slice, ...]]:
    """The tiles of a grid, in C order of their corners."""
    starts = [range(0, n, t) for n, t in zip(shape, tile)]
    return [tuple(slice(s, min(s + t, n)) for s, t, n in zip(c, tile, shape)) for c in product(*starts)]


_STATE: dict = {}


def _worker_state(definition: SweepDefinition):
    """The per-worker state, built once per process and settings; also the CPU seconds its setup took
    in this call (0.0 when it was built before)."""
    key = json.dumps(definition.identity(), sort_keys=True)
    cpu = 0.0
    if key not in _STATE:
        _STATE.clear()
        c0 = time.thread_time()
        _STATE[key] = definition.setup(definition.settings)
        cpu = time.thread_time() - c0
    return _STATE[key], cpu


def compute_tile(definition: SweepDefinition, region: tuple[slice, ...]) -> dict[str, np.ndarray]:
    """The variables of every cell of one tile (runs on a worker)."""
    return _timed_tile(definition, region)[0]


def _timed_tile(definition: SweepDefinition, region: tuple[slice, ...]) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`compute_tile` and the CPU seconds (this thread) of the per-worker setup it paid and of its cells."""
    state, setup_cpu = _worker_state(definition)
    c0 = time.thread_time()
    out = _cells(definition, region, state)
    return out, {"setup": setup_cpu, "cells": time.thread_time() - c0}


def _cells(definition: SweepDefinition, region: tuple[slice, ...], state) -> dict[str, np.ndarray]:
    shape = tuple(s.stop - s.start for s in region)
    out = {v.name: np.full(shape, v.fill, dtype=v.dtype) for v in definition.variables}
    for local in np.ndindex(*shape):
        idx = tuple(s.start + i for s, i in zip(region, local))
        coords = {d: float(definition.coords[d][i]) for d, i in zip(definition.dims, idx)}
        values = definition.cell(state, coords, int(np.ravel_multi_index(idx, definition.shape)), definition.settings)
        for name, value in values.items():
            out[name][local] = value
    return out


# ---------------------------------------------------------------------------- storage
def _versions() -> dict:
    import dask
    import numpy
    import xarray
    import zarr

    from flowlab import __version__

    return {"flowlab": __version__, "numpy": numpy.__version__, "dask": dask.__version__,
            "xarray": xarray.__version__, "zarr": zarr.__version__}


def read_manifest(store: Path) -> dict | None:
    path = store / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _write_manifest(store: Path, identity: dict, done: set, total: int) -> None:
    atomic_write_text(store / MANIFEST, to_json(
        {"identity": identity, "tiles_done": sorted(done), "tiles_total": total, "complete": len(done) == total}))


def _create_store(definition: SweepDefinition, store: Path, total: int) -> None:
    """An empty store (fill values, metadata only) built in a hidden sibling and renamed into place."""
    import dask.array as da
    import xarray as xr

    tmp = store.with_name(f".{store.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    chunks = definition.tile_shape()
    data = {v.name: (definition.dims, da.full(definition.shape, v.fill, dtype=v.dtype, chunks=chunks),
                     {"description": v.description, **({"codes": json.dumps(v.codes)} if v.codes else {})})
            for v in definition.variables}
    ds = xr.Dataset(data, coords={d: np.asarray(definition.coords[d], dtype=np.float64) for d in definition.dims},
                    attrs={"system": definition.system, "settings": json.dumps(definition.settings),
                           "versions": json.dumps(_versions()), "flowlab_sweep": json.dumps(definition.identity())})
    encoding = {v.name: {"chunks": chunks, "fill_value": v.fill} for v in definition.variables}
    try:
        ds.to_zarr(tmp, compute=False, encoding=encoding, consolidated=False, mode="w")
        _write_manifest(tmp, definition.identity(), set(), total)
        os.rename(tmp, store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # after a kill -9 the next run removes it (open_store)
        raise


def open_store(definition: SweepDefinition, store, resume: bool) -> set:
    """Check or create the store; return the tiles already done. Refuse a store of other settings."""
    store = Path(store)
    if _check_store(definition, store, resume):
        _create_store(definition, store, len(tiles(definition.shape, definition.tile_shape())))
        return set()
    return set(read_manifest(store)["tiles_done"])


def _check_store(definition: SweepDefinition, store: Path, resume: bool) -> bool:
    """Whether the store must be created (True) or resumed (False); refuse a store of other settings or a
    folder that is not a sweep store; with ``resume`` False an earlier sweep store is removed.

    First the hidden ``.STORE.partial-PID`` folders that a kill -9 during creation left are removed when
    their process is gone (one whose process is alive is never touched)."""
    remove_stale_partials(store)
    if store.exists():
        manifest = read_manifest(store) if store.is_dir() else None
        if manifest is None:
            if store.is_dir() and not any(store.iterdir()):
                store.rmdir()
            else:
                raise FlowlabInputError(f"--out {store} exists and is not a flowlab sweep store; choose a new path")
        elif not resume:
            shutil.rmtree(store)  # an earlier sweep store, replaced as asked (--no-resume)
        elif manifest["identity"] != json.loads(json.dumps(definition.identity())):
            raise FlowlabInputError(
                f"--out {store} holds a sweep with other settings ({_difference(manifest['identity'], definition)}); "
                "use another path, or --no-resume to replace it")
        else:
            return False
    check_output_dir(store)
    return True


def _difference(old: dict, definition: SweepDefinition) -> str:
    new = json.loads(json.dumps(definition.identity()))
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if "settings" in keys:
        s_old, s_new = old.get("settings", {}), new["settings"]
        keys = [k for k in keys if k != "settings"] + [
            f"{k}: {s_old.get(k)!r} there, {s_new.get(k)!r} now"
            for k in sorted(set(s_old) | set(s_new)) if s_old.get(k) != s_new.get(k)]
    return "differs in " + "; ".join(keys)


@contextlib.contextmanager
def _quiet_zarr():
    """Zarr warns about the manifest, a file of the store it does not know: expected here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flowlab-sweep.*not recognized as a component of a Zarr hierarchy")
        yield


def _write_tile(group, region, values: dict) -> None:
    for name, arr in values.items():
        group[name][region] = arr


# ------------------------------------------------------------------------------ dask
_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+(:\d{1,5})?$|^[A-Za-z0-9.\-]+:\d{1,5}$")


def check_scheduler(address: str) -> str:
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise FlowlabInputError(f"--scheduler must be a Dask scheduler address such as tcp://HOST:PORT, got {address!r}")
    return address


def _client(scheduler, workers: int, processes: bool):
    """A Dask client on an existing scheduler, or on a new LocalCluster of ``workers`` single-thread workers."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(check_scheduler(scheduler), timeout=5)
        except (OSError, TimeoutError) as exc:
            raise FlowlabInputError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); "
                                    "start one (dask scheduler) or omit --scheduler for a local cluster") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster)


def _create_while_connecting(definition: SweepDefinition, store: Path, total: int, scheduler, workers: int,
                             processes: bool):
    """Create the store in a thread while the Dask client starts (local workers spend that time importing their
    modules in their own processes, this process mostly waits); return the client."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        made = pool.submit(_create_store, definition, store, total)
        client = None
        try:
            client = _client(scheduler, workers, processes)
            made.result()
        except BaseException:
            if client is not None:
                _close(client, scheduler)
            raise
    return client


def _close(client, scheduler) -> None:
    cluster = getattr(client, "cluster", None) if scheduler is None else None
    client.close()
    if cluster is not None:
        cluster.close()


# ------------------------------------------------------------------------------- run
@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: the store, tiles computed now and found done, the cell status counts."""

    store: str
    system: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    tiles_total: int
    tiles_computed: int
    tiles_resumed: int
    workers: int
    scheduler: str
    counts: dict
    seconds: float
    settings: dict = field(default_factory=dict)
    #: Wall seconds by phase: ``prepare`` (check the store; create it while the Dask client starts, local workers
    #: importing their modules meanwhile), ``tiles`` (first submit to last tile recorded), ``close`` (the client
    #: and a local cluster). Only ``prepare`` when nothing was left to compute.
    seconds_by_phase: dict = field(default_factory=dict)
    #: CPU seconds on the workers of the tiles computed now: ``setup`` (per-worker state, summed over the
    #: workers) and ``cells``; with ``seconds_by_phase["tiles"]`` they show how busy the workers were.
    cpu_seconds: dict = field(default_factory=dict)

    status: ClassVar[str] = "ok"

    @property
    def cells(self) -> int:
        return math.prod(self.shape)

    @property
    def message(self) -> str:
        return (f"{self.cells} cells in {self.tiles_total} tiles: {self.tiles_computed} computed now, "
                f"{self.tiles_resumed} found done; stored in {self.store}")

    def open(self):
        """The stored ``xarray.Dataset``."""
        return open_dataset(self.store)

    def as_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "system": self.system, "store": self.store,
                "dims": list(self.dims), "shape": list(self.shape), "cells": self.cells,
                "tiles": {"total": self.tiles_total, "computed": self.tiles_computed, "resumed": self.tiles_resumed},
                "workers": self.workers, "scheduler": self.scheduler, "settings": self.settings,
                "counts": self.counts, "seconds": self.seconds, "seconds_by_phase": self.seconds_by_phase,
                "cpu_seconds": self.cpu_seconds}


def open_dataset(store):
    """The stored sweep as an ``xarray.Dataset`` (lazy; fill values where a tile is not done)."""
    import xarray as xr

    with _quiet_zarr():
        return xr.open_zarr(store, consolidated=False, mask_and_scale=False).load()


def refuse_if_unbounded(definition: SweepDefinition, workers: int, max_seconds: float) -> None:
    """Refuse, with the estimate, a grid above :data:`MAX_CELLS`, a store above :data:`MAX_STORE_BYTES`
    or an estimated time above ``max_seconds``."""
    cells = math.prod(definition.shape)
    size = cells * sum(np.dtype(v.dtype).itemsize for v in definition.variables)
    seconds = cells * definition.seconds_per_cell / max(1, workers)
    if cells > MAX_CELLS:
        raise FlowlabInputError(f"the grid has {cells} cells, above the limit {MAX_CELLS}; use fewer points")
    if size > MAX_STORE_BYTES:
        raise FlowlabInputError(f"the store would take {size / 2**30:.3g} GiB, above {MAX_STORE_BYTES / 2**30:g} GiB; "
                                "use fewer points")
    if seconds > max_seconds:
        raise FlowlabInputError(
            f"the sweep is estimated at {seconds:.3g} s ({cells} cells x {definition.seconds_per_cell:.3g} s per cell "
            f"/ {workers} workers), above --max-seconds {max_seconds:g}; use fewer points or starts, more workers, "
            "or raise --max-seconds")


def run_sweep(definition: SweepDefinition, store, *, scheduler: str | None = None, workers: int | None = None,
              resume: bool = True, processes: bool = True, max_seconds: float = 86400.0,
              quiet: bool = False) -> SweepResult:
    """Compute the missing tiles of ``definition`` into the Zarr ``store`` (see the module docstring)."""
    import zarr
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    workers = available_cpus() if workers is None else integer(workers, "workers", 1, 1024)
    max_seconds = real_number(max_seconds, "max_seconds")
    if scheduler is not None:
        check_scheduler(scheduler)
    refuse_if_unbounded(definition, workers, max_seconds)
    store = Path(store)
    regions = tiles(definition.shape, definition.tile_shape())
    phases, cpu, client = {}, {"setup": 0.0, "cells": 0.0}, None
    try:
        if _check_store(definition, store, resume):
            client = _create_while_connecting(definition, store, len(regions), scheduler, workers, processes)
        with _store_lock(store):
            done = set(read_manifest(store)["tiles_done"])
            todo = [i for i in range(len(regions)) if i not in done]
            resumed = len(done)
            if todo:
                client = client or _client(scheduler, workers, processes)
                workers = len(client.scheduler_info().get("workers", {})) or workers
                phases["prepare"] = time.perf_counter() - t0
                _compute(client, definition, store, regions, todo, done, cpu, quiet, tqdm, zarr)
                phases["tiles"] = time.perf_counter() - t0 - phases["prepare"]
    finally:
        if client is not None:
            t1 = time.perf_counter()
            _close(client, scheduler)
            phases["close"] = time.perf_counter() - t1
    phases.setdefault("prepare", time.perf_counter() - t0)
    return SweepResult(store=str(store), system=definition.system, dims=definition.dims, shape=definition.shape,
                       tiles_total=len(regions), tiles_computed=len(todo), tiles_resumed=resumed, workers=workers,
                       scheduler=scheduler or "local", counts=_status_counts(store), seconds=time.perf_counter() - t0,
                       settings=definition.settings, seconds_by_phase=phases, cpu_seconds=cpu)


@contextlib.contextmanager
def _store_lock(store: Path):
    """One writer per store: an exclusive ``flock`` on ``STORE/.flowlab-sweep.lock`` (released by the
    system if the process dies, so a kill -9 leaves no stale lock)."""
    import fcntl

    with open(store / ".flowlab-sweep.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlowlabInputError(f"another sweep is writing {store} now; wait for it or use another --out") from None
        yield


def _compute(client, definition, store, regions, todo, done, cpu, quiet, tqdm, zarr) -> None:
    """Submit the tiles, write each one as it completes, then record it in the manifest; add the workers'
    CPU seconds to ``cpu``."""
    from distributed import as_completed

    identity = definition.identity()
    with _quiet_zarr():
        group = zarr.open_group(str(store), mode="r+")
    futures = {client.submit(_timed_tile, definition, regions[i], key=f"flowlab-tile-{os.getpid()}-{i}",
                             pure=False): i for i in todo}
    with tqdm(total=len(regions), initial=len(done), desc=f"sweep {definition.system}", unit="tile",
              disable=quiet) as bar:
        for future in as_completed(futures):
            i = futures[future]
            values, seconds = future.result()
            _write_tile(group, regions[i], values)
            done.add(i)
            _write_manifest(store, identity, done, len(regions))
            for k, v in seconds.items():
                cpu[k] += v
            bar.update(1)


def _status_counts(store: Path) -> dict:
    """Cells by ``status`` code name (when the definition has a ``status`` variable) and ``total``."""
    group_ds = open_dataset(store)
    counts: dict = {}
    if "status" in group_ds:
        codes = json.loads(group_ds["status"].attrs.get("codes", "{}")) or {}
        values = np.asarray(group_ds["status"].values).ravel()
        names = {int(v): k for k, v in codes.items()}
        for code, n in zip(*np.unique(values, return_counts=True)):
            counts[names.get(int(code), str(int(code)))] = int(n)
    counts["total"] = int(math.prod(group_ds.sizes.values()))
    return counts
