"""LaTeX, Markdown and JSON renderings of a Derivation.

All three come from one list of :class:`Section` objects, so they always say the same thing.
The Markdown of every preset model is committed under ``derivations/`` and a test checks that
regenerating it does not change a byte.
"""

from __future__ import annotations

import sympy as sp

from flowlab.symbolic import latex as symbolic_latex
from flowlab.symbolic.latex import Equation, Section, markdown_lines
from flowlab.symbolic.simplify import tidy
from flowlab.symbolic.special import closed_forms
from flowlab.systems.markov.chain import MarkovChain
from flowlab.systems.markov.derivation import (
    ELL,
    ELL_PRIME,
    ENTROPY_RATE,
    GAP,
    OPTIMAL_GAP,
    PI0,
    PI1,
    UNIGRAM_LOSS,
    ZETA0,
    Derivation,
)
from flowlab.systems.markov.symbols import PI0_SYM, PI1_SYM


def tex(expr) -> str:
    """LaTeX of an expression, writing q/(p+q), p/(p+q) as pi_0, pi_1."""
    return symbolic_latex.tex(expr, {PI0: PI0_SYM, PI1: PI1_SYM})


def _gap_form(expr, d: Derivation):
    """Write the gap expression as D inside an expression (for readability)."""
    return expr.subs(d.gap, GAP)


def sections(d: Derivation, chain: MarkovChain | None = None) -> list[Section]:
    """The derivation of ``d`` as sections (and the values at ``chain`` when given)."""
    out = [_model_section(d), _chain_section(), _free_bias_section(d), _profiled_section(d)]
    out.append(_coordinates_section(d) if d.profiled else _gradient_section(d))
    out += [_invariant_section(d, inv) for inv in d.invariants]
    out.append(
        Section(
            "Identities checked by SymPy",
            "\n".join(
                f"- {'[x]' if i.verified else '[ ] FAILED'} `{i.name}`: {i.statement}"
                for i in d.identities
            ),
        )
    )
    if chain is not None:
        out.append(_values_section(chain))
    return out


def _model_section(d: Derivation) -> Section:
    m = d.model
    names = ", ".join(m.params)
    theta = ",".join(f"{{{sp.latex(s)}}}" for s in d.params)
    return Section(
        "Model",
        f"`{m.name}`: {m.description}. Parameters ({names}); the bias is {m.bias}. "
        "Token $x\\in\\{0,1\\}$; $\\sigma(z) = 1/(1+e^{-z})$, "
        "$\\operatorname{softplus}(z) = \\log(1+e^{z})$; logarithms are natural (nats)."
        + (
            " The logit reads the causal attention average $m_n = \\frac{1}{n}\\sum_{i\\le n} x_i$, which tends "
            "to $\\pi_1$ for long contexts: below, $m = \\pi_1$ (the long-context limit; the exact finite-context "
            "loss over positions $1..N$ is computed numerically by a dynamic programme, `--context N`)."
            if m.uses_attention
            else ""
        ),
        (
            Equation(f"f({theta};x{',m' if m.uses_attention else ''})", tex(d.logit)),
            Equation("D", tex(d.gap)),
        ),
    )


def _chain_section() -> Section:
    return Section(
        "Chain",
        "Binary Markov chain with $P(0\\to1)=p$, $P(1\\to0)=q$, started from its stationary law.",
        (
            Equation("\\pi_0", sp.latex(PI0)),
            Equation("\\pi_1", sp.latex(PI1)),
            Equation("H", tex(ENTROPY_RATE)),
            Equation("h(\\pi_1)", tex(UNIGRAM_LOSS)),
        ),
    )


def _free_bias_section(d: Derivation) -> Section:
    return Section(
        "Loss with a free bias",
        "Cross-entropy of the next token, $\\mathrm{CE}(t,\\sigma(z)) = \\operatorname{softplus}(z) - t z$, "
        "averaged over the current token $x\\sim\\pi$."
        + ("" if d.profiled else " Here $b$ is a coordinate of the flow."),
        (
            Equation("L", tex(d.loss_free)),
            Equation("\\partial L/\\partial b", tex(d.bias_derivative)),
        ),
    )


