"""The Quality, Differences and seed's-expectation sections: quality.py's numbers as tables."""

from __future__ import annotations

from ftbench.common import config
from ftbench.report.cells import fmt, over_seeds, signed_interval, with_interval
from ftbench.report.render import Section, Table
from ftbench.report.study import COMPARED, LABELS, carried, compared_runs, models, run_for


def quality_section(p: config.Params, evals: dict, numbers: dict, indices: dict) -> Section:
    parts: list = []
    for run in compared_runs(p):
        rows = []
        metrics = carried(LABELS, numbers["base"][run.dataset])  # one dataset: the same for every model
        for name in models(p):
            q = numbers[name][run_for(name, run).key]
            rows.append(
                [
                    name,
                    *(with_interval(q[m]) for m in metrics),
                    fmt(q["test_loss"], 3),
                    fmt(q["perplexity"], 1),
                ]
            )
        parts += [
            f"**{run.key}** ({len(indices[run.dataset][0])} test examples; 95% paired-bootstrap intervals)",
            Table(["model", *(LABELS[m] for m in metrics), "test loss", "perplexity"], rows),
        ]
    if len(p.seeds) > 1:
        parts += ["**Across training seeds** (mean ± sd; base has no training seed)", seeds_table(p, evals)]
    if "llamafactory" in next(iter(evals["base"]["runs"].values())):
        parts += [
            "**LLaMA-Factory convention** (secondary: character-level sentence BLEU-4 with NLTK "
            "smoothing method 3, ROUGE on jieba words, averaged over examples)",
            llamafactory_table(p, evals),
        ]
    return "Quality", parts


def seeds_table(p: config.Params, evals: dict) -> Table:
    metrics = [m for m in COMPARED if any(m in v for e in evals.values() for v in e["runs"].values())]
    rows = [
        [dataset, name, *(over_seeds(evals[name], dataset, m) for m in metrics)]
        for dataset in p.data.datasets
        for name in models(p)
    ]
    return Table(["dataset", "model", *(LABELS[m] for m in metrics)], rows)


def llamafactory_table(p: config.Params, evals: dict) -> Table:
    rows = [
        [name, key, *(fmt(v["llamafactory"][m]) for m in ("bleu4", "rouge1", "rouge2", "rougeL"))]
        for name in models(p)
        for key, v in evals[name]["runs"].items()
    ]
    return Table(["model", "run", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"], rows)


def differences_section(diffs: list[tuple[str, str, str, str, dict]]) -> Section:
    rows = [
        [run_key, f"{a} − {b}", LABELS[m], f"{d['diff']:+.2f}", signed_interval(d), f"{d['p']:.3f}"]
        for run_key, a, b, m, d in diffs
    ]
    text = "Paired bootstrap over the same test examples; p is two-sided for 'no difference'."
    return "Differences", [text, Table(["run", "pair", "metric", "difference", "95% interval", "p"], rows)]


def expectation_section(
    trio: tuple[str, str, str] | None, weight: float, verdicts: list[tuple[str, str, dict]]
) -> Section:
    """The verdicts of quality.expectations on (hybrid, its qlora stage, galore) = `trio` (study.roles),
    with the share of galore's gain the seed expects, `weight`."""
    if not verdicts:
        return "The seed's expectation", ["Not tested: the methods hold no hybrid, qlora and galore trio."]
    h, q, g = trio
    rows = [
        [run_key, LABELS[m], f"{e['margin']:+.2f}", signed_interval(e), e["verdict"]]
        for run_key, m, e in verdicts
    ]
    text = (
        f"Is {h} ≥ {q} + {weight} · ({g} − {q})? The margin is {h} − ({q} + {weight} · ({g} − {q})); "
        "yes if its 95% interval is above 0, no if below, inconclusive otherwise."
    )
    return "The seed's expectation", [
        text,
        Table(["run", "metric", "margin", "95% interval", "answer"], rows),
    ]
