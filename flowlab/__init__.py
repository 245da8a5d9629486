"""flowlab: symbolic-numeric gradient-flow analysis of canonical models of how transformers train.

The public API is re-exported here lazily, so ``import flowlab`` (and ``flowlab --help``)
does not import SymPy, SciPy or matplotlib until a name that needs them is used.

>>> import flowlab
>>> chain = flowlab.MarkovChain(0.5, 0.8)
>>> result = flowlab.gradient_flow(flowlab.get_model("ew"), chain, [0.1, 0.1])
>>> result.reached
'local'
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: The public API: name -> module (imported on first use). README.md "Python API" lists exactly these.
_EXPORTS = {
    # errors
    "FlowlabInputError": ".engine.errors",
    # the engine: any system
    "System": ".engine.system",
    "SystemBase": ".engine.system",
    "Reference": ".engine.system",
    "flow": (".engine.trajectory", "gradient_flow"),  # the flow of any System
    "FlowResult": ".engine.trajectory",
    "BasinGrid": ".engine.basins",
    "GaussianBasin": ".engine.basins",
    "integrate_batch": ".engine.batch",
    # the markov system (Local-to-Global)
    "MarkovChain": ".systems.markov.chain",
    "KStateChain": ".systems.markov.kstate",
    "load_kernel": ".systems.markov.kstate",
    "Model": ".systems.markov.models",
    "get_model": ".systems.markov.models",
    "user_model": ".systems.markov.models",
    "KStateModel": ".systems.markov.kstate",
    "derive": ".systems.markov.derivation",
    "derive_invariants": ".systems.markov.invariants",
    "to_latex": ".systems.markov.latex",
    "to_markdown": ".systems.markov.latex",
    "NumericModel": ".systems.markov.numeric",
    "KStateNumeric": ".systems.markov.kstate",
    "ContextModel": ".systems.markov.context",
    "MarkovSystem": ".systems.markov.system",
    "KStateSystem": ".systems.markov.system",
    "gradient_flow": ".systems.markov.flow",
    "CriticalResult": ".systems.markov.critical",
    "critical_sets": ".systems.markov.critical",
    "regions_table": ".systems.markov.critical",
    "basin_grid": ".systems.markov.basins",
    "gaussian_basin": ".systems.markov.basins",
    "guide": ".systems.markov.guide",
    "TrainResult": ".systems.markov.sgd",
    "sgd_canonical": ".systems.markov.sgd",
    "train_canonical": ".systems.markov.train",
    "agreement_table": ".systems.markov.train",
    # sweeps (Dask + Zarr; the dask extra)
    "sweep": ".systems.sweeps",
    "SweepResult": ".engine.sweep",
    # the report
    "run_demo": ".report.demo",
}

__all__ = ["__version__", *_EXPORTS]  # noqa: PLE0604


def __getattr__(name):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowlab' has no attribute {name!r}")


def __dir__():
    return __all__
