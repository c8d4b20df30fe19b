"""The report's parts (tables, figures, titled sections) and their rendering as markdown and as one
self-contained HTML page (figures embedded as PNG data)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    caption: str
    png: bytes


Section = tuple[str, list]  # title, [str | Table | Figure]


def render_md(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for name, parts in sections:
        out += [f"## {name}", ""]
        for part in parts:
            if isinstance(part, Table):
                out += ["| " + " | ".join(part.headers) + " |", "|" + "---|" * len(part.headers)]
                out += ["| " + " | ".join(row) + " |" for row in part.rows]
            elif isinstance(part, Figure):
                out.append(f"*Figure: {part.caption} (in report.html)*")
            else:
                out.append(part)
            out.append("")
    return "\n".join(out)


def render_html(title: str, sections: list[Section]) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for name, parts in sections:
        body.append(f"<h2>{e(name)}</h2>")
        for part in parts:
            if isinstance(part, Table):
                head = "".join(f"<th>{e(h)}</th>" for h in part.headers)
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in part.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif isinstance(part, Figure):
                data = base64.b64encode(part.png).decode()
                body.append(
                    f'<figure><img alt="{e(part.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(part.caption)}</figcaption></figure>"
                )
            else:
                body.append(f"<p>{e(part).replace('**', '')}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
