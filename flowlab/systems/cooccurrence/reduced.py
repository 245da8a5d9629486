"""The reduced phase model of the co-occurrence system (MODELS.md §6), derived by SymPy.

With the attention frozen uniform and the random words dropped, a sample of type k outputs
F_k = Σ_{μ∈k} G_μ (G_μ = aᵀ W W_V μ) and the loss is L = Σ_k π_k ℓ(y_k F_k). The state is 13 scalars:
S = ‖Wᵀa‖², G_1..G_3 and the symmetric 3×3 value Gram K_μν = μᵀ W_Vᵀ W_V ν.

Nothing of the closed ODE is typed: :func:`derive_reduced`

1. differentiates the reduced loss in G (SymPy) and proves that −∂L/∂G_μ equals
   c_μ = Σ_k π_k y_k 1[μ∈k] g(y_k F_k), g(z) = 1/(1 + e^z);
2. writes the loss over the underlying parameters (a ∈ R^{m1} fixed, W ∈ R^{m1×m}, the value columns
   W_V μ_1..μ_3 ∈ R^m, all entries symbolic, for small concrete m1, m) as an undefined function of
   G(θ), differentiates it (chain rule by SymPy), and obtains Q̇ = ∇Q·θ̇ for each Gram scalar Q;
3. *finds* the closed form: each Q̇ is Σ_μ c_μ P_{Q,μ}(θ), and P_{Q,μ} is solved for as a linear
   combination (α + β m1)·q of the 13 Gram scalars q, with m1 := aᵀa (= m1 for a ∈ {±1}^{m1}), by
   matching polynomial coefficients — the solution must exist and be unique;
4. proves that the result equals the MODELS.md form Ṡ = 2 m1 Σ c_μ G_μ,
   Ġ_μ = S c_μ + m1 Σ_ν K_μν c_ν, K̇ = c Gᵀ + G cᵀ, and that S − m1 tr K is conserved.

:func:`reduced_flow` compiles the derived right-hand side once (lambdify) and integrates it
(solve_ivp), returning a :class:`~flowlab.systems.cooccurrence.trajectory.Trajectory` (engine
``reduced``) whose observables come from the same code path as every other engine.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from flowlab.engine.errors import FlowlabInputError

#: Types I_1..I_4: which of μ_1, μ_2, μ_3 (0-based 0, 1, 2) they contain, and their labels.
MEMBERS = ((0, 1, 2), (0, 2), (1, 2), (2,))
LABELS = (1, -1, -1, -1)
#: Upper-triangle order of the value Gram K in the state vector.
K_INDEX = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
STATE_NAMES = ("S", "G_1", "G_2", "G_3") + tuple(f"K_{i + 1}{j + 1}" for i, j in K_INDEX)
DEFAULTS = {"n": 60, "L": 5, "m": 128, "m1": 256, "t_max": 300.0, "points": 600, "rtol": 1e-10,
            "atol": 1e-12}


@dataclass(frozen=True)
class Identity:
    name: str
    statement: str
    verified: bool


@dataclass(frozen=True)
class ReducedDerivation:
    """The SymPy objects of the reduced model and the identities proved on the way."""

    symbols: dict  # S, G (3), K (3x3 Matrix, symmetric), c (3), pi (4), m1, g (Function)
    loss: object  # reduced loss in G and pi
    c: tuple  # closed c_mu in G, pi, with the undefined function g
    rhs: tuple  # 10 expressions: dS, dG_1..3, dK (upper triangle, K_INDEX order), in S, G, K, c, m1
    sizes: tuple  # (m1, m) of the parameter-level derivation
    identities: tuple

    @property
    def verified(self) -> bool:
        return all(i.verified for i in self.identities)


def _symbols():
    import sympy as sp

    S = sp.Symbol("S")
    G = sp.symbols("G_1:4", real=True)
    k = {ij: sp.Symbol(f"K_{ij[0] + 1}{ij[1] + 1}", real=True) for ij in K_INDEX}
    K = sp.Matrix(3, 3, lambda i, j: k[(min(i, j), max(i, j))])
    c = sp.symbols("c_1:4", real=True)
    pi = sp.symbols("pi_1:5", positive=True)
    return {"S": S, "G": G, "K": K, "c": c, "pi": pi, "m1": sp.Symbol("m_1", positive=True),
            "g": sp.Function("g"), "z": sp.Symbol("z", real=True)}


def _outputs(G):
    return [sum(G[mu] for mu in MEMBERS[k]) for k in range(4)]


def _gram_scalars(sym):
    return [sym["S"], *sym["G"], *[sym["K"][i, j] for i, j in K_INDEX]]


def _closure(P, params, gram_polys, gram_syms, m1_poly, m1):
    """Solve P = Σ_q (α_q + β_q m1) q for the constants α, β (unique, else None)."""
    import sympy as sp

    alpha = sp.symbols(f"alpha_0:{len(gram_polys)}")
    beta = sp.symbols(f"beta_0:{len(gram_polys)}")
    ansatz = sum((a + b * m1_poly) * q for a, b, q in zip(alpha, beta, gram_polys))
    eqs = sp.Poly(sp.expand(P - ansatz), *params).coeffs()
    sol = sp.linsolve(eqs, [*alpha, *beta])
    if len(sol) != 1:
        return None
    (values,) = sol
    if any(v.free_symbols for v in values):
        return None
    n = len(gram_polys)
    return sum((values[i] + values[n + i] * m1) * q for i, q in enumerate(gram_syms))


@functools.lru_cache(maxsize=4)
def derive_reduced(m1_size: int = 2, m_size: int = 2) -> ReducedDerivation:
    """Derive the closed reduced ODE (see the module docstring); sizes of the parameter-level step."""
    import sympy as sp

    sym = _symbols()
    G, c, pi, g, z, m1 = sym["G"], sym["c"], sym["pi"], sym["g"], sym["z"], sym["m1"]
    ell = sp.log(1 + sp.exp(-z))
    loss = sum(pi[k] * ell.subs(z, LABELS[k] * F) for k, F in enumerate(_outputs(G)))
    c_closed = tuple(sum(pi[k] * LABELS[k] * g(LABELS[k] * _outputs(G)[k]) for k in range(4) if mu in MEMBERS[k])
                     for mu in range(3))
    g_true = sp.Lambda(z, 1 / (1 + sp.exp(z)))
    ok_c = all(sp.simplify(-sp.diff(loss, G[mu]) - c_closed[mu].replace(g, g_true)) == 0 for mu in range(3))
    identities = [Identity("c", "c_mu = -dL/dG_mu = sum_k pi_k y_k 1[mu in k] g(y_k F_k)", ok_c)]

    # parameter level: a (fixed), W (m1 x m), the value columns V = [W_V mu_1..mu_3] (m x 3)
    a = sp.Matrix(sp.symbols(f"a_1:{m1_size + 1}", real=True))
    W = sp.Matrix(m1_size, m_size, lambda i, j: sp.Symbol(f"w_{i + 1}_{j + 1}", real=True))
    V = sp.Matrix(m_size, 3, lambda i, j: sp.Symbol(f"v_{i + 1}_{j + 1}", real=True))
    theta = [*W, *V]
    u = W.T * a
    G_theta = [sp.expand((V.T * u)[mu]) for mu in range(3)]
    gram_polys = [sp.expand((u.T * u)[0]), *G_theta, *[sp.expand((V.T * V)[i, j]) for i, j in K_INDEX]]
    m1_poly = sp.expand((a.T * a)[0])
    Lf = sp.Function("L")(*G_theta)

    def dL_dG_to_c(e):  # ∂L/∂G_mu evaluated at G(θ) is −c_mu by step 1
        deriv = e.expr
        return -c[list(deriv.expr.args).index(deriv.variables[0])]

    theta_dot = [-Lf.diff(th).replace(lambda e: isinstance(e, sp.Subs), dL_dG_to_c) for th in theta]
    rhs = []
    for Q in gram_polys:
        Q_dot = sp.expand(sum(sp.diff(Q, th) * d for th, d in zip(theta, theta_dot)))
        parts = [_closure(Q_dot.coeff(c[mu]), [*a, *theta], gram_polys, _gram_scalars(sym), m1_poly, m1)
                 for mu in range(3)]
        if any(p is None for p in parts):
            raise ArithmeticError("the reduced flow does not close on the 13 Gram scalars (derivation failed)")
        rhs.append(sp.expand(sum(c[mu] * p for mu, p in enumerate(parts))))
    identities.append(Identity("closure", f"Q_dot = sum_mu c_mu (alpha + beta m1) q solved uniquely for every "
                               f"Gram scalar Q (parameter sizes m1 = {m1_size}, m = {m_size}, m1 := a^T a)", True))
    identities += _check_models_md(sym, rhs)
    return ReducedDerivation(symbols=sym, loss=loss, c=c_closed, rhs=tuple(rhs), sizes=(m1_size, m_size),
                             identities=tuple(identities))


def models_md_rhs(sym) -> list:
    """The right-hand side as MODELS.md §6 states it (typed, used only to check the derived one)."""
    import sympy as sp

    S, G, K, c, m1 = sym["S"], sp.Matrix(sym["G"]), sym["K"], sp.Matrix(sym["c"]), sym["m1"]
    dS = 2 * m1 * (c.T * G)[0]
    dG = S * c + m1 * K * c
    dK = c * G.T + G * c.T
    return [dS, *dG, *[dK[i, j] for i, j in K_INDEX]]


def _check_models_md(sym, rhs) -> list:
    import sympy as sp

    same = all(sp.expand(r - t) == 0 for r, t in zip(rhs, models_md_rhs(sym)))
    trace = rhs[4] + rhs[7] + rhs[9]  # K_11, K_22, K_33 in K_INDEX order
    conserved = sp.expand(rhs[0] - sym["m1"] * trace) == 0
    return [Identity("models_md", "derived right-hand side = MODELS.md 6: dS = 2 m1 c.G, dG = S c + m1 K c, "
                     "dK = c G^T + G c^T", same),
            Identity("conserved", "d/dt (S - m1 tr K) = 0", conserved)]


# ---------------------------------------------------------------- numerics


@functools.lru_cache(maxsize=1)
def compiled_rhs():
    """f(state (10,), pi (4,), m1) -> d state/dt, lambdified once from the derived expressions."""
    import sympy as sp

    from .trajectory import g_of

    d = derive_reduced()
    if not d.verified:
        raise ArithmeticError("the reduced derivation failed: " + ", ".join(i.name for i in d.identities
                                                                          if not i.verified))
    sym = d.symbols
    subs = dict(zip(sym["c"], d.c))
    exprs = [r.xreplace(subs) for r in d.rhs]
    args = (_gram_scalars(sym), sym["pi"], sym["m1"])
    f = sp.lambdify(args, exprs, modules=[{"g": g_of}, "numpy"], cse=True)
    return lambda state, pi, m1: np.array(f(state, pi, m1), dtype=np.float64)


def initial_state(m: int, m1: int, L: int, seed: int, sigma0: float | None = None,
                  sigma1: float | None = None) -> np.ndarray:
    """(S, G_1..3, K upper triangle) at the paper's random initialisation, drawn exactly.

    u = Wᵀa has i.i.d. N(0, m1 σ_1²) entries and W_V μ_1..3 i.i.d. N(0, σ_0²) entries, all in R^m and
    independent, so [u, W_V μ_1, W_V μ_2, W_V μ_3]ᵀ[...] ~ W_4(m, diag(m1 σ_1², σ_0², σ_0², σ_0²)).
    Defaults σ_0 = 1/√(L m), σ_1 = 1/√m1 (MODELS.md §6).
    """
    s0 = 1.0 / math.sqrt(L * m) if sigma0 is None else float(sigma0)
    s1 = 1.0 / math.sqrt(m1) if sigma1 is None else float(sigma1)
    from .gram import wishart

    gram = wishart(4, m, np.array([m1 * s1**2, s0**2, s0**2, s0**2]), np.random.default_rng([seed, 3]))
    return np.array([gram[0, 0], *gram[0, 1:], *[gram[1 + i, 1 + j] for i, j in K_INDEX]])


def reduced_data(n: int, L: int):
    """A data set whose samples carry only μ_1..μ_3 (every other position is word 3, whose G is 0).

    With G(word 3) = 0 and A = 0 its outputs are exactly the reduced F_k = Σ_{μ∈k} G_μ.
    """
    from .data import TYPE_LABELS, CooccurrenceData, type_counts

    counts = type_counts(n)
    types = np.repeat(np.arange(4), counts)
    tokens = np.full((n, L), 3, dtype=np.int64)
    for i, k in enumerate(types):
        tokens[i, : len(MEMBERS[k])] = MEMBERS[k]
    return CooccurrenceData(tokens=tokens, y=np.array(TYPE_LABELS)[types], types=types, d=4, seed=0,
                            distinct=False, warnings=("reduced model: random words dropped",))


def _check(n, L, m, m1, t_max, points):
    from flowlab.engine.checks import integer, real_number

    n = integer(n, "n", 6, 10**7)
    L = integer(L, "L", 3, 10**6)
    m = integer(m, "m", 4, 10**12)
    m1 = integer(m1, "m1", 1, 10**12)
    points = integer(points, "points", 10, 10**6)
    if n * L * L > 10**8:  # the data and its attention patterns are n x L x L
        raise FlowlabInputError(f"n·L² = {n * L * L:.3g} would need about {8 * n * L * L / 2**30:.3g} GiB "
                                "(limit 1e8, 0.75 GiB); use fewer or shorter samples")
    t_max = real_number(t_max, "t_max")
    if not t_max > 0:
        raise FlowlabInputError(f"t_max must be > 0, got {t_max}")
    return n, L, m, m1, t_max, points


def time_grid(t_max: float, points: int, t_min: float) -> np.ndarray:
    """0, a geometric grid from t_min and a uniform grid, merged (resolves T₁ ~ 1/m and Phase 2)."""
    geo = np.geomspace(min(t_min, t_max / 10), t_max, points)
    return np.unique(np.concatenate([[0.0], geo, np.linspace(0.0, t_max, points)]))


def reduced_flow(n: int = 60, L: int = 5, m: int = 128, m1: int = 256, *, seed: int = 0,
                 state0=None, sigma0: float | None = None, sigma1: float | None = None,
                 t_max: float = DEFAULTS["t_max"], points: int = DEFAULTS["points"],
                 rtol: float = DEFAULTS["rtol"], atol: float = DEFAULTS["atol"]):
    """Integrate the derived reduced ODE from ``state0`` (10 numbers: S, G_1..3, K upper triangle in
    :data:`K_INDEX` order) or from the paper's random initialisation (seeded), and return a
    :class:`Trajectory` (engine ``reduced``; its attention is frozen at A = 0, i.e. uniform)."""
    from scipy.integrate import solve_ivp

    from flowlab.engine.checks import finite_array

    from .trajectory import Trajectory, observables

    n, L, m, m1, t_max, points = _check(n, L, m, m1, t_max, points)
    y0 = initial_state(m, m1, L, seed, sigma0, sigma1) if state0 is None else finite_array(state0, "state0")
    if y0.shape != (10,):
        raise FlowlabInputError(f"state0 has 10 entries (S, G_1..G_3, K_11, K_12, K_13, K_22, K_23, K_33), "
                                f"got shape {y0.shape}")
    data = reduced_data(n, L)
    pi = np.bincount(data.types, minlength=4) / n
    f = compiled_rhs()
    grid = time_grid(t_max, points, t_min=1e-3 / max(y0[0] + m1 * (y0[4] + y0[7] + y0[9]), 1e-300))
    sol = solve_ivp(lambda t, y: f(y, pi, m1), (0.0, t_max), y0, method="DOP853", t_eval=grid,
                    rtol=rtol, atol=atol)
    records = [observables(data, *_grams(y), 0.0, m, m1) for y in sol.y.T]
    settings = {"n": n, "L": L, "m": m, "m1": m1, "seed": seed, "t_max": t_max, "points": points,
                "sigma0": sigma0, "sigma1": sigma1, "rtol": rtol, "atol": atol,
                "state0": dict(zip(STATE_NAMES, (float(v) for v in y0)))}
    status = "ok" if sol.success else "failed"
    message = "" if sol.success else f"solve_ivp stopped at t = {sol.t[-1]:.6g}: {sol.message}"
    return Trajectory.from_records("reduced", settings, sol.t, records, status=status, message=message)


def _grams(y: np.ndarray):
    """(h, A, C, S) of the 4-word reduced data set from a state vector."""
    h = np.array([y[1], y[2], y[3], 0.0])
    C = np.zeros((4, 4))
    for (i, j), v in zip(K_INDEX, y[4:]):
        C[i, j] = C[j, i] = v
    return h, np.zeros((4, 4)), C, float(y[0])


# ---------------------------------------------------------------- LaTeX / Markdown

DERIVATION_FILE = "derivations/cooccurrence_reduced.md"


def _sections(d: ReducedDerivation) -> list:
    import sympy as sp

    from flowlab.symbolic.latex import Equation, Section

    sym = d.symbols
    G, c = sym["G"], sym["c"]
    F = sp.symbols("F_1:5")
    outputs = [Equation(sp.latex(F[k]), sp.latex(e)) for k, e in enumerate(_outputs(G))]
    lhs = ["\\dot S", *[f"\\dot G_{{{mu + 1}}}" for mu in range(3)],
           *[f"\\dot K_{{{i + 1}{j + 1}}}" for i, j in K_INDEX]]
    checks = "\n".join(f"- [{'x' if i.verified else ' '}] {i.statement}" + ("" if i.verified else " (FAILED)")
                       for i in d.identities)
    return [
        Section("Model", "Reduced phase model of the co-occurrence system (MODELS.md section 6): attention frozen "
                "uniform, random words dropped, so a sample of type $k$ outputs $F_k$ = the sum of $G_\\mu = "
                "a^\\top W W_V \\mu$ over the words $\\mu_1,\\mu_2,\\mu_3$ it contains. Types $I_1..I_4$ have "
                "labels $y = (+1,-1,-1,-1)$ and proportions $\\pi_1..\\pi_4$; "
                "$\\ell(z) = \\log(1+e^{-z})$, $g(z) = 1/(1+e^{z}) = -\\ell'(z)$.", tuple(outputs)),
        Section("Reduced loss", "Logistic loss averaged over the four types.",
                (Equation("\\hat L", sp.latex(d.loss)),)),
        Section("Gradient in G", "SymPy differentiates the loss; $c_\\mu = -\\partial \\hat L/\\partial G_\\mu$ "
                "equals the closed form below (checked by simplification).",
                tuple(Equation(sp.latex(c[mu]), sp.latex(e)) for mu, e in enumerate(d.c))),
        Section("Closed flow", f"The loss is written over the parameters ($a\\in\\mathbb{{R}}^{{m_1}}$ fixed, "
                f"$W\\in\\mathbb{{R}}^{{m_1\\times m}}$, the value columns $W_V\\mu_1..W_V\\mu_3\\in\\mathbb{{R}}^m$; "
                f"symbolic entries, $m_1 = {d.sizes[0]}$, $m = {d.sizes[1]}$) and differentiated by SymPy; the "
                "time derivative of every Gram scalar ($S = \\|W^\\top a\\|^2$, $G_\\mu$, $K_{\\mu\\nu} = "
                "\\mu^\\top W_V^\\top W_V \\nu$) is then solved for as a combination $(\\alpha + \\beta m_1)\\,q$ "
                "of the 13 Gram scalars $q$, with $m_1 = a^\\top a$ (the solution is unique).",
                tuple(Equation(left, sp.latex(r)) for left, r in zip(lhs, d.rhs))),
        Section("Identities", checks),
    ]


def to_markdown(d: ReducedDerivation | None = None) -> str:
    """The Markdown committed as ``derivations/cooccurrence_reduced.md`` (a test compares bytes)."""
    from flowlab.symbolic.latex import markdown_lines

    d = derive_reduced() if d is None else d
    lines = ["# Derivation of the reduced co-occurrence phase model", "",
             "Generated by `flowlab.systems.cooccurrence.reduced.to_markdown()`; do not edit by hand "
             "(a test regenerates it and compares bytes).", ""]
    return "\n".join(lines + markdown_lines(_sections(d)))


def write_derivation(root) -> str:
    """Write the Markdown to ``root/derivations/cooccurrence_reduced.md`` (atomically); returns the path."""
    from pathlib import Path

    from flowlab.engine.io import atomic_write_text

    return str(atomic_write_text(Path(root) / DERIVATION_FILE, to_markdown()))
