"""Least-squares lines with their fit quality: the one fit behind every fitted rate of every system."""

from __future__ import annotations

import numpy as np


def line_fit(x, y) -> tuple[float, float, float | None]:
    """(slope, intercept, R²) of the least-squares line y ≈ slope x + intercept; R² is None when y is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = None if ss_tot == 0 else 1.0 - float(np.sum((y - (slope * x + intercept)) ** 2)) / ss_tot
    return float(slope), float(intercept), r2
