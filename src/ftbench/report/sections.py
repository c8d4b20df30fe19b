"""The report's ten sections, in order, from the computed Results; the Conventions and Data sections are
built here, the others in their own modules."""

from __future__ import annotations

from ftbench.common import config, paths
from ftbench.report.figures import loss_figure, pareto_figures
from ftbench.report.inputs import read_json
from ftbench.report.provenance import provenance_section
from ftbench.report.quality_sections import differences_section, expectation_section, quality_section
from ftbench.report.ranking_sections import ranking_section, resolution_section
from ftbench.report.render import Section, Table
from ftbench.report.resources_section import resources_section
from ftbench.report.results import Results
from ftbench.report.study import roles


def build(p: config.Params, r: Results) -> list[Section]:
    return [
        conventions_section(p, r.evals),
        quality_section(p, r.evals, r.quality, r.indices),
        differences_section(r.differences),
        expectation_section(roles(p), p.report.expectation_weight, r.expectations),
        ranking_section(len(p.seeds) > 1, r.evals, r.ranking, r.costs),
        resolution_section(r.resolution),
        resources_section(p, r.resources, r.costs),
        ("Plots", [*pareto_figures(r.evals["base"], r.points), loss_figure(p.methods)]),
        data_section(),
        provenance_section(r.resources),
    ]


def conventions_section(p: config.Params, evals: dict) -> Section:
    conventions = (
        f"{evals['base']['convention']} Primary convention: sacrebleu / rouge-score. Intervals: "
        f"paired bootstrap, {p.report.resamples} resamples, seed {p.seed}."
    )
    deviations = [f"Deviation, {name}: {d}." for name, m in p.methods.items() for d in m.deviations()]
    return "Conventions", [conventions, *deviations, *scored_forms(evals)]


def scored_forms(evals: dict) -> list[str]:
    """Conventions lines: the form each adapter was scored in (evaluate.scored_form), as its metrics/eval
    file records it, with the merged copy's largest test-loss difference from NF4 + adapter."""
    lines = []
    for name, e in evals.items():
        if "scored_form" not in e:  # the base and whole trained models: scored as saved
            continue
        checks = [run["continuity"] for run in e["runs"].values() if "continuity" in run]
        line = f"Scored form, {name}: {e['scored_form']}"
        if checks:
            worst = max(c["relative_difference"] for c in checks)
            line += (
                f" (the adapter merged into the dequantized NF4 weights; its test loss on the first "
                f"{checks[0]['rows']} test rows is within {worst:.3%} of NF4 + adapter's, tolerance "
                f"{checks[0]['tolerance']:.0%})"
            )
        elif e["scored_form"] == "nf4+adapter":
            line += " (the adapter on the NF4 base, as trained)"
        else:
            line += " (the adapter merged into the unquantized weights by peft's merge_and_unload)"
        lines.append(line + ".")
    return lines


def data_section() -> Section:
    """The data stage's summary (metrics/data.json): each dataset's rows, what was dropped and its splits."""
    summary = read_json(paths.DATA_SUMMARY)
    rows = [
        [
            name,
            d["format"],
            f"{d['rows_read']:,}",
            str(d["duplicates"]),
            str(d["empty"]),
            str(d["overlong_dropped"]),
            str(d["overlong_truncated"]),
            str(d["rows_with_chat_markup"]),
            " / ".join(str(d["splits"][s]) for s in ("train", "validation", "test")),
            str(d["mean_tokens"]),
        ]
        for name, d in summary.items()
    ]
    return "Data", [
        Table(
            [
                "dataset",
                "format",
                "rows read",
                "duplicates",
                "empty",
                "over-long dropped",
                "truncated",
                "chat markup as text",
                "train / val / test",
                "mean tokens",
            ],
            rows,
        )
    ]
