"""Derivation: the symbolic next-token loss of a model and everything that follows from it.

For any :class:`~flowlab.systems.markov.models.Model`, with symbolic switching probabilities p and q:

* the loss with a free bias, L(theta, b) = sum_x pi_x CE(P(x->1), sigma(f(theta; x) + b));
* the logit gap D(theta) = f(theta; 1) - f(theta; 0);
* with the bias profiled: the stationarity condition in b, the quadratic it reduces to, the
  optimal logit zeta0(D) in closed form, the profiled loss ell(D), its derivative by the
  envelope theorem, the minimiser D*, and ell(D*) = H, ell(0) = h(pi1);
* the loss over the flow coordinates, its gradient and Hessian;
* every candidate invariant of the model, with a symbolic proof of its rate along the flow.

Each claimed identity is an :class:`Identity` checked by SymPy (``verified``), never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import sympy as sp

from flowlab.symbolic import simplify
from flowlab.symbolic.simplify import tidy
from flowlab.symbolic.special import (
    bias_quadratic,
    closed_forms,
    profiled_logit0,
    sigmoid,
    softplus,
    stationary_law,
)
from flowlab.systems.markov.models import Model
from flowlab.systems.markov.symbols import ATTENTION, BIAS, GAP, ODDS_S, ODDS_T, TOKEN, P, Q, param_symbol

BIAS_SYMBOL = param_symbol(BIAS)
U = sp.Symbol("u", positive=True)
PI0, PI1 = stationary_law(P, Q)
#: Target probabilities P(x -> 1) for x = 0, 1.
TARGETS = (P, 1 - Q)


def cross_entropy_loss(z0, z1):
    """sum_x pi_x [softplus(z_x) - P(x->1) z_x] = sum_x pi_x CE(P(x->1), sigma(z_x))."""
    return sum(pi * (softplus(z) - t * z) for pi, t, z in zip((PI0, PI1), TARGETS, (z0, z1)))


def binary_entropy_expr(t):
    return -t * sp.log(t) - (1 - t) * sp.log(1 - t)


#: zeta0(D) = f(theta; 0) + b*(theta): the optimal logit of token 0 as a function of the gap.
ZETA0 = profiled_logit0(GAP, P, Q)
#: Profiled loss ell(D) = L(theta, b*(theta)), a function of the gap D alone.
ELL = cross_entropy_loss(ZETA0, ZETA0 + GAP)
#: ell'(D) by the envelope theorem (proved in :func:`gap_identities`).
ELL_PRIME = PI1 * (sigmoid(ZETA0 + GAP) - (1 - Q))
#: D* = log((1-p)(1-q)/(pq)), the minimiser of ell.
OPTIMAL_GAP = sp.log((1 - P) * (1 - Q) / (P * Q))
#: Bigram loss H and unigram loss h(pi1).
ENTROPY_RATE = PI0 * binary_entropy_expr(P) + PI1 * binary_entropy_expr(Q)
UNIGRAM_LOSS = binary_entropy_expr(PI1)


#: p = 1/(1+s), q = 1/(1+t) with s, t > 0 maps (0, 1)^2 onto the positive quadrant, so that
#: 1 - p and 1 - q are visibly positive and logarithms can be expanded safely.
_ODDS = {P: 1 / (1 + ODDS_S), Q: 1 / (1 + ODDS_T)}
#: The unknown function zeta0 = Z(D) of the envelope-theorem proof.
_ZFUN = sp.Function("Z")


def vanishes(expr, *, closed=True) -> bool:
    """True when SymPy proves ``expr == 0`` for p, q in (0, 1) on every sign pattern of the symbols in
    |.|, sign (:func:`flowlab.symbolic.simplify.vanishes` with p, q written through their odds)."""
    return simplify.vanishes(expr, closed=closed, rewrites=(_ODDS,))


@dataclass(frozen=True)
class Identity:
    """A derived identity lhs = rhs, with how it was proved and whether SymPy confirmed it."""

    name: str
    statement: str  # a sentence for the reader
    lhs: sp.Expr
    rhs: sp.Expr
    verified: bool


@dataclass(frozen=True)
class Invariant:
    """A conserved quantity of the profiled flow and its rate along the free-bias flow.

    ``conserved``: grad I . grad D = 0, so dI/dt = -ell'(D) grad I . grad D = 0 (profiled).
    ``bias_coupling`` k(theta) = grad I . grad f(theta; x) (the same for x = 0, 1 when
    conserved), so that with a free bias dI/dt = -k dL/db.
    """

    name: str
    expr: sp.Expr
    gradient: tuple[sp.Expr, ...]
    conserved: bool
    bias_coupling: sp.Expr


class Derivation:
    """Symbolic derivation for one model (p and q stay symbolic).

    >>> from flowlab.systems.markov.models import get_model
    >>> d = derive(get_model("ew"))
    >>> d.gap
    e**2*(2*w*Abs(w) + 1)
    >>> all(i.verified for i in d.identities)
    True
    """

    def __init__(self, model: Model):
        self.model = model
        self.params = model.symbols
        f = model.full_logit
        self.logit = f
        # Long-context limit: the attention average m_n tends to pi1 (law of large numbers).
        self.logit_long = f.subs(ATTENTION, PI1)
        self.logit0 = self.logit_long.subs(TOKEN, 0)
        self.logit1 = self.logit_long.subs(TOKEN, 1)
        self.gap = sp.factor(sp.expand(self.logit1 - self.logit0))
        self.profiled = model.bias == "profiled"

    # ----------------------------------------------------------------- the loss with a bias
    @cached_property
    def loss_free(self) -> sp.Expr:
        """L(theta, b): the loss with the bias as a variable (the model's own when free)."""
        b = 0 if not self.profiled else BIAS_SYMBOL
        return cross_entropy_loss(self.logit0 + b, self.logit1 + b)

    @cached_property
    def bias_derivative(self) -> sp.Expr:
        """dL/db = sum_x pi_x (sigma(z_x) - P(x->1))."""
        return sp.diff(self.loss_free, BIAS_SYMBOL)

    @cached_property
    def optimal_bias(self) -> sp.Expr | None:
        """b*(theta) = zeta0(D(theta)) - f(theta; 0) for a profiled model (None when free)."""
        if not self.profiled:
            return None
        return ZETA0.subs(GAP, self.gap) - self.logit0

    # ------------------------------------------------- the loss over the flow coordinates
    @cached_property
    def loss(self) -> sp.Expr:
        if self.profiled:
            return ELL.subs(GAP, self.gap)
        return self.loss_free

    @cached_property
    def gradient(self) -> tuple[sp.Expr, ...]:
        if self.profiled:
            lp = ELL_PRIME.subs(GAP, self.gap)
            return tuple(tidy(lp * sp.diff(self.gap, s)) for s in self.params)
        # free bias, by the chain rule: sum_x pi_x (sigma(z_x) - P(x->1)) dz_x (tidy acts on the small dz_x)
        return tuple(sum(pi * (sigmoid(z) - t) * dz[i] for pi, t, z, dz, _ in self._free_terms)
                     for i in range(len(self.params)))

    @cached_property
    def _free_terms(self) -> tuple:
        """Per token x: (pi_x, P(x->1), z_x, first derivatives of z_x, second derivatives {(i, j): d2 z_x})."""
        out = []
        for pi, t, z in zip((PI0, PI1), TARGETS, (self.logit0, self.logit1)):
            dz = [tidy(sp.diff(z, s)) for s in self.params]
            d2 = {(i, j): tidy(sp.diff(dz[i], self.params[j]))
                  for i in range(len(self.params)) for j in range(i, len(self.params))}
            out.append((pi, t, z, dz, d2))
        return tuple(out)

    @cached_property
    def hessian(self) -> tuple[tuple[sp.Expr, ...], ...]:
        """Second derivatives; profiled: ell''(D) D_i D_j + ell'(D) D_ij (cheaper than differentiating
        the gradient, whose entries carry zeta0)."""
        n = len(self.params)
        h = [[None] * n for _ in range(n)]
        if self.profiled:
            ell1 = ELL_PRIME.subs(GAP, self.gap)
            ell2 = sp.diff(ELL_PRIME, GAP).subs(GAP, self.gap)
            dD = [tidy(sp.diff(self.gap, s)) for s in self.params]
        for i in range(n):
            for j in range(i, n):
                if self.profiled:
                    dij = tidy(sp.diff(dD[i], self.params[j]))
                    h[i][j] = h[j][i] = ell2 * dD[i] * dD[j] + ell1 * dij
                else:  # sum_x pi_x [sigma'(z_x) dz_i dz_j + (sigma(z_x) - P(x->1)) d2z_ij]
                    h[i][j] = h[j][i] = sum(
                        pi * (sigmoid(z) * (1 - sigmoid(z)) * dz[i] * dz[j] + (sigmoid(z) - t) * d2[i, j])
                        for pi, t, z, dz, d2 in self._free_terms)
        return tuple(tuple(row) for row in h)

    # ------------------------------------------------------------------------- invariants
    @cached_property
    def invariants(self) -> tuple[Invariant, ...]:
        out = []
        for name, expr in self.model.invariants:
            grad = tuple(tidy(sp.diff(expr, s)) for s in self.params)
            along_gap = sum(g * tidy(sp.diff(self.gap, s)) for g, s in zip(grad, self.params))
            coupling = sum(g * tidy(sp.diff(self.logit0, s)) for g, s in zip(grad, self.params))
            out.append(
                Invariant(
                    name=name,
                    expr=expr,
                    gradient=grad,
                    conserved=vanishes(along_gap),
                    bias_coupling=sp.factor(sp.simplify(coupling)),
                )
            )
        return tuple(out)

    # ------------------------------------------------------------------------- identities
    @cached_property
    def identities(self) -> tuple[Identity, ...]:
        """Every claim of the derivation, each checked by SymPy."""
        ids = list(gap_identities())
        # 6. invariants.
        for inv in self.invariants:
            ids.append(
                Identity(
                    f"conserved_{inv.name}",
                    rf"$\nabla {inv.name}\cdot\nabla D = 0$, so ${inv.name}$ is constant along the"
                    r" profiled flow $\dot\theta = -\ell'(D)\nabla D$",
                    sum(g * sp.diff(self.gap, s) for g, s in zip(inv.gradient, self.params)),
                    sp.S.Zero,
                    inv.conserved,
                )
            )
            if not self.profiled:
                rate = -sum(
                    g * sp.diff(self.loss, s)
                    for g, s in zip(inv.gradient, self.params)
                    if s != BIAS_SYMBOL
                )
                ids.append(
                    Identity(
                        f"rate_{inv.name}",
                        rf"with a free bias, $\dot {inv.name} = -\nabla_\theta {inv.name}\cdot"
                        r"\nabla_\theta L = -\kappa\,\partial L/\partial b$",
                        rate,
                        -inv.bias_coupling * self.bias_derivative,
                        vanishes(rate + inv.bias_coupling * self.bias_derivative, closed=False),
                    )
                )
        return tuple(ids)


def bias_derivative_at(z0):
    """dL/db at f(theta;0) + b = z0 and f(theta;1) + b = z0 + D."""
    return sum(pi * (sigmoid(z) - t) for pi, t, z in zip((PI0, PI1), TARGETS, (z0, z0 + GAP)))


@cache
def gap_identities() -> tuple[Identity, ...]:
    """The model-independent facts about the profiled loss ell(D), each proved by SymPy."""
    a, bq, c = bias_quadratic(GAP, P, Q)
    quadratic = a * U**2 + bq * U + c
    return (*_root_identities(quadratic), _envelope_identity(), *_level_identities(quadratic))


def _root_identities(quadratic) -> list[Identity]:
    """1-2: stationarity in b is the quadratic in u = exp(f(theta;0) + b), whose root is exp(zeta0)."""
    ids = []
    # 1. stationarity in b  <=>  the quadratic in u = exp(f(theta;0) + b).
    z0 = sp.log(U)
    stationarity = closed_forms(bias_derivative_at(z0))
    num = sp.numer(sp.together(sp.expand(stationarity)))
    ratio = sp.simplify(num / quadratic)
    ids.append(
        Identity(
            "stationarity",
            r"$\partial L/\partial b = 0$ is, with $u = e^{f(\theta;0)+b}$, the quadratic"
            r" $\pi_0 e^{D} u^2 + (\pi_0-\pi_1) u - \pi_1 = 0$ (numerator ratio free of $u$)",
            sp.numer(sp.together(stationarity)),
            ratio * quadratic,
            not ratio.has(U) and ratio != 0,
        )
    )
    # 2. zeta0 = log of the positive root.
    root = sp.exp(closed_forms(ZETA0))
    ids.append(
        Identity(
            "root",
            r"$u^* = e^{\zeta_0(D)}$ solves the quadratic",
            sp.simplify(quadratic.subs(U, root)),
            sp.S.Zero,
            vanishes(quadratic.subs(U, root)),
        )
    )
    return ids


def _envelope_identity() -> Identity:
    """3. the envelope theorem: differentiate ell with zeta0 an unknown function Z(D)."""
    zfun = _ZFUN(GAP)
    ell_z = cross_entropy_loss(zfun, zfun + GAP)
    residual = sp.diff(ell_z, GAP) - (
        ELL_PRIME.subs(ZETA0, zfun)
        + sp.diff(zfun, GAP) * bias_derivative_at(zfun)
    )
    return Identity(
        "envelope",
        r"$\ell'(D) = \partial_D L + \zeta_0'(D)\,\partial_b L$ and $\partial_b L = 0$"
        r" at $b^*$, so $\ell'(D) = \pi_1(\sigma(\zeta_0+D) - (1-q))$",
        sp.diff(ell_z, GAP),
        ELL_PRIME.subs(ZETA0, zfun)
        + sp.diff(zfun, GAP) * bias_derivative_at(zfun),
        sp.expand(residual) == 0,
    )


def _level_identities(quadratic) -> list[Identity]:
    """4-6: the minimiser D* and the losses ell(D*) = H and ell(0) = h(pi1)."""
    ids = []
    # 4. D*: zeta0(D*) = logit(p) (checked through the quadratic) and ell'(D*) = 0.
    u_star = P / (1 - P)
    ids.append(
        Identity(
            "optimal_gap",
            r"at $D^* = \log\frac{(1-p)(1-q)}{pq}$: $\sigma(\zeta_0) = p$,"
            r" $\sigma(\zeta_0 + D^*) = 1-q$, so $\ell'(D^*) = 0$",
            quadratic.subs({U: u_star, GAP: OPTIMAL_GAP}),
            sp.S.Zero,
            vanishes(quadratic.subs({U: u_star, GAP: OPTIMAL_GAP}))
            and vanishes(sp.log(u_star) + OPTIMAL_GAP - sp.log((1 - Q) / Q)),
        )
    )
    ell_at = cross_entropy_loss(sp.log(u_star), sp.log((1 - Q) / Q))
    ids.append(
        Identity(
            "global_loss",
            r"$\ell(D^*) = H = \pi_0 h(p) + \pi_1 h(q)$",
            ell_at,
            ENTROPY_RATE,
            vanishes(ell_at - ENTROPY_RATE),
        )
    )
    # 5. D = 0: u = pi1 / pi0 is the root and ell(0) = h(pi1).
    u0 = PI1 / PI0
    ell_0 = cross_entropy_loss(sp.log(u0), sp.log(u0))
    ids.append(
        Identity(
            "unigram_loss",
            r"$\ell(0) = h(\pi_1)$ (the root at $D=0$ is $u = \pi_1/\pi_0$)",
            ell_0,
            UNIGRAM_LOSS,
            vanishes(quadratic.subs({U: u0, GAP: 0})) and vanishes(ell_0 - UNIGRAM_LOSS),
        )
    )
    return ids


@cache
def derive(model: Model) -> Derivation:
    """The (cached) derivation of ``model``."""
    return Derivation(model)
