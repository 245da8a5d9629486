"""The NumPy twins of the special functions of :mod:`flowlab.symbolic.special`, importing no SymPy or SciPy.

Compiled code calls these (through :data:`NUMPY_IMPLEMENTATIONS`, the namespace of the single compile
site). They live apart from their SymPy classes so that code loaded from the on-disk cache
(:mod:`flowlab.symbolic.cache`) runs with NumPy alone: a warm ``flowlab eval`` never imports SymPy
(0.3-0.8 s) or ``scipy.special`` (0.3-0.6 s). :func:`profiled_sigmoid1` (sigma(zeta0 + D) from the root of
the bias quadratic, the profiled systems' fast path) lives here for the same reason.
"""

from __future__ import annotations

import numpy as np


def stationary_law(p, q):
    """(pi0, pi1) = (q, p) / (p + q), for symbols or numbers."""
    return q / (p + q), p / (p + q)


def _np_softplus(z):
    return np.logaddexp(0.0, z)


def _np_sigmoid(z):
    """sigma(z) = 1 / (1 + e^-z), the formula of ``scipy.special.expit`` (0 for z < -709, where e^-z
    overflows to inf: no warning, as expit gives none)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _np_profiled_logit0(D, p, q):
    """Stable log-domain evaluation of zeta0 (see :class:`flowlab.symbolic.special.profiled_logit0`)."""
    D = np.asarray(D, dtype=np.float64)
    pi0, pi1 = stationary_law(np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64))
    b = pi0 - pi1
    log_4ac = np.log(4.0 * pi0 * pi1) + D  # log(4 pi0 pi1 e^D) = log(-4 a c)
    with np.errstate(divide="ignore"):
        log_abs_b = np.log(np.abs(b))  # -inf when pi0 = pi1, which logaddexp handles
    log_s = 0.5 * np.logaddexp(2.0 * log_abs_b, log_4ac)  # log sqrt(b^2 - 4ac)
    # log(b + s): direct when b >= 0; for b < 0 rationalise s - |b| = -4ac / (s + |b|).
    if b.ndim == 0:  # one chain: evaluate only the branch that applies
        log_b_plus_s = np.logaddexp(log_abs_b, log_s)
        if b < 0:
            log_b_plus_s = log_4ac - log_b_plus_s
    else:
        log_b_plus_s = np.where(
            b >= 0,
            np.logaddexp(log_abs_b, log_s),
            log_4ac - np.logaddexp(log_s, log_abs_b),
        )
    return np.log(2.0 * pi1) - log_b_plus_s


#: |D| up to which :func:`profiled_sigmoid1` is used: e^-|D| stays a normal float (no 0/0 at p = q), and it
#: equals the log-domain form to a few ulps (tests/test_speed_paths.py checks |D| <= 10^3 with the
#: log-domain form beyond).
PROFILED_FAST_RANGE = 700.0


def profiled_sigmoid1(D, p, q):
    """sigma(zeta0(D) + D), the optimal-bias probability of token 1 after token 1, from the bias quadratic.

    v = e^(zeta0 + D) is the positive root of pi0 v^2 + beta v - pi1 e^D = 0, beta = pi0 - pi1 (the
    quadratic of :func:`flowlab.symbolic.special.bias_quadratic` with u = v e^-D). With A = e^min(D, 0) and F = e^-max(D, 0)
    (both <= 1: nothing overflows; A F = e^-|D|), c = 4 pi0 pi1 and R = sqrt(beta^2 F^2 + c A F),
    both signs of D give sigma = v / (1 + v) = 2 pi1 A / (R + beta F + 2 pi1 A); for beta < 0 the sum
    R + beta F cancels and is rationalised to c A F / (R - beta F). Two exps of non-positive numbers,
    one sqrt, no branch on the data (the sign of beta is one number per chain). Equal to the
    log-domain ``expit(D + zeta0)`` to a few ulps for |D| <= :data:`PROFILED_FAST_RANGE`.
    """
    D = np.asarray(D, dtype=np.float64)
    pi0, pi1 = stationary_law(float(p), float(q))
    beta, c = pi0 - pi1, 4.0 * pi0 * pi1
    A = np.minimum(D, 0.0)
    np.exp(A, out=A)
    F = np.maximum(D, 0.0)
    np.negative(F, out=F)
    np.exp(F, out=F)
    R = F * F  # in place from here: each line one pass, no temporaries
    R *= beta * beta
    AF = A * F
    AF *= c
    R += AF
    np.sqrt(R, out=R)
    bF = F
    bF *= beta
    if beta >= 0:
        A *= 2.0 * pi1  # num = 2 pi1 A
        R += bF
        R += A
        A /= R
        return A
    R -= bF  # R - beta F
    R *= 2.0 * pi1  # num
    AF /= A  # c F (A > 0 for |D| <= 745)
    AF += R
    R /= AF
    return R


#: Class name of each special function -> its stable NumPy function (the compile site's namespace).
NUMPY_IMPLEMENTATIONS = {
    "softplus": _np_softplus,
    "sigmoid": _np_sigmoid,
    "profiled_logit0": _np_profiled_logit0,
}