def _profiled_section(d: Derivation) -> Section:
    return Section(
        "Profiled bias",
        "Setting $\\partial L/\\partial b = 0$ with $u = e^{f(\\theta;0)+b}$ gives the quadratic "
        "$\\pi_0 e^{D} u^2 + (\\pi_0-\\pi_1)u - \\pi_1 = 0$, whose positive root gives the optimal "
        "logit of token 0, $\\zeta_0(D) = f(\\theta;0) + b^*(\\theta)$. The loss then depends on "
        "$\\theta$ only through $D$; its derivative follows from the envelope theorem.",
        (
            Equation("\\zeta_0(D)", tex(closed_forms(ZETA0))),
            Equation("b^*(\\theta)", tex(ZETA0 - d.logit0) if d.profiled else "\\zeta_0(D) - f(\\theta;0)"),
            Equation("\\ell(D)", tex(ELL)),
            Equation("\\ell'(D)", tex(ELL_PRIME)),
            Equation("\\zeta_0'(D)", tex(sp.diff(ZETA0, GAP))),
            Equation("D^*", tex(OPTIMAL_GAP)),
            Equation("\\ell(D^*)", "H"),
            Equation("\\ell(0)", "h(\\pi_1)"),
        ),
    )


def _coordinates_section(d: Derivation) -> Section:
    """Profiled model: L = ell(D(theta)), its gradient and the Hessian of D."""
    grads = tuple(
        Equation(f"\\partial L/\\partial {sp.latex(s)}", f"\\ell'(D)\\,\\left({tex(tidy(sp.diff(d.gap, s)))}\\right)")
        for s in d.params
    )
    hess = tuple(
        Equation(
            f"\\partial^2 D/\\partial {sp.latex(a)}\\,\\partial {sp.latex(b)}",
            tex(tidy(sp.diff(d.gap, a, b))),
        )
        for i, a in enumerate(d.params)
        for b in d.params[i:]
    )
    return Section(
        "Loss, gradient and Hessian over the flow coordinates",
        "$L(\\theta) = \\ell(D(\\theta))$, $\\nabla L = \\ell'(D)\\nabla D$ and "
        "$\\nabla^2 L = \\ell''(D)\\,\\nabla D\\,\\nabla D^{\\top} + \\ell'(D)\\,\\nabla^2 D$, with "
        "$\\ell''(D) = \\pi_1\\sigma'(\\zeta_0+D)(1+\\zeta_0'(D))$.",
        (Equation("L", tex(_gap_form(d.loss, d))),) + grads + hess,
    )


def _gradient_section(d: Derivation) -> Section:
    """Free-bias model: the entries of the gradient and of the upper triangle of the Hessian."""
    n = len(d.params)
    return Section(
        "Gradient and Hessian",
        "Entries of the gradient and of the upper triangle of the Hessian "
        "($\\sigma' = \\sigma(1-\\sigma)$).",
        tuple(
            Equation(f"\\partial L/\\partial {sp.latex(s)}", tex(g))
            for s, g in zip(d.params, d.gradient)
        )
        + tuple(
            Equation(
                f"\\partial^2 L/\\partial {sp.latex(d.params[i])}\\,\\partial {sp.latex(d.params[j])}",
                tex(d.hessian[i][j]),
            )
            for i in range(n)
            for j in range(i, n)
        ),
    )


def _invariant_section(d: Derivation, inv) -> Section:
    eqs = [Equation(inv.name, tex(inv.expr))]
    eqs += [
        Equation(f"\\partial {inv.name}/\\partial {sp.latex(s)}", tex(g))
        for s, g in zip(d.params, inv.gradient)
        if g != 0
    ]
    status = "proved" if inv.conserved else "NOT conserved"
    text = (
        f"Candidate invariant ${inv.name}$: $\\nabla {inv.name}\\cdot\\nabla D = 0$ is {status} "
        "(SymPy, on every sign pattern of the variables inside $|\\cdot|$ and "
        "$\\operatorname{sign}$), so along the profiled flow "
        f"$\\dot\\theta = -\\ell'(D)\\nabla D$: $\\dot {inv.name} = 0$."
    )
    if not d.profiled:
        text += (
            f" With the bias free, $\\dot {inv.name} = -\\kappa\\,\\partial L/\\partial b$ where "
            f"$\\kappa = \\nabla {inv.name}\\cdot\\nabla f(\\theta;x)$ is the same for both tokens."
        )
        eqs.append(Equation(f"\\dot {inv.name}", tex(-inv.bias_coupling) + "\\,\\partial L/\\partial b"))
    return Section(f"Invariant {inv.name}", text, tuple(eqs))


