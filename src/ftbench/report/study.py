"""What the report compares: the evaluated models, the runs each is compared on, the metrics it shows
and the pairs it differences."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ftbench.common import config
from ftbench.evaluation import stats

HEADLINE = ("bleu4", "rougeL")
PRIMARY = HEADLINE[0]  # the ranking's order
EXACT_MATCH = stats.EXACT_MATCH  # only in runs on data with final `####` answers (stats.has_final_answers)
COMPARED = (*HEADLINE, EXACT_MATCH)  # metrics in the differences, the expectation and report.json
LABELS = {  # table order
    "bleu4": "BLEU-4",
    "rougeL": "ROUGE-L",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    EXACT_MATCH: "Exact match",
}


def models(p: config.Params) -> list[str]:
    return ["base", *compared(p)]


def compared(p: config.Params) -> list[str]:
    """The evaluated models that are compared with one another and with base: methods, then ensembles."""
    return [*p.methods, *p.ensembles]


def compared_runs(p: config.Params) -> list[config.Run]:
    """The runs the per-run tables compare models on: a trained model's (dataset, seed) runs; the base
    model stands in each with its run on that dataset (run_for)."""
    return p.runs(next(iter(p.methods)))


def run_for(name: str, run: config.Run) -> config.Run:
    """The base model has one run per dataset, whatever the training seed."""
    return config.Run(run.dataset, None) if name == "base" else run


def carried(metrics: Iterable[str], numbers: Mapping) -> list[str]:
    """Those of `metrics` (in their order) that a run's scores or numbers hold: exact match only where
    the dataset has final answers."""
    return [m for m in metrics if m in numbers]


def pairs(p: config.Params) -> list[tuple[str, str]]:
    """Every later model against every earlier one (methods, then ensembles, in params order), then each
    against base."""
    names = compared(p)
    return [(b, a) for i, a in enumerate(names) for b in names[i + 1 :]] + [(m, "base") for m in names]


def roles(p: config.Params) -> tuple[str, str, str] | None:
    """(hybrid, its qlora stage, a galore-only method) if the methods hold such a trio."""
    for name, m in p.methods.items():
        if m.init.startswith("merged/"):
            source = m.init.split("/", 1)[1]
            galore = [n for n, x in p.methods.items() if x.recipe == "galore" and x.init == "base"]
            if galore:
                return name, source, galore[0]
    return None
