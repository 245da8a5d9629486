"""``flowlab.sweep``: run the sweep of a named system (the definitions live in each system's ``sweep`` module;
the engine, :mod:`flowlab.engine.sweep`, knows no system)."""

from __future__ import annotations

from flowlab.engine.errors import FlowlabInputError

#: The systems that define a sweep.
SWEEP_SYSTEMS = ("markov", "cooccurrence")


def sweep_definition(system: str, **params):
    """The :class:`~flowlab.engine.sweep.SweepDefinition` of ``system`` with its parameters."""
    if system == "markov":
        from flowlab.systems.markov.sweep import definition

        return definition(**params)
    if system == "cooccurrence":
        from flowlab.systems.cooccurrence.sweep import definition

        return definition(**params)
    raise FlowlabInputError(f"unknown sweep system {system!r}; choose one of {', '.join(SWEEP_SYSTEMS)}")


def sweep(system: str, out, *, scheduler: str | None = None, workers: int | None = None, resume: bool = True,
          processes: bool = True, max_seconds: float = 86400.0, quiet: bool = True, **params):
    """Run (or resume) the sweep of ``system`` into the Zarr store ``out``; returns a
    :class:`~flowlab.engine.sweep.SweepResult` (``.open()`` gives the ``xarray.Dataset``).

    For ``markov``: ``p``, ``q``, ``sigma`` (sequences of float), ``model`` (a preset, default ew),
    ``starts`` (default 2000), ``seed`` (default 0), ``method`` (flow | invariant), ``tile``. For
    ``cooccurrence``: ``m``, ``L``, ``seed`` (sequences of int), ``n``, ``d``, ``m1``, ``init``, ``tile``.
    ``scheduler`` is the address of an existing Dask scheduler; by default a LocalCluster of
    ``workers`` processes (default: the CPUs this process may use).
    """
    from flowlab.engine.sweep import run_sweep

    return run_sweep(sweep_definition(system, **params), out, scheduler=scheduler, workers=workers, resume=resume,
                     processes=processes, max_seconds=max_seconds, quiet=quiet)
