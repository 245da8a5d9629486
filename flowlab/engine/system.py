"""The ``System`` protocol: everything the engine needs from a canonical system, and nothing more.

A system is a loss over named parameters. The engine (one trajectory, the batch integrator,
numeric critical sets, basin labelling) works on any object with these members; it never asks
what the loss means. Verdicts ("global", "local") rest on the system's :class:`Reference`: the
optimal loss and the non-global critical values, each with a statement of how it was obtained.

>>> import numpy as np
>>> class Bowl(SystemBase):
...     name, params = "bowl", ("x", "y")
...     def loss(self, theta):
...         theta = np.asarray(theta, dtype=float)
...         return 0.5 * np.sum(theta**2, axis=-1)
...     def gradient(self, theta):
...         return np.asarray(theta, dtype=float)
...     def reference(self):
...         return Reference(optimal_loss=0.0, levels={}, loss_tol=1e-12, source="closed form")
>>> round(float(Bowl().hessian(np.array([1.0, 2.0]))[0, 0]), 9)
1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Reference:
    """The levels a verdict relies on.

    ``optimal_loss``: the global minimum value of the loss (None when unknown: no end point is
    then called global). ``levels``: named non-global critical values, e.g. ``{"unigram": 0.6}``.
    ``complete``: True when ``levels`` holds *every* non-global critical value on the whole
    parameter space (then a loss below min(levels) proves the global basin); False when they are
    only the ones found (a verdict must then rest on the end point itself). ``loss_tol``: two
    losses closer than this are not told apart. ``source``: how the levels were obtained, in words.
    ``all_global``: when set, every critical point is a global minimum (the reason, e.g. p + q = 1).
    ``unresolved``: when set, losses cannot tell the critical sets apart (the reason): no
    global/local verdict is given. ``set_dimension``: the largest dimension of a connected critical
    set on the whole space (Morse-Bott minima of dimension d have d null Hessian directions); 0
    when unknown, so that a non-global minimum is then recognised only by a positive definite Hessian.
    """

    optimal_loss: float | None
    levels: Mapping[str, float] = field(default_factory=dict)
    loss_tol: float = 1e-9
    source: str = ""
    complete: bool = False
    all_global: str | None = None
    unresolved: str | None = None
    set_dimension: int = 0

    def __post_init__(self):
        object.__setattr__(self, "levels", MappingProxyType(dict(self.levels)))

    def __reduce__(self):  # MappingProxyType does not pickle; results carrying a Reference must
        return (Reference, (self.optimal_loss, dict(self.levels), self.loss_tol, self.source, self.complete,
                            self.all_global, self.unresolved, self.set_dimension))

    @property
    def nonglobal_level(self) -> float | None:
        """The lowest non-global critical value (None when there is none known)."""
        return min(self.levels.values()) if self.levels else None

    def level_name(self, loss: float) -> str | None:
        """The name of the level ``loss`` sits on (within ``loss_tol``), if any."""
        for name, value in self.levels.items():
            if abs(loss - value) <= self.loss_tol:
                return name
        return None

    def as_dict(self) -> dict:
        return {
            "optimal_loss": self.optimal_loss,
            "levels": dict(self.levels),
            "loss_tol": self.loss_tol,
            "complete": self.complete,
            "source": self.source,
            "all_global": self.all_global,
            "unresolved": self.unresolved,
            "set_dimension": self.set_dimension,
        }


@runtime_checkable
class System(Protocol):
    """A loss over named parameters, vectorised over leading axes.

    ``theta`` has shape ``(..., len(params))``; ``loss`` returns ``(...)``, ``gradient``
    ``(..., n)``, ``hessian`` ``(..., n, n)``. ``reference()`` gives the levels verdicts rest on;
    ``invariants`` and ``observables`` map names to arrays of shape ``(...)`` (empty when the
    system has none); ``describe()`` is the JSON-ready identity of the system (its name, model and
    data parameters) that results carry.
    """

    name: str
    params: tuple[str, ...]

    def loss(self, theta) -> np.ndarray: ...

    def gradient(self, theta) -> np.ndarray: ...

    def hessian(self, theta) -> np.ndarray: ...

    def reference(self) -> Reference: ...

    def invariants(self, theta) -> dict[str, np.ndarray]: ...

    def observables(self, theta) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict: ...


#: Step of the central differences of :func:`difference_hessian`.
DIFFERENCE_STEP = 1e-5


def difference_hessian(gradient, theta, h: float = DIFFERENCE_STEP) -> np.ndarray:
    """The symmetrised Hessian by central differences of ``gradient`` at each point of ``theta`` (..., n):
    2n evaluations per point, all in one call of ``gradient`` (which must act row by row)."""
    theta = np.asarray(theta, dtype=np.float64)
    n = theta.shape[-1]
    steps = np.eye(n) * h
    pts = np.concatenate([theta[..., None, :] + steps, theta[..., None, :] - steps], axis=-2)  # (..., 2n, n)
    g = np.asarray(gradient(pts.reshape(-1, n)), dtype=np.float64).reshape(pts.shape)
    H = (g[..., :n, :] - g[..., n:, :]) / (2 * h)
    return 0.5 * (H + np.swapaxes(H, -1, -2))


class SystemBase:
    """Defaults for a :class:`System`: no invariants, no observables, a Hessian by differences.

    Subclasses set ``name`` and ``params`` and define ``loss``, ``gradient`` and ``reference``.
    """

    name: str = "system"
    params: tuple[str, ...] = ()

    def hessian(self, theta) -> np.ndarray:
        return difference_hessian(self.gradient, theta)

    def invariants(self, theta) -> dict[str, np.ndarray]:
        return {}

    def observables(self, theta) -> dict[str, np.ndarray]:
        return {}

    def describe(self) -> dict:
        return {"system": self.name, "params": list(self.params)}
