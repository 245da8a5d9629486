"""Sections of equations and their LaTeX (SymPy), shared by every system's derivation document.

A document is a list of :class:`Section` objects; Markdown, LaTeX and JSON are renderings of that
one list, so they always say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Equation:
    lhs: str  # LaTeX
    rhs: str  # LaTeX


@dataclass(frozen=True)
class Section:
    title: str
    text: str
    equations: tuple[Equation, ...] = ()


def tex(expr, names: Mapping | None = None) -> str:
    """LaTeX of an expression, after replacing the subexpressions ``names`` maps (e.g. q/(p+q) -> pi_0)
    by their display symbols."""
    import sympy as sp

    expr = sp.sympify(expr)
    if names:
        expr = expr.subs(names)
    return sp.latex(expr)


def markdown_lines(sections: Iterable[Section]) -> list[str]:
    """The Markdown of the sections: a ``##`` title, the text, then each equation displayed."""
    lines = []
    for s in sections:
        lines += [f"## {s.title}", "", s.text, ""]
        for eq in s.equations:
            lines += ["$$", f"{eq.lhs} = {eq.rhs}", "$$", ""]
    return lines
