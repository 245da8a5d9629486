"""Text and LaTeX renderings of critical-set results and of the regions table (``flowlab critical``, the demo).

Renders :class:`~flowlab.systems.markov.critical.CriticalResult` objects and the dictionaries of
:func:`~flowlab.systems.markov.critical.regions_table`; computes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowlab.systems.markov.critical import CriticalResult


def format_text(res: CriticalResult) -> str:
    """The result as plain text: the chain, the method, one block per set, the message."""
    ch = res.chain
    lines = [
        f"critical sets of {res.model.name} at {ch} ({ch.regime}); box "
        + ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in res.box.items()),
        f"  H = {ch.entropy_rate:.10g}, h(pi1) = {ch.unigram_loss:.10g}, D* = {ch.optimal_gap:.10g}",
        f"  method {res.method}; complete: {str(res.complete).lower()}; degenerate: {str(res.degenerate).lower()}"
        + ("; NEARLY DEGENERATE" if ch.nearly_degenerate else ""),
    ]
    for s in res.sets:
        lo, hi = s.points.min(0), s.points.max(0)
        span = ", ".join(
            f"{n}={a:.6g}" if abs(b - a) < 1e-9 else f"{n} in [{a:.4g}, {b:.4g}]" for n, a, b in zip(res.params, lo, hi)
        )
        where = f"; lies where {s.location}" if s.location else ""
        lines.append(f"  {s.kind:<10} dim {s.dimension}  loss {s.loss:.10g}  {s.description}{where}")
        lines.append(f"             {s.text}")
        lines.append(f"             samples: {len(s.points)}; {span}")
    lines.append(f"  {res.message}")
    return "\n".join(lines) + "\n"


def table_text(table: dict) -> str:
    """The regions table as plain text: one row per set, one column per region of p + q."""
    regions = list(table["regions"])
    lines = [f"classification of the critical sets of {table['model']} by region of p + q"]
    width = max([12] + [len(_cell(row.get(r))) for row in table["rows"] for r in regions])
    lines.append("  " + " | ".join(["set".ljust(44), *(r.ljust(width) for r in regions)]))
    for row in table["rows"]:
        label = row["set"]
        cells = [_cell(row.get(r)).ljust(width) for r in regions]
        lines.append("  " + " | ".join([label[:44].ljust(44), *cells]))
    lines.append(
        "  chains: " + ", ".join(f"{r}: p={v['p']}, q={v['q']} (complete: {str(v['complete']).lower()})"
                                 for r, v in table["regions"].items())
        + f"; {table['seconds']:.2f} s"
    )
    return "\n".join(lines) + "\n"


def _cell(entry, latex=False) -> str:
    if not entry:
        return "--" if latex else "-"
    if latex:
        where = entry.get("location_latex")
        return entry["kind"].replace("_", r"\_") + (f" (${where}$)" if where else "")
    return entry["kind"] + (f" ({entry['location']})" if entry.get("location") else "")


def table_latex(table: dict) -> str:
    """The regions table as a LaTeX tabular."""
    regions = list(table["regions"])
    head = " & ".join(["set", *(f"${r.replace('p+q', 'p+q ')}$" for r in regions)])
    body = []
    for row in table["rows"]:
        label = f"${row['latex']}$"
        body.append(" & ".join([label, *(_cell(row.get(r), latex=True) for r in regions)]) + r" \\")
    return "\n".join(
        [r"\begin{tabular}{l" + "l" * len(regions) + "}", r"\hline", head + r" \\", r"\hline", *body, r"\hline",
         r"\end{tabular}", ""]
    )


def result_latex(res: CriticalResult) -> str:
    """The sets of a result as a LaTeX tabular (kind, dimension, loss, equation)."""
    rows = [
        f"{s.kind.replace('_', chr(92) + '_')} & {s.dimension} & {s.loss:.10g} & ${s.equation}$ \\\\" for s in res.sets
    ]
    return "\n".join(
        [r"\begin{tabular}{llll}", r"\hline", r"kind & dim & loss & set \\", r"\hline", *rows, r"\hline",
         r"\end{tabular}", ""]
    )
