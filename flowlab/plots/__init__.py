"""Figures from results: one module per system; every function takes ``ax=None`` and returns the Axes.

Plots run no analysis and import nothing of a system, the symbolic layer or the engine (its error
type excepted): the results they draw carry everything (contract ``plots-take-results`` in setup.cfg).
"""
