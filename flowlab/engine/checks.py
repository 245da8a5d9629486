"""Validation at the public boundary: clear messages naming the input and what is allowed."""

from __future__ import annotations

import math
import numbers

import numpy as np

from flowlab.engine.errors import FlowlabInputError


def real_number(value, name: str) -> float:
    """Return ``value`` as a finite float or raise :class:`FlowlabInputError`."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise FlowlabInputError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise FlowlabInputError(f"{name} must be finite, got {value!r}")
    return value


def integer(value, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as an int within [minimum, maximum] (None: unbounded); bool is not an integer."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise FlowlabInputError(f"{name} must be an integer, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = " and ".join(b for b in (f">= {minimum}" if minimum is not None else "",
                                           f"<= {maximum}" if maximum is not None else "") if b)
        raise FlowlabInputError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def probability(value, name: str) -> float:
    """A switching probability: finite and strictly inside (0, 1)."""
    value = real_number(value, name)
    if not 0.0 < value < 1.0:
        raise FlowlabInputError(
            f"{name} must lie strictly between 0 and 1, got {value!r} "
            "(at 0 or 1 the optimal logit gap D* is infinite)"
        )
    if value < 2.2250738585072014e-308:  # sys.float_info.min: below it float64 loses precision (subnormal)
        raise FlowlabInputError(
            f"{name} = {value!r} is subnormal in float64 (below 2.2250738585072014e-308), where the chain's "
            "facts cannot be computed to full precision; use a value of at least 1e-300"
        )
    return value


def finite_array(values, name: str, last_dim: int | None = None) -> np.ndarray:
    """A float64 array with no NaN/inf; optionally with a fixed trailing dimension."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FlowlabInputError(f"{name} must be an array of real numbers ({exc})") from None
    if last_dim is not None and (arr.ndim == 0 or arr.shape[-1] != last_dim):
        raise FlowlabInputError(
            f"{name} must have shape (..., {last_dim}), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise FlowlabInputError(f"{name} contains NaN or infinite values")
    return arr


#: What usually makes a loss non-finite at a point (a system may say more: ``undefined_hint(theta)``).
UNDEFINED_HINT = ("log or sqrt of a negative number, a division by zero, an overflow such as exp(exp(.)), "
                  "or a Piecewise with no branch for this point?")


def format_point(params, theta) -> str:
    """``e=0.3, w=-1`` (each value with the digits that round-trip)."""
    def num(v):
        v = float(v)
        short = format(v, "g")
        return short if float(short) == v else repr(v)

    return ", ".join(f"{name}={num(v)}" for name, v in zip(params, np.ravel(theta)))


def require_finite(quantities: dict, params, theta, hint: str = UNDEFINED_HINT) -> None:
    """Raise :class:`FlowlabInputError` naming the point and the first quantity with a NaN or inf."""
    for what, value in quantities.items():
        if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
            raise FlowlabInputError(f"the {what} is not finite at {format_point(params, theta)} ({hint})")
