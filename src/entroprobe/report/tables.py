"""Table 1 as CSV (tidy, one row per cell), LaTeX (booktabs, models × prompt types) and an HTML fragment."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

__all__ = ["write_csv", "to_latex", "to_html"]

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write the tidy table (``model, modality, prompt_type, layer, n_prompts, mean, ci_low, ci_high``)."""
    table.to_csv(path, index=False)


def _wide(table: pd.DataFrame) -> tuple[list[str], list[str], dict[tuple[str, str], pd.Series]]:
    models = list(dict.fromkeys(table["model"]))
    types = list(dict.fromkeys(table["prompt_type"]))
    cells = {(r.model, r.prompt_type): r for r in table.itertuples(index=False)}
    return models, types, cells


def _groups(table: pd.DataFrame, types: list[str]) -> list[tuple[str, int]]:
    """Consecutive column groups by modality: ``[("text", 4), ("image", 6)]``."""
    modality = table.drop_duplicates("prompt_type").set_index("prompt_type")["modality"]
    groups: list[tuple[str, int]] = []
    for t in types:
        if groups and groups[-1][0] == modality[t]:
            groups[-1] = (groups[-1][0], groups[-1][1] + 1)
        else:
            groups.append((modality[t], 1))
    return groups


def to_latex(table: pd.DataFrame, caption: str, unit: str) -> str:
    """A booktabs table: a row per model, a column per prompt type; cells ``mean [low, high] (n)``.

    Needs ``\\usepackage{booktabs,graphicx}`` in the document.
    """
    models, types, cells = _wide(table)
    groups = _groups(table, types)
    lines = [
        "% needs \\usepackage{booktabs,graphicx}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_tex(caption)}}}",
        "\\label{tab:prompt-entropy}",
        "\\resizebox{\\textwidth}{!}{%",
        "\\begin{tabular}{l" + "c" * len(types) + "}",
        "\\toprule",
        " & " + " & ".join(f"\\multicolumn{{{k}}}{{c}}{{{_tex(m.capitalize())} prompt types}}" for m, k in groups)
        + " \\\\",
    ]
    start = 2
    rules = []
    for _, k in groups:
        rules.append(f"\\cmidrule(lr){{{start}-{start + k - 1}}}")
        start += k
    lines.append(" ".join(rules))
    lines.append(f"Model ({_tex(unit)}) & " + " & ".join(_tex(t.capitalize()) for t in types) + " \\\\")
    lines.append("\\midrule")
    for model in models:
        row = [_tex(model)]
        for t in types:
            c = cells.get((model, t))
            row.append("--" if c is None else
                       f"{c.mean:.4f} {{\\scriptsize [{c.ci_low:.2f}, {c.ci_high:.2f}] ({c.n_prompts})}}")
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table}", ""]
    return "\n".join(lines)


def to_html(table: pd.DataFrame) -> str:
    """The same table as an HTML fragment; each cell shows the mean, its interval and the prompt count."""
    models, types, cells = _wide(table)
    groups = _groups(table, types)
    head1 = "<th></th>" + "".join(f'<th colspan="{k}">{html.escape(m)} prompt types</th>' for m, k in groups)
    head2 = "<th>Model</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in types)
    body = []
    for model in models:
        tds = []
        for t in types:
            c = cells.get((model, t))
            tds.append("<td>—</td>" if c is None else
                       f'<td><b>{c.mean:.4f}</b><br><span class="ci">[{c.ci_low:.2f}, {c.ci_high:.2f}]'
                       f"<br>n = {c.n_prompts}</span></td>")
        body.append(f"<tr><th>{html.escape(model)}</th>{''.join(tds)}</tr>")
    return (f'<table class="t1"><thead><tr>{head1}</tr><tr>{head2}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
