"""Defaults of the engine that the command line reads on ``--help``: this module imports nothing."""

#: Solver methods of flowlab.engine.trajectory.gradient_flow (scipy.integrate.solve_ivp).
FLOW_METHODS = ("DOP853", "RK45", "RK23", "Radau", "BDF", "LSODA")
#: Budget of one flowlab.engine.trajectory.gradient_flow (accepted solver steps, wall seconds); see that module.
FLOW_BUDGET = {"max_steps": 20_000, "max_seconds": 300.0}
