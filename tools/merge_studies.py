"""One study's params.yaml and metrics/ from studies that ran disjoint training seeds side by side.

bench/h200_study.sh shares a machine's seeds out over its GPUs: one study a GPU, each a whole `dvc repro`
with `seeds:` its share. This writes what one study of all their seeds would have written, so that
`python -m ftbench report`, run on OUT's params.yaml and metrics/, reports over every seed:
- params.yaml: the studies' own (they may differ in `seeds` only, and no seed may be in two), seeds = all;
- metrics/eval, train, merge: every study's runs, keyed by run, and eval's means over all of them
  (score.means); a run several studies hold (the base model's: it has no seed) must be the same in each;
- metrics/curves, predictions: every study's per-run files (the base model's, in each, must be identical);
- metrics/data.json: the same in every study, kept once;
- metrics/resources: one record a stage. A stage that ran each study's seeds (what built or evaluated a
  model that has a run per seed: ftbench.report.costs.cost_stages) sums the studies' times, tokens and
  energy, which is what one stage running every seed would have cost but for one extra start-up, and takes
  their peaks; a stage that runs once whatever the seeds (model, data, evaluate-base) keeps the first
  study's record.
The report's own outputs (report.*, pareto.json) are left out: the report stage rebuilds them.

usage: python tools/merge_studies.py OUT STUDY [STUDY ...]   (OUT must not exist; it appears whole or not)
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from ftbench.common import config, paths
from ftbench.common.atomic import atomic_path, write_json
from ftbench.common.errors import UserError
from ftbench.evaluation import score
from ftbench.report.costs import cost_stages
from ftbench.report.study import models

SUMMED = ("wall_s", "cpu_s", "startup_s", "energy_j", "tokens", "train_s", "resumed_train_s")
# means over the studies' records, weighted by the time each was measured over (key, digits)
WEIGHTED = {"mfu": ("train_s", 4), "gpu_util_mean": ("wall_s", 1)}
# one process's clock times: the studies' stages ran side by side, so no one interval is the merged stage's
CLOCK = ("started_at", "finished_at")
RUN_KEYED = (paths.TRAIN, paths.METRICS / "merge")  # <name>.json: run key -> that run's facts
PER_RUN_FILES = (paths.CURVES, paths.PREDICTIONS)


def fail(message: str) -> None:
    raise SystemExit(f"merge_studies: error: {message}")


def first_difference(a, b, at: str = "") -> str | None:
    """The dotted key where two parsed YAML documents first differ, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = first_difference(a.get(key), b.get(key), f"{at}.{key}" if at else key)
            if found:
                return found
        return None
    return None if a == b else f"{at} ({a!r} against {b!r})"


def merged_params(studies: list[Path]) -> dict:
    """The first study's params with every study's seeds, sorted; the studies must differ in seeds only."""
    raws = [yaml.safe_load((s / "params.yaml").read_text()) for s in studies]
    ran = {}
    for study, raw in zip(studies, raws, strict=True):
        difference = first_difference({**raws[0], "seeds": None}, {**raw, "seeds": None})
        if difference:
            fail(f"{study}/params.yaml differs from {studies[0]}/params.yaml at {difference}; only seeds may")
        for seed in raw["seeds"]:
            if seed in ran:
                fail(f"seed {seed} ran in both {ran[seed]} and {study}; merge studies of disjoint seeds")
            ran[seed] = study
    return {**raws[0], "seeds": sorted(ran)}


def same(values: list, what: str):
    """The one value every study holds."""
    if any(v != values[0] for v in values):
        fail(f"{what} differs between the studies")
    return values[0]


def read_all(studies: list[Path], relative: Path) -> list[dict]:
    for study in studies:
        if not (study / relative).exists():
            fail(f"{study / relative} is missing; merge finished studies")
    return [json.loads((study / relative).read_text()) for study in studies]


def merged_runs(name: str, tables: list[dict], p: config.Params, what: str) -> dict:
    """Run key -> its value over the studies, in the order one study of every seed writes them."""
    merged = {}
    for run in p.runs(name):
        held = [t[run.key] for t in tables if run.key in t]
        if not held:
            fail(f"{what}: no study holds run {run.key}")
        merged[run.key] = same(held, f"{what}: run {run.key}")
    return merged


