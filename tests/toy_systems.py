"""Toy systems with no Markov chain, to show that the engine works on any ``System``.

:class:`TiltedDoubleWell` is L(x, y) = (x^2 - 1)^2 + a x + y^2 / 2 with a small tilt a (0.3 by
default). Its critical points are (r, 0) for the three real roots r of dL/dx = 4x^3 - 4x + a:
the left root is the global minimum (the tilt lowers the left well), the middle root a saddle
(a maximum in x, a minimum in y) and the right root a local minimum. Everything is exact and in
NumPy only: the roots come from ``numpy.roots``, the gradient and the Hessian in closed form.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

from flowlab.engine.errors import FlowlabInputError
from flowlab.engine.system import Reference, SystemBase


class TiltedDoubleWell(SystemBase):
    """L(x, y) = (x^2 - 1)^2 + tilt * x + y^2 / 2, vectorised over leading axes of theta (..., 2)."""

    name = "tilted_double_well"
    params = ("x", "y")

    def __init__(self, tilt: float = 0.3):
        if not 0.0 < tilt < 8 / (3 * np.sqrt(3)):  # beyond 8/(3 sqrt 3) the right well disappears
            raise FlowlabInputError(f"tilt must lie in (0, {8 / (3 * np.sqrt(3)):.6g}), got {tilt!r}")
        self.tilt = float(tilt)

    def loss(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        x, y = theta[..., 0], theta[..., 1]
        return (x**2 - 1) ** 2 + self.tilt * x + 0.5 * y**2

    def gradient(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        x, y = theta[..., 0], theta[..., 1]
        return np.stack([4 * x**3 - 4 * x + self.tilt, y], axis=-1)

    def hessian(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        x = theta[..., 0]
        out = np.zeros(theta.shape + (2,), dtype=np.float64)
        out[..., 0, 0] = 12 * x**2 - 4
        out[..., 1, 1] = 1.0
        return out

    def roots(self) -> np.ndarray:
        """The three real roots of 4x^3 - 4x + tilt, ascending (left well, saddle, right well)."""
        r = np.roots([4.0, 0.0, -4.0, self.tilt])
        return np.sort(r.real)

    def critical_points(self) -> dict[str, np.ndarray]:
        """{"global_min", "saddle", "local_min"}: the critical points (x, 0)."""
        left, middle, right = self.roots()
        return {"global_min": np.array([left, 0.0]), "saddle": np.array([middle, 0.0]),
                "local_min": np.array([right, 0.0])}

    def reference(self) -> Reference:
        points = self.critical_points()
        return Reference(
            optimal_loss=float(self.loss(points["global_min"])),
            levels={"right_well": float(self.loss(points["local_min"])),
                    "saddle": float(self.loss(points["saddle"]))},
            loss_tol=1e-9,
            source="closed form: the real roots of 4x^3 - 4x + tilt (numpy.roots), y = 0",
            complete=True,
        )

    def describe(self) -> dict:
        return {"system": self.name, "params": list(self.params), "tilt": self.tilt}


# ---- toys for the labelling processes (tests/test_basins_processes.py): defined here, not in the test module,
# ---- so that a helper process unpickling one imports only this module
class HelperFails(TiltedDoubleWell):
    """A toy whose gradient fails in a helper process only (the error must reach the caller), and is slow
    here, so that the helper starts before this process has labelled every piece."""

    def gradient(self, theta):
        if multiprocessing.parent_process() is not None:
            raise RuntimeError("gradient failed in a helper process")
        time.sleep(0.002)
        return super().gradient(theta)


class HelperSlow(TiltedDoubleWell):
    """A toy that is slow in a helper process only (a helper on a busy machine)."""

    def gradient(self, theta):
        if multiprocessing.parent_process() is not None:
            time.sleep(0.01)
        return super().gradient(theta)


def _refuse_in_helper(cls, tilt):
    if multiprocessing.parent_process() is not None:
        raise RuntimeError("cannot be rebuilt in a helper process")
    return cls(tilt)


class StartFails(TiltedDoubleWell):
    """A toy that cannot be rebuilt in a helper process (its pool cannot start)."""

    def __reduce__(self):
        return _refuse_in_helper, (type(self), self.tilt)


class SlowStartFails(StartFails):
    """The same, slow here (so that the failure is seen before this process has labelled every piece)."""

    def gradient(self, theta):
        time.sleep(0.002)
        return super().gradient(theta)
