"""The single compile site: SymPy expressions -> vectorised NumPy functions (one ``lambdify``).

Every system compiles through :func:`compile_exprs`, so the stable NumPy twins of the special
functions (:data:`flowlab.symbolic.twins.NUMPY_IMPLEMENTATIONS`) are always used and no parameter
name can shadow a name the generated code uses (:func:`compiled_names` lists those names).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from flowlab.symbolic.twins import NUMPY_IMPLEMENTATIONS


def compile_exprs(args, exprs) -> Callable:
    """The single lambdify call site: a flat list of expressions -> a NumPy function returning a list.

    ``dummify=True``: the arguments become private dummies in the generated code, so no
    parameter name can shadow a NumPy function or constant the code uses (a parameter ``e`` and
    the constant ``exp(1)``, printed ``e``, used to collide).
    """
    import sympy as sp

    return sp.lambdify(args, list(exprs), modules=[NUMPY_IMPLEMENTATIONS, "numpy"], cse=True, dummify=True)


def compile_expression(args, expr) -> Callable:
    """One expression -> a NumPy function returning it (through :func:`compile_exprs`, so no parameter
    name can shadow what the generated code uses)."""
    fn = compile_exprs(args, [expr])
    return lambda *values: fn(*values)[0]


@cache
def compiled_names() -> frozenset[str]:
    """The global names the compiled code uses for every whitelisted and special function.

    Found by compiling a probe that applies each function (and its derivative) through
    :func:`compile_exprs`, so the set follows SymPy's printer (maximum, select, less, nan, ...). The probe
    takes ~1 s; its result (a list of names) is kept in the on-disk cache (:mod:`flowlab.symbolic.cache`).
    """
    from flowlab.symbolic import cache as disk_cache

    stored = disk_cache.get("compiled-names", "probe")
    if isinstance(stored, list) and stored and all(isinstance(name, str) for name in stored):
        return frozenset(stored)
    names = _probe_names()
    disk_cache.put("compiled-names", "probe", sorted(names))
    return names


def _probe_names() -> frozenset[str]:
    """The names of :func:`compiled_names`, found by compiling the probe."""
    import sympy as sp

    from flowlab.symbolic.parse import ALLOWED_FUNCTIONS
    from flowlab.symbolic.special import profiled_logit0, sigmoid, softplus

    s, r = sp.symbols("s r", real=True)
    parts = [sp.Piecewise((s, s < r), (s**2, s <= r), (r, s > r), (s * r, s >= r), (0, True)),
             sp.Piecewise((s, s <= r), (r, True)), sp.Piecewise((s, s >= r), (r, True)),
             softplus(s), sigmoid(s), profiled_logit0(s, r, r + 1)]
    for name, (constructor, arities) in ALLOWED_FUNCTIONS.items():
        if name != "Piecewise":
            parts.extend(constructor(*(s, r)[:n]) for n in arities if n <= 2)
    fn = compile_exprs([s, r], parts + [sp.diff(part, s) for part in parts])
    return frozenset(fn.__code__.co_names)


def stack_outputs(values, shape) -> np.ndarray:
    """Broadcast a flat list of compiled outputs (constants included) to ``shape + (len,)``, as float64."""
    return np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), shape) for v in values], -1)
