"""Markdown + self-contained HTML reports from one list of blocks (headings, text, tables, figures)."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence

from jaxneurons.results import write_text


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Report:
    """Build with ``heading`` / ``text`` / ``table`` / ``figure``; ``write(dir)`` gives report.md and report.html.

    Figures are PNG files inside the results directory: linked from the Markdown, embedded (base64) in the
    HTML so it can be mailed or opened on its own.
    """

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", text, level))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence], caption: str | None = None) -> None:
        self.blocks.append(("table", list(headers), [list(r) for r in rows], caption))

    def figure(self, path: str, caption: str) -> None:
        self.blocks.append(("figure", path, caption))

    def markdown(self, base_dir: str) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out += ["#" * block[2] + " " + block[1], ""]
            elif kind == "text":
                out += [block[1], ""]
            elif kind == "table":
                _, headers, rows, caption = block
                if caption:
                    out += [f"*{caption}*", ""]
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "figure":
                rel = os.path.relpath(block[1], base_dir)
                out += [f"![{block[2]}]({rel})", "", f"*{block[2]}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
            "text-align:right}th{background:#eee}img{max-width:100%}figcaption{font-style:italic}</style>",
            f"</head><body><h1>{html.escape(self.title)}</h1>",
        ]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                parts.append(f"<h{block[2]}>{html.escape(block[1])}</h{block[2]}>")
            elif kind == "text":
                parts.append("<p>" + html.escape(block[1]).replace("\n\n", "</p><p>") + "</p>")
            elif kind == "table":
                _, headers, rows, caption = block
                cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
                )
                parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")
            elif kind == "figure":
                with open(block[1], "rb") as f:
                    data = base64.b64encode(f.read()).decode()
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                    f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, directory: str) -> tuple[str, str]:
        md_path = os.path.join(directory, "report.md")
        html_path = os.path.join(directory, "report.html")
        write_text(md_path, self.markdown(directory))
        write_text(html_path, self.html())
        return md_path, html_path
