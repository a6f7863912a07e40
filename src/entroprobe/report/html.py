"""The self-contained report page: inline CSS, figures as base64 PNG, no external resource of any kind."""

from __future__ import annotations

import base64
import html

__all__ = ["esc", "page", "figure", "items", "table"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a;
       max-width: 1180px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em;
margin-top: 2em; } figure { margin: 1em 0; } figure img { max-width: 100%; height: auto;
border: 1px solid #eee; } figcaption, .caption { font-size: 0.95em; color: #333; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: center; vertical-align: top; }
thead th { background: #f2f2f2; } tbody th { text-align: left; background: #fafafa; }
.ci { color: #555; font-size: 0.85em; } .empty { background: #fff4e5; border-left: 4px solid #e69f00;
padding: 0.6em 0.9em; } .warn { background: #fff4e5; } code { background: #f4f4f4; padding: 0 0.2em; }
ul.findings li { margin-bottom: 0.5em; } .files { font-size: 0.85em; color: #555; }
"""


def esc(text: object) -> str:
    """HTML-escape ``text``."""
    return html.escape(str(text))


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body`` (already HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def figure(anchor: str, heading: str, png: bytes | None, caption: str, empty: str, files: list[str],
           after: str = "", width_px: int | None = None) -> str:
    """A section with one figure (or, when ``png`` is None, the message ``empty``), its caption and files.

    ``width_px`` is the figure's natural width on screen (inches × 96); the page never draws it wider.
    """
    parts = [f'<h2 id="{esc(anchor)}">{esc(heading)}</h2>']
    if png is None:
        parts.append(f'<p class="empty">{esc(empty)}</p>')
    else:
        data = base64.b64encode(png).decode("ascii")
        size = f' width="{width_px}"' if width_px else ""
        parts.append(f'<figure><img alt="{esc(heading)}"{size} src="data:image/png;base64,{data}">'
                     f"<figcaption>{caption}</figcaption></figure>")
        parts.append(f'<p class="files">Files: {", ".join(f"<code>{esc(f)}</code>" for f in files)}</p>')
    return "\n".join(parts) + after


def items(texts: list[str], css: str = "") -> str:
    """A bullet list of plain-text items."""
    if not texts:
        return ""
    cls = f' class="{css}"' if css else ""
    return f"<ul{cls}>" + "".join(f"<li>{esc(t)}</li>" for t in texts) + "</ul>"


def table(header: list[str], rows: list[list[object]]) -> str:
    """A plain table of text cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
