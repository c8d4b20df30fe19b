"""The Ranking and resolution sections: ranking.py's order, Pareto front and resolved differences as
tables, beside each model's cost."""

from __future__ import annotations

from ftbench.report.cells import fmt, over_seeds, signed_interval, with_interval
from ftbench.report.costs import memory_axis
from ftbench.report.ranking import resolved
from ftbench.report.render import Section, Table
from ftbench.report.study import COMPARED, LABELS, PRIMARY, carried


def ranking_section(several_seeds: bool, evals: dict, ranked: dict, costs: dict[str, dict]) -> Section:
    """The ranking of every run; with `several_seeds`, each model's primary metric over them beside it."""
    label, memory = memory_axis(costs)
    parts: list = [
        f"Every evaluated model, best first by {LABELS[PRIMARY]} (95% paired-bootstrap intervals), beside "
        "its total cost per run: the stages that built it and its evaluation (the Resources table's; "
        f"memory: the {label.removesuffix(' GiB')} of its stages). Pareto-optimal: no other model "
        f"is at least as good in {LABELS[PRIMARY]} and at most as costly in both wall time and memory."
    ]
    for run_key, entries in ranked.items():
        metrics = carried(COMPARED, entries[0]["quality"])
        seeds_header = [f"{LABELS[PRIMARY]} over seeds"] if several_seeds else []
        rows = []
        for e in entries:
            q, c = e["quality"], costs[e["model"]]
            rows.append(
                [
                    str(e["rank"]),
                    e["model"],
                    *(with_interval(q[m]) for m in metrics),
                    *(
                        [over_seeds(evals[e["model"]], run_key.split("/")[0], PRIMARY)]
                        if several_seeds
                        else []
                    ),
                    fmt(c["wall_s"], 1),
                    fmt(c[memory]),
                    f"{c['tokens_trained']:,.0f}",
                    f"{c['tokens_generated']:,.0f}",
                    "yes" if e["pareto_optimal"] else "",
                ]
            )
        headers = ["rank", "model", *(LABELS[m] for m in metrics), *seeds_header, "wall s per run", label]
        parts += [
            f"**{run_key}**",
            Table([*headers, "tokens trained per run", "tokens generated per run", "Pareto-optimal"], rows),
        ]
    return "Ranking: quality against cost", parts


def resolution_section(resolved_by_run: dict) -> Section:
    adjacent_rows = [
        [
            run_key,
            f"{a} − {b}",
            f"{d['diff']:+.2f}",
            signed_interval(d),
            f"{d['p']:.3f}",
            "resolved" if resolved(d) else "not resolved",
        ]
        for run_key, r in resolved_by_run.items()
        for a, b, d in r["adjacent"]
    ]
    detectable_rows = [
        [run_key, LABELS[m], f"{x:.2f}"]
        for run_key, r in resolved_by_run.items()
        for m, x in r["min_detectable"].items()
    ]
    return "Which differences the test set can resolve", [
        f"Each pair adjacent in the ranking, better − worse in {LABELS[PRIMARY]} (the paired bootstrap of "
        "the Differences section): resolved if its 95% interval excludes 0, else the test set cannot "
        "order the two.",
        Table(["run", "pair", "difference", "95% interval", "p", "test set"], adjacent_rows),
        "Minimum detectable difference: the median half-width of the 95% intervals of every pair's paired "
        "difference on the run; a difference well below it usually has an interval that holds 0.",
        Table(["run", "metric", "minimum detectable difference"], detectable_rows),
    ]
