"""Symbolic functions with numerically stable NumPy twins.

The derivation writes losses with these functions so that one ``lambdify`` turns them into
log-domain NumPy code: finite for logit gaps |D| far beyond 10^3, with no overflow warnings.
Each class knows its exact derivative (``fdiff``), its closed form (``closed_form``) and its
LaTeX; ``NUMPY_IMPLEMENTATIONS`` maps the class names to the stable NumPy functions, which live in
:mod:`flowlab.symbolic.twins` (importable without SymPy, for code loaded from the on-disk cache), as does
the fast profiled sigmoid :func:`~flowlab.symbolic.twins.profiled_sigmoid1` (re-exported here).

zeta0 (:class:`profiled_logit0`), :func:`stationary_law` and :func:`bias_quadratic` are named after the
Markov system's profiled bias but are plain functions of (D, p, q) that import no system; they stay
in the symbolic layer because the single compile site (:mod:`flowlab.symbolic.compile`) needs every
stable NumPy twin in one mapping.
"""

from __future__ import annotations

import sympy as sp

from flowlab.symbolic.twins import (  # noqa: F401 (re-exported)
    NUMPY_IMPLEMENTATIONS,
    PROFILED_FAST_RANGE,
    profiled_sigmoid1,
    stationary_law,
)


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


def closed_forms(expr):
    """Replace every special function by its closed form (for display and proofs)."""
    return expr.replace(
        lambda e: isinstance(e, (softplus, sigmoid, profiled_logit0)),
        lambda e: e.closed_form(),
    )
