"""A report table and its three file forms: Markdown (to read), CSV (for scripts) and LaTeX (for the paper).

A :class:`ReportTable` holds the cells as the terminal shows them (``+0.84±0.79``); the CSV holds numbers
instead when the table carries ``records`` (``acc_change_mean``, ``acc_change_std`` ...), since a script
wants 0.84 and 0.79, not a string to parse. The LaTeX is a booktabs ``tabular`` (``\\toprule``,
``\\midrule``, ``\\bottomrule``) in a ``table`` float, every cell escaped, so it compiles as written.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReportTable:
    """One table of a report: what it shows and how it is named on disk."""

    name: str
    """File stem, e.g. ``tickets`` (written as ``tickets.md``, ``tickets.csv``, ``tickets.tex``)."""
    title: str
    headers: list[str]
    rows: list[list[str]]
    """Display cells, one list per row, as many as ``headers``."""
    note: str = ""
    """What the numbers mean (the dense baseline, units, marks), printed under the table."""
    records: list[dict[str, Any]] | None = field(default=None)
    """Machine-readable rows for the CSV (numbers, not formatted strings); the display cells when None."""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"table {self.name}: a row has {len(row)} cells for {len(self.headers)} headers")


def to_markdown(table: ReportTable) -> str:
    """A Markdown table under a ``###`` title, with the note as a paragraph below it."""
    cells = [[_markdown_cell(c) for c in row] for row in table.rows]
    lines = [f"### {table.title}", "", "| " + " | ".join(_markdown_cell(h) for h in table.headers) + " |"]
    lines.append("|" + "|".join(":---" if _is_text_column(table, i) else "---:" for i in range(len(table.headers))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n" + (f"\n{table.note}\n" if table.note else "")


def to_csv(table: ReportTable) -> str:
    """The records (or the display cells) as CSV with a header row."""
    out = io.StringIO()
    if table.records is not None:
        fields: list[str] = []
        for record in table.records:
            fields += [key for key in record if key not in fields]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table.records)
    else:
        writer_rows = csv.writer(out, lineterminator="\n")
        writer_rows.writerow(table.headers)
        writer_rows.writerows(table.rows)
    return out.getvalue()


def to_latex(table: ReportTable, label: str | None = None) -> str:
    """A booktabs table float: caption, ``tabular`` with ``\\toprule``/``\\midrule``/``\\bottomrule``.

    Needs ``\\usepackage{booktabs}`` in the preamble. Text columns are left-aligned, numeric ones right.
    """
    spec = "".join("l" if _is_text_column(table, i) else "r" for i in range(len(table.headers)))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
        rf"\label{{{label or 'tab:' + re.sub(r'[^A-Za-z0-9:-]+', '-', table.name)}}}",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.headers) + r" \\",
        r"\midrule",
        *(" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if table.note:
        lines += [r"\par\smallskip", rf"\parbox{{\linewidth}}{{\footnotesize {latex_escape(table.note)}}}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# Characters LaTeX reads as commands, and the Unicode symbols the tables use, in text mode. One pass over
# the string (a regex alternation), so an inserted backslash is never escaped again.
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "†": r"\dag{}",
    "‡": r"\ddag{}",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "θ": r"$\theta$",
    "->": r"$\rightarrow$",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(_LATEX, key=len, reverse=True)))


def latex_escape(text: str) -> str:
    """``text`` safe in LaTeX text mode: ``50% of p_1 ± 2`` -> ``50\\% of p\\_1 $\\pm$ 2``."""
    return _LATEX_PATTERN.sub(lambda m: _LATEX[m.group(0)], str(text))


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", r"\|")


_NUMBER = re.compile(r"^[+-]?\d")


def _is_text_column(table: ReportTable, index: int) -> bool:
    """A column is numeric when every non-empty cell starts like a number (``+0.84±0.79``, ``1.83x``)."""
    cells = [row[index] for row in table.rows if row[index] not in ("", "-", "n/a")]
    return not cells or not all(_NUMBER.match(c) for c in cells)
