"""Table 1 as CSV (tidy, one row per cell), LaTeX (booktabs, models × prompt types) and an HTML fragment."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from entroprobe.report.analysis import type_keys, type_names

__all__ = ["write_csv", "to_latex", "to_html"]

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write the tidy table (``model, modality, prompt_type, layer, n_prompts, mean_tokens, mean, ci_low, ci_high``,
    and ``k, left_out`` for a matched table)."""
    table.to_csv(path, index=False)


def _counts(c) -> str:
    """``n = 30, 23.4 tokens`` (and ``, 5 left out`` in a matched table)."""
    left = getattr(c, "left_out", None)
    return f"n = {c.n_prompts}, {c.mean_tokens:.1f} tokens" + (f", {left} left out" if left else "")


Key = tuple[str, str]  # (modality, prompt_type): a column of the table


def _wide(table: pd.DataFrame) -> tuple[list[str], list[Key], dict[tuple[str, str, str], pd.Series]]:
    """The models (rows), the (modality, type) columns and the cells keyed by (model, modality, type)."""
    models = list(dict.fromkeys(table["model"]))
    keys = type_keys(table)  # text before image, each in the paper's order
    cells = {(r.model, r.modality, r.prompt_type): r for r in table.itertuples(index=False)}
    return models, keys, cells


def _groups(keys: list[Key]) -> list[tuple[str, int]]:
    """Consecutive column groups by modality: ``[("text", 4), ("image", 6)]``."""
    groups: list[tuple[str, int]] = []
    for m, _ in keys:
        if groups and groups[-1][0] == m:
            groups[-1] = (m, groups[-1][1] + 1)
        else:
            groups.append((m, 1))
    return groups


def to_latex(table: pd.DataFrame, caption: str, unit: str, label: str = "tab:prompt-entropy") -> str:
    """A booktabs table: a row per model, a column per prompt type; cells ``mean [low, high] (n)``.

    Needs ``\\usepackage{booktabs,graphicx}`` in the document.
    """
    models, keys, cells = _wide(table)
    groups = _groups(keys)
    lines = [
        "% needs \\usepackage{booktabs,graphicx}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_tex(caption)}}}",
        f"\\label{{{label}}}",
        "\\resizebox{\\textwidth}{!}{%",
        "\\begin{tabular}{l" + "c" * len(keys) + "}",
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
    lines.append(f"Model ({_tex(unit)}) & " + " & ".join(_tex(t.capitalize()) for t in type_names(keys)) + " \\\\")
    lines.append("\\midrule")
    for model in models:
        row = [_tex(model)]
        for m, t in keys:
            c = cells.get((model, m, t))
            row.append("--" if c is None else
                       f"{c.mean:.4f} {{\\scriptsize [{c.ci_low:.4f}, {c.ci_high:.4f}] ({_tex(_counts(c))})}}")
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table}", ""]
    return "\n".join(lines)


def to_html(table: pd.DataFrame) -> str:
    """The same table as an HTML fragment; each cell shows the mean, its interval and the prompt count."""
    models, keys, cells = _wide(table)
    groups = _groups(keys)
    head1 = "<th></th>" + "".join(f'<th colspan="{k}">{html.escape(m)} prompt types</th>' for m, k in groups)
    head2 = "<th>Model</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in type_names(keys))
    body = []
    for model in models:
        tds = []
        for m, t in keys:
            c = cells.get((model, m, t))
            tds.append("<td>—</td>" if c is None else
                       f'<td><b>{c.mean:.4f}</b><br><span class="ci">[{c.ci_low:.2f}, {c.ci_high:.2f}]'
                       f"<br>{html.escape(_counts(c))}</span></td>")
        body.append(f"<tr><th>{html.escape(model)}</th>{''.join(tds)}</tr>")
    return (f'<table class="t1"><thead><tr>{head1}</tr><tr>{head2}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
