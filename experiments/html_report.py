"""`python -m experiments.compare RUNS --html report.html`: one page that needs nothing else to be read, on a
cluster without network or anywhere it is copied to. Styles are inline, charts inline SVG, each run's
pictures (its `report/` folder, `callbacks.local_report`) PNG data URIs; it fetches nothing and runs no
script.

The page holds the runs' table (as compare prints it), learning curves against the step and against wall
time, and one section per run with its final metrics, its pictures and its text samples.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #eef2f7; }
tr:nth-child(even) td { background: #fafafa; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.8em; color: #555; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; max-height: 30em; }
.chart svg { max-width: 100%; height: auto; }
.note { color: #666; font-size: 0.9em; }
section.run { border-top: 2px solid #ccd; margin-top: 1.5em; }
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def inline_svg(figure: Any) -> str:
    """A matplotlib figure as an <svg> element (without the XML prolog, which HTML does not take)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def runs_table(header: list[str], rows: list[list[str]]) -> str:
    """compare's table; each row's first cell, the run's name, links to its section."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = []
    for number, (name, *cells) in enumerate(rows):
        linked = [f'<a href="#run-{number}">{html.escape(name)}</a>', *map(html.escape, cells)]
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in linked) + "</tr>")
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def charts_html(charts: list[tuple[str, str, str | None]]) -> str:
    """(id, heading, inline SVG or a note on why there is none) for each chart."""
    parts = []
    for name, heading, svg in charts:
        if svg is None or not svg.startswith("<svg"):
            parts.append(f'<p class="note">{html.escape(svg or f"No {heading.lower()}.")}</p>')
        else:
            parts.append(f'<h3>{html.escape(heading)}</h3><div class="chart" id="{name}">{svg}</div>')
    return "\n".join(parts)


def run_section(number: int, name: str, run_dir: Path, metrics: str) -> str:
    """A run's heading, final metrics, and the pictures and texts of its report/ folder."""
    folder = run_dir / "report"
    parts = [
        f'<section class="run" id="run-{number}"><h2>{html.escape(name)}</h2>',
        f'<p class="note">{html.escape(str(run_dir))}</p>',
        f"<p>{html.escape(metrics) or 'no final metrics (an unfinished run)'}</p>",
    ]
    files = sorted(folder.iterdir(), key=lambda p: ("_test" in p.stem, p.name)) if folder.is_dir() else []  # val first
    pictures = [path for path in files if path.suffix == ".png"]
    texts = [path for path in files if path.suffix == ".txt"]
    for path in pictures:
        caption = html.escape(path.name)
        parts.append(f'<figure><img src="{data_uri(path)}" alt="{caption}"><figcaption>{caption}</figcaption></figure>')
    for path in texts:
        parts.append(f"<h4>{html.escape(path.name)}</h4><pre>{html.escape(path.read_text(errors='replace'))}</pre>")
    if not pictures and not texts:
        parts.append(
            '<p class="note">No pictures: this run has no report/ folder (made by older or unfinished runs).</p>'
        )
    parts.append("</section>")
    return "\n".join(parts)


def report_page(
    header: list[str],
    rows: list[list[str]],
    charts: list[tuple[str, str, str | None]],
    runs: list[tuple[str, Path, str]],
    notes: list[str],
) -> str:
    """The whole page: compare's table (`header`, `rows`), its `charts`, a section for each run (name,
    directory, final metrics in a line) and `notes`: compare's lines on the order, sweeps and damaged runs."""
    lines = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    made = f"made {time.strftime('%Y-%m-%d %H:%M')} by python -m experiments.compare"
    body = [
        f"<h1>{len(runs)} runs compared</h1>",
        f'<p class="note">{made}</p>',
        f"<ul>{lines}</ul>" if lines else "",
        runs_table(header, rows),
        charts_html(charts),
        *(run_section(number, *run) for number, run in enumerate(runs)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>firstlight: {len(runs)} runs compared</title><style>{STYLE}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
