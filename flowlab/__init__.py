"""flowlab: symbolic-numeric gradient-flow analysis of next-token prediction on Markov data.

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

_EXPORTS = {
    "FlowlabInputError": ".errors",
    "MarkovChain": ".markov",
    "binary_entropy": ".markov",
    "Model": ".models",
    "PRESETS": ".models",
    "get_model": ".models",
    "Derivation": ".derivation",
    "derive": ".derivation",
    "NumericModel": ".numeric",
    "compile_model": ".numeric",
    "CriticalResult": ".critical",
    "CriticalSet": ".critical",
    "critical_sets": ".critical",
    "regions_table": ".critical",
    "BasinGrid": ".basins",
    "FlowSettings": ".basins",
    "basin_grid": ".basins",
    "gaussian_basin": ".basins",
    "integrate_batch": ".batch",
    "ContextModel": ".context",
    "derive_invariants": ".invariants",
    "KStateChain": ".kstate",
    "KStateModel": ".kstate",
    "KStateNumeric": ".kstate",
    "load_kernel": ".kstate",
    "TrainResult": ".train",
    "sgd_canonical": ".train",
    "train_canonical": ".train",
    "guide": ".train",
    "agreement_table": ".train",
    "user_model": ".models",
    "FlowResult": ".flow",
    "gradient_flow": ".flow",
    "to_latex": ".latex",
    "to_markdown": ".latex",
    "run_demo": ".demo",
}

__all__ = ["__version__", *_EXPORTS]  # noqa: PLE0604


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowlab' has no attribute {name!r}")


def __dir__():
    return __all__
