"""Symbolic functions with numerically stable NumPy twins.

The derivation writes losses with these functions so that one ``lambdify`` turns them into
log-domain NumPy code: finite for logit gaps |D| far beyond 10^3, with no overflow warnings.
Each class knows its exact derivative (``fdiff``), its closed form (``closed_form``) and its
LaTeX; ``NUMPY_IMPLEMENTATIONS`` maps the class names to the stable NumPy functions.

zeta0 (:class:`profiled_logit0`), :func:`stationary_law` and :func:`bias_quadratic` are named after the
Markov system's profiled bias but are plain functions of (D, p, q) that import no system; they stay
here because the single compile site (:mod:`flowlab.symbolic.compile`) needs every stable NumPy twin
in one mapping.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from scipy.special import expit


class softplus(sp.Function):
    r"""softplus(z) = log(1 + e^z) = -log(1 - sigma(z))."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def closed_form(self):
        return sp.log(1 + sp.exp(self.args[0]))

    def _latex(self, printer, exp=None):
        tex = r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


class sigmoid(sp.Function):
    r"""sigma(z) = 1 / (1 + e^{-z})."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def closed_form(self):
        return 1 / (1 + sp.exp(-self.args[0]))

    def _latex(self, printer, exp=None):
        tex = r"\sigma\left(%s\right)" % printer._print(self.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


def log_dsigmoid(z):
    """log sigma'(z) = -softplus(z) - softplus(-z) (symbolic, stable when compiled)."""
    return -softplus(z) - softplus(-z)


def stationary_law(p, q):
    """(pi0, pi1) = (q, p) / (p + q), for symbols or numbers."""
    return q / (p + q), p / (p + q)


def bias_quadratic(D, p, q):
    """Coefficients (a, b, c) of a u^2 + b u + c = 0 solved by u = exp(zeta0) (MODELS.md 2)."""
    pi0, pi1 = stationary_law(p, q)
    return pi0 * sp.exp(D), pi0 - pi1, -pi1


class profiled_logit0(sp.Function):
    r"""zeta0(D; p, q): the logit of token 0 with the bias at its optimum, f(theta;0) + b*.

    It is log u for the positive root u of pi0 e^D u^2 + (pi0 - pi1) u - pi1 = 0, written
    u = 2 pi1 / (pi0 - pi1 + sqrt((pi0 - pi1)^2 + 4 pi0 pi1 e^D)) (no cancellation).
    Its derivative follows from differentiating the stationarity condition
    pi0 sigma(zeta0) + pi1 sigma(zeta0 + D) = pi1:
    zeta0'(D) = -pi1 sigma'(zeta1) / (pi0 sigma'(zeta0) + pi1 sigma'(zeta1)),
    written as a sigmoid of a log-ratio so that it stays finite when both sigma' underflow.
    """

    nargs = 3
    is_real = True

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        D, p, q = self.args
        pi0, pi1 = stationary_law(p, q)
        z0 = self
        return -sigmoid(sp.log(pi1 / pi0) + log_dsigmoid(z0 + D) - log_dsigmoid(z0))

    def closed_form(self):
        D, p, q = self.args
        a, b, c = bias_quadratic(D, p, q)
        return sp.log(-2 * c / (b + sp.sqrt(b**2 - 4 * a * c)))

    def _latex(self, printer, exp=None):
        tex = r"\zeta_{0}\left(%s\right)" % printer._print(self.args[0])
        return tex if exp is None else r"%s^{%s}" % (tex, exp)


def _np_softplus(z):
    return np.logaddexp(0.0, z)


def _np_profiled_logit0(D, p, q):
    """Stable log-domain evaluation of zeta0 (see :class:`profiled_logit0`)."""
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


NUMPY_IMPLEMENTATIONS = {
    "softplus": _np_softplus,
    "sigmoid": expit,
    "profiled_logit0": _np_profiled_logit0,
}


def closed_forms(expr):
    """Replace every special function by its closed form (for display and proofs)."""
    return expr.replace(
        lambda e: isinstance(e, (softplus, sigmoid, profiled_logit0)),
        lambda e: e.closed_form(),
    )
