"""Self-contained HTML pages: plotly.js embedded once, tables whose cells carry their exact values."""

from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

# The page may fetch nothing: a blocked request shows up as a console error (and fails the browser tests).
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 1.5rem 2rem; color: #1d2330; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #dde; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; } .meta { color: #5a6275; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e6e8ef; text-align: left; white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
td.wrap { white-space: normal; min-width: 28rem; font-size: .8rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { background: #f4f5f9; position: sticky; top: 0; }
tr.pick td { background: #e7f6ea; font-weight: 600; } tr.frontier td:first-child::before { content: "◆ "; color: #2a7; }
.regressed { color: #b3261e; font-weight: 600; } .improved { color: #1b7f3b; font-weight: 600; }
.unstable { color: #a15c00; font-weight: 600; } .unchanged { color: #5a6275; }
.warn { background: #fff4e0; border-left: 4px solid #f0a020; padding: .5rem .8rem; margin: .8rem 0; }
.note { color: #5a6275; font-size: .85rem; } code { font-size: .8rem; background: #f4f5f9; padding: 0 .2rem; }
.card { border: 1px solid #e6e8ef; border-radius: 6px; padding: .6rem .8rem; margin: .8rem 0; }
.filters { position: sticky; top: 0; background: #fff; padding: .5rem 0; z-index: 10; border-bottom: 1px solid #dde; }
.filters label { margin-right: 1rem; font-size: .9rem; } details summary { cursor: pointer; color: #34518c; }
"""


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """The plotly.js bundle that ships inside the plotly package (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(math.isnan(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, spec: str = ".3g", suffix: str = "") -> str:
    """A number for a person; '-' when missing."""
    if is_missing(value):
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec) + suffix
    return str(value)


@dataclass(frozen=True)
class Column:
    """One table column: the row key it shows, its title, and how its value is written."""

    key: str
    title: str
    format: Callable[[Any], str] = lambda v: "-" if is_missing(v) else str(v)
    numeric: bool = False
    wrap: bool = False  # long text (commands): let it wrap instead of widening the table


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], table_id: str,
          row_attrs: Callable[[dict[str, Any]], dict[str, str]] | None = None) -> str:
    """An HTML table; each cell has data-col and, for numbers, data-value with the exact stored value."""
    head = "".join(f"<th>{esc(c.title)}</th>" for c in columns)
    body = []
    for row in rows:
        attrs = row_attrs(row) if row_attrs else {}
        attr = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
        cells = []
        for c in columns:
            v = row.get(c.key)
            data = "" if not c.numeric or is_missing(v) else f' data-value="{esc(repr(float(v)))}"'
            cls = " class=num" if c.numeric else " class=wrap" if c.wrap else ""
            cells.append(f'<td data-col="{esc(c.key)}"{data}{cls}>{esc(c.format(v))}</td>')
        body.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table id="{esc(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def figure_div(fig, div_id: str) -> str:
    """A plotly figure drawn when the page loads (plotly.js comes once, from ``page``)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def page(title: str, body: str, subtitle: str = "", script: str = "") -> str:
    """A complete HTML document with plotly.js inline and a policy that forbids any network fetch."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{STYLE}</style><script>{plotly_js()}</script></head><body>"
        f"<h1>{esc(title)}</h1><div class=\"meta\">{subtitle}</div>{body}"
        f"{f'<script>{script}</script>' if script else ''}</body></html>\n"
    )


def bullet_list(items: Iterable[str], list_id: str = "") -> str:
    """An unordered list of already-escaped HTML items."""
    ident = f' id="{esc(list_id)}"' if list_id else ""
    return f"<ul{ident}>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
