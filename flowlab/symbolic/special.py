"""Symbolic functions with numerically stable NumPy twins.

The derivation writes losses with these functions so that one ``lambdify`` turns them into
log-domain NumPy code: finite for logit gaps |D| far beyond 10^3, with no overflow warnings.
Each class knows its exact derivative (``fdiff``), its closed form (``closed_form``) and its
LaTeX; ``NUMPY_IMPLEMENTATIONS`` maps the class names to the stable NumPy functions, which live in
:mod:`flowlab.symbolic.twins` (importable without SymPy, for code loaded from the on-disk cache).

zeta0 (:class:`profiled_logit0`), :func:`stationary_law` and :func:`bias_quadratic` are named after the
Markov system's profiled bias but are plain functions of (D, p, q) that import no system; they stay
in the symbolic layer because the single compile site (:mod:`flowlab.symbolic.compile`) needs every
stable NumPy twin in one mapping.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from flowlab.symbolic.twins import NUMPY_IMPLEMENTATIONS, stationary_law  # noqa: F401 (re-exported)


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


#: |D| up to which :func:`profiled_sigmoid1` is used: e^-|D| stays a normal float (no 0/0 at p = q), and it
#: equals the log-domain form to a few ulps (tests/test_speed_paths.py checks |D| <= 10^3 with the
#: log-domain form beyond).
PROFILED_FAST_RANGE = 700.0


def profiled_sigmoid1(D, p, q):
    """sigma(zeta0(D) + D), the optimal-bias probability of token 1 after token 1, from the bias quadratic.

    v = e^(zeta0 + D) is the positive root of pi0 v^2 + beta v - pi1 e^D = 0, beta = pi0 - pi1 (the
    quadratic of :func:`bias_quadratic` with u = v e^-D). With A = e^min(D, 0) and F = e^-max(D, 0)
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


def closed_forms(expr):
    """Replace every special function by its closed form (for display and proofs)."""
    return expr.replace(
        lambda e: isinstance(e, (softplus, sigmoid, profiled_logit0)),
        lambda e: e.closed_form(),
    )