def merged_eval(name: str, summaries: list[dict], p: config.Params, what: str) -> dict:
    """metrics/eval/<name>.json over every study's runs: evaluate's means over them, then the studies'
    convention and details (the same in each), then the runs, as score.summarize orders them."""
    runs = merged_runs(name, [s["runs"] for s in summaries], p, what)
    rest = [{k: v for k, v in s.items() if k not in (*score.logged(s["runs"]), "runs")} for s in summaries]
    return {**score.means(runs), **same(rest, f"{what}: its convention or details"), "runs": runs}


def per_seed_stages(p: config.Params) -> set[str]:
    """The stages that ran each study's seeds: those that built or evaluated a model with a run per seed.
    The rest (model, data, the base model's evaluation) ran the same work in every study."""
    return {
        stage
        for name in models(p)
        if any(run.seed is not None for run in p.runs(name))
        for stage in cost_stages(name, p)
    }


def total(values: list):
    return None if None in values else round(sum(values), 2)


def weighted_mean(values: list, weights: list, digits: int):
    if None in values or None in weights or not sum(weights):
        return None
    return round(sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights), digits)


def merged_record(records: list[dict]) -> dict:
    """One stage's resource record from the studies' records of it, each over its own seeds."""
    merged = {}
    # every key any study recorded: a study made by newer code may record more; code older than
    # resumed_train_s did not record it, and its stages are taken as not resumed (0)
    for key in dict.fromkeys(k for r in records for k in r):
        values = [r.get(key, 0.0 if key == "resumed_train_s" else None) for r in records]
        first = next((v for v in values if v is not None), None)
        if key in SUMMED:
            merged[key] = total(values)
        elif key.startswith(("peak_", "torch_peak_")):
            merged[key] = max((v for v in values if v is not None), default=None)
        elif key in WEIGHTED:
            weight, digits = WEIGHTED[key]
            merged[key] = weighted_mean(values, [r.get(weight) for r in records], digits)
        elif key == "phases_s":
            phases = dict.fromkeys(phase for v in values for phase in v)
            merged[key] = {phase: total([v.get(phase, 0.0) for v in values]) for phase in phases}
        elif key not in CLOCK:
            merged[key] = first
    if merged.get("train_s"):
        merged["tokens_per_s"] = round(merged["tokens"] / merged["train_s"], 1)
    merged["merged_from_studies"] = len(records)
    return merged


def write_metrics(studies: list[Path], p: config.Params, out: Path) -> None:
    write_json(out / paths.DATA_SUMMARY, same(read_all(studies, paths.DATA_SUMMARY), str(paths.DATA_SUMMARY)))
    for folder in RUN_KEYED:
        for f in sorted((studies[0] / folder).glob("*.json")):
            tables = read_all(studies, folder / f.name)
            write_json(out / folder / f.name, merged_runs(f.stem, tables, p, str(folder / f.name)))
    for f in sorted((studies[0] / paths.EVAL).glob("*.json")):
        summaries = read_all(studies, paths.EVAL / f.name)
        write_json(out / paths.EVAL / f.name, merged_eval(f.stem, summaries, p, str(paths.EVAL / f.name)))
    per_seed = per_seed_stages(p)
    for f in sorted((studies[0] / paths.RESOURCES).glob("*.json")):
        records = read_all(studies, paths.RESOURCES / f.name)
        write_json(
            out / paths.RESOURCES / f.name, merged_record(records) if f.stem in per_seed else records[0]
        )
    copy_per_run_files(studies, out)


def copy_per_run_files(studies: list[Path], out: Path) -> None:
    """Every study's curves and predictions; a file two studies hold (the base model's answers, the same
    whatever the seed) must be the same in both."""
    for folder in PER_RUN_FILES:
        for study in studies:
            for f in sorted(g for g in (study / folder).rglob("*") if g.is_file()):
                target = out / f.relative_to(study)
                if target.exists() and target.read_bytes() != f.read_bytes():
                    fail(f"{f.relative_to(study)} differs between the studies")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="the merged study's folder, written here (must not exist)")
    ap.add_argument("studies", type=Path, nargs="+", help="the studies' folders (params.yaml, metrics/)")
    args = ap.parse_args()
    if args.out.exists():
        fail(f"{args.out} exists; name a new folder")
    params = merged_params(args.studies)
    with atomic_path(args.out, is_dir=True) as out:
        (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            p = config.load(out / "params.yaml")
        except UserError as err:
            fail(str(err))
        write_metrics(args.studies, p, out)
    print(f"merge_studies: {args.out}: seeds {params['seeds']} from {len(args.studies)} studies")


if __name__ == "__main__":
    main()