def _values_section(chain: MarkovChain) -> Section:
    c = chain.as_dict()
    return Section(
        f"At p = {chain.p!r}, q = {chain.q!r}",
        f"Regime {c['regime']}" + (" (degenerate: unigram = bigram)." if chain.degenerate else "."),
        (
            Equation("\\pi", f"({chain.pi0:.10g},\\ {chain.pi1:.10g})"),
            Equation("D^*", f"{chain.optimal_gap:.10g}"),
            Equation("H", f"{chain.entropy_rate:.10g}"),
            Equation("h(\\pi_1)", f"{chain.unigram_loss:.10g}"),
        ),
    )


def to_markdown(d: Derivation, chain: MarkovChain | None = None) -> str:
    lines = [
        f"# Derivation of model `{d.model.name}`",
        "",
        f"Generated by `flowlab derive --model {d.model.name} --format markdown`; do not edit by hand "
        "(a test regenerates it and compares bytes).",
        "",
    ]
    return "\n".join(lines + markdown_lines(sections(d, chain)))


def _md_inline_to_tex(text: str) -> str:
    """Backticks become \\texttt; markdown check-lists become itemize."""
    import re

    text = re.sub(r"`([^`]*)`", lambda m: "\\texttt{" + m.group(1).replace("_", "{\\char95}") + "}", text)
    if text.startswith("- "):
        items = [line[2:] for line in text.splitlines()]
        items = [i.replace("[x]", "$\\checkmark$").replace("[ ] FAILED", "\\textbf{FAILED}") for i in items]
        return "\\begin{itemize}\n" + "\n".join(f"\\item {i}" for i in items) + "\n\\end{itemize}"
    return text


#: \fiteq{...}: a displayed formula, shrunk to the line width only when it is wider.
_FITEQ = (
    "\\newsavebox\\eqbox\n"
    "\\newcommand{\\fiteq}[1]{\\sbox\\eqbox{$\\displaystyle #1$}\\[\\ifdim\\wd\\eqbox>\\linewidth"
    "\\resizebox{\\linewidth}{!}{\\usebox\\eqbox}\\else\\usebox\\eqbox\\fi\\]}"
)


def to_latex(d: Derivation, chain: MarkovChain | None = None) -> str:
    """A standalone document (article class, amsmath/amssymb only) that pdflatex compiles."""
    body = []
    for s in sections(d, chain):
        body.append(f"\\section*{{{_md_inline_to_tex(s.title)}}}")
        body.append(_md_inline_to_tex(s.text))
        body += [f"\\fiteq{{{eq.lhs} = {eq.rhs}}}" for eq in s.equations]
    title = f"Derivation of model \\texttt{{{d.model.name}}}"
    return "\n".join(
        [
            "\\documentclass[10pt]{article}",
            "\\usepackage{amsmath,amssymb,graphicx}",
            "\\setlength{\\textwidth}{16cm}\\setlength{\\oddsidemargin}{0cm}",
            _FITEQ,
            f"\\title{{{title}}}",
            "\\date{}",
            "\\begin{document}",
            "\\maketitle",
            *body,
            "\\end{document}",
            "",
        ]
    )


def to_json_dict(d: Derivation, chain: MarkovChain | None = None) -> dict:
    """The ``flowlab derive --format json`` payload (docs/schema.md, ``derive``)."""
    verified = sum(i.verified for i in d.identities)
    out = {
        "status": "ok" if verified == len(d.identities) else "unverified",
        "message": f"derivation of {d.model.name}: {verified} of {len(d.identities)} identities verified",
        "model": d.model.name,
        "params": list(d.model.params),
        "bias": d.model.bias,
        "expressions": {
            "logit": str(d.logit),
            "gap": str(d.gap),
            "loss": str(d.loss),
            "gradient": [str(g) for g in d.gradient],
            "invariants": {i.name: str(i.expr) for i in d.invariants},
        },
        "sections": [
            {"title": s.title, "text": s.text, "equations": [{"lhs": e.lhs, "rhs": e.rhs} for e in s.equations]}
            for s in sections(d, chain)
        ],
        "identities": [
            {"name": i.name, "statement": i.statement, "verified": i.verified} for i in d.identities
        ],
        "invariants": [
            {"name": i.name, "expression": str(i.expr), "conserved": i.conserved} for i in d.invariants
        ],
    }
    if chain is not None:
        out["chain"] = chain.as_dict()
    return out

