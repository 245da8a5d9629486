"""``flowlab.sweep``: run the sweep of a named system (the definitions live in each system's ``sweep`` module;
the engine, :mod:`flowlab.engine.sweep`, knows no system)."""

from __future__ import annotations

import contextlib
import os

from flowlab.engine.errors import FlowlabInputError

#: The systems that define a sweep.
SWEEP_SYSTEMS = ("markov", "cooccurrence", "ntp_order")


def sweep_definition(system: str, **params):
    """The :class:`~flowlab.engine.sweep.SweepDefinition` of ``system`` with its parameters."""
    if system == "markov":
        from flowlab.systems.markov.sweep import definition

        return definition(**params)
    if system == "cooccurrence":
        from flowlab.systems.cooccurrence.sweep import definition

        return definition(**params)
    if system == "ntp_order":
        from flowlab.systems.ntp_order.sweep import definition

        return definition(**params)
    raise FlowlabInputError(f"unknown sweep system {system!r}; choose one of {', '.join(SWEEP_SYSTEMS)}")


def sweep(system: str, out, *, scheduler: str | None = None, workers: int | None = None, resume: bool = True,
          processes: bool = True, max_seconds: float = 86400.0, quiet: bool = True, **params):
    """Run (or resume) the sweep of ``system`` into the Zarr store ``out``; returns a
    :class:`~flowlab.engine.sweep.SweepResult` (``.open()`` gives the ``xarray.Dataset``).

    For ``markov``: ``p``, ``q``, ``sigma`` (sequences of float), ``model`` (a preset, default ew),
    ``starts`` (default 2000), ``seed`` (default 0), ``method`` (flow | invariant), ``tile``. For
    ``cooccurrence``: ``m``, ``L``, ``seed`` (sequences of int), ``n``, ``d``, ``m1``, ``init``, ``tile``. For
    ``ntp_order``: ``vocab``, ``sentences``, ``seed`` (sequences of int), ``tile`` and the cell options of
    :data:`flowlab.systems.ntp_order.sweep.DEFAULTS` (``steps1``, ``steps2``, ``stage2_loss``, ...).
    ``scheduler`` is the address of an existing Dask scheduler; by default a LocalCluster of
    ``workers`` processes (default: the CPUs this process may use).
    """
    from flowlab.engine.sweep import run_sweep

    definition = sweep_definition(system, **params)
    with _cache_off_in_local_workers():
        return run_sweep(definition, out, scheduler=scheduler, workers=workers, resume=resume, processes=processes,
                         max_seconds=max_seconds, quiet=quiet)


@contextlib.contextmanager
def _cache_off_in_local_workers():
    """With the on-disk cache turned off in this process (``flowlab --no-cache``), turn it off in the local worker
    processes too: they inherit the environment (``FLOWLAB_NO_CACHE=1``) when they start."""
    from flowlab.symbolic import cache

    if cache.enabled() or os.environ.get(cache.ENV_OFF):
        yield
        return
    os.environ[cache.ENV_OFF] = "1"
    try:
        yield
    finally:
        os.environ.pop(cache.ENV_OFF, None)
