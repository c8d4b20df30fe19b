"""Report stage: metrics/report.md, report.html, report.json and pareto.json from every earlier stage's
records (ftbench.report computes and lays them out)."""

from __future__ import annotations

from ftbench.common import commands, config, paths, tracking
from ftbench.common.atomic import atomic_path, write_json
from ftbench.report.render import render_html, render_md
from ftbench.report.results import compute
from ftbench.report.sections import build
from ftbench.report.summary import summary


def run(p: config.Params) -> str:
    results = compute(p)
    sections = build(p, results)
    title = f"ftbench report: {p.model.source} on {', '.join(p.data.datasets)}"
    text = render_md(title, sections)
    with atomic_path(paths.REPORT) as tmp:
        tmp.write_text(text, encoding="utf-8")
    with atomic_path(paths.REPORT_HTML) as tmp:
        tmp.write_text(render_html(title, sections), encoding="utf-8")
    write_json(paths.REPORT_JSON, summary(results))
    write_json(paths.PARETO, results.points)
    return text


def main(argv: list[str]) -> None:
    p, _ = commands.parse("report", argv)
    # the report reads metrics/resources, so its own record goes to MLflow only
    with tracking.stage("report", p, record_file=False) as st:
        print(run(p))
        st.artifacts += [paths.REPORT, paths.REPORT_HTML, paths.REPORT_JSON, paths.PARETO]
