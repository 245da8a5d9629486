"""Defaults of the engine that the command line reads on ``--help``: this module imports only ``os``."""

import os

#: Solver methods of flowlab.engine.trajectory.gradient_flow (scipy.integrate.solve_ivp).
FLOW_METHODS = ("DOP853", "RK45", "RK23", "Radau", "BDF", "LSODA")
#: Budget of one flowlab.engine.trajectory.gradient_flow (accepted solver steps, wall seconds); see that module.
FLOW_BUDGET = {"max_steps": 20_000, "max_seconds": 300.0}


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one): the default number of
    labelling processes and sweep workers, and whether the demo starts its second process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
