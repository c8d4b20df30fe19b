import json
import shutil
from collections.abc import Collection
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ftbench.common import config, paths
from ftbench.common.atomic import read_jsonl, write_json, write_jsonl
from ftbench.evaluation import stats
from ftbench.report import costs, inputs, ranking, ranking_sections, study
from ftbench.stages import report

from .conftest import ROOT, write_params

METRICS = ("rouge1", "rouge2", "rougeL", "exact_match")  # means over examples, as evaluate reports them
# every model and stage comes from params.yaml (study.models, costs.cost_stages): a method added there is
# fabricated, reported and checked here without editing this file


def fabricated_quality(p: config.Params) -> dict[str, float]:
    """Each model's mean ROUGE and share of right answers (x / 60): base the least, the compared models
    drawn from a seeded generator between 30 and 45, and the hybrid of study.roles well above the rest
    (50), so that it beats its qlora stage and meets the seed's expectation by a margin the tests resolve."""
    rng = np.random.default_rng(1)
    quality = {"base": 20.0, **{name: float(rng.uniform(30, 45)) for name in study.compared(p)}}
    trio = study.roles(p)
    if trio is not None:
        quality[trio[0]] = 50.0
    return quality


def fabricated_resources(p: config.Params) -> dict[str, tuple[float, float, int]]:
    """stage -> (wall s, peak GPU GiB, tokens trained) for every record the report reads, drawn from a
    seeded generator: at least 1 GiB of GPU (a base evaluation of 0.5 GiB has the least memory), tokens
    on training stages only."""
    rng = np.random.default_rng(2)
    stages = dict.fromkeys(s for name in study.models(p) for s in costs.cost_stages(name, p))
    return {
        stage: (
            float(rng.integers(2, 16)),
            float(rng.integers(2, 13)) / 2,
            int(rng.integers(5, 16)) * 10 if stage.startswith("train-") else 0,
        )
        for stage in stages
    }


def fabricate_stage_outputs(p: config.Params, final_answers: Collection[str] = ()) -> None:
    """Consistent outputs of every stage before the report, with known quality and costs; on the
    datasets named in `final_answers`, GSM8K-style references (`#### <answer>`) and their exact-match
    scores, as evaluate writes them."""
    rng, quality = np.random.default_rng(0), fabricated_quality(p)
    for name in study.models(p):
        runs = {}
        for run in p.runs(name):
            rows, graded = [], run.dataset in final_answers
            for i in range(20):
                ref = f"the answer to question {i} is {i + 1}" + (f"\n#### {i + 1}" if graded else "")
                pred = ref if rng.random() < quality[name] / 60 else f"maybe {i}"
                rouge = quality[name] + rng.normal(0, 5)
                rows.append(
                    {
                        "prompt": f"q{i}",
                        "reference": ref,
                        "prediction": pred,
                        "bleu_stats": stats.bleu_stats(pred, ref),
                        "rouge1": rouge,
                        "rouge2": rouge,
                        "rougeL": rouge,
                    }
                )
                if graded:
                    rows[-1]["exact_match"] = stats.exact_match(pred, ref)
            write_jsonl(paths.predictions_file(name, run), rows)
            runs[run.key] = {
                "bleu4": stats.corpus_bleu(np.array([r["bleu_stats"] for r in rows])),
                **{k: float(np.mean([r[k] for r in rows])) for k in study.carried(METRICS, rows[0])},
                **({} if name in p.ensembles else {"loss": 1.0, "perplexity": 2.718}),  # as ensemble writes
                "n": 20,
            }
        # as evaluate's summary: each metric's mean over the runs that carry it
        mean = {
            k: float(np.mean(values))
            for k in ("bleu4", *METRICS)
            if (values := [r[k] for r in runs.values() if k in r])
        }
        write_json(
            paths.EVAL / f"{name}.json", {**mean, "convention": "BLEU-4: sacrebleu (tok:13a).", "runs": runs}
        )
    for stage, (wall, gpu, tokens) in fabricated_resources(p).items():
        write_json(
            paths.RESOURCES / f"{stage}.json",
            {
                "stage": stage,
                "wall_s": wall,
                "peak_gpu_gib": gpu,
                "peak_rss_gib": 1.0,
                "tokens": tokens,
                "device": "cpu",
            },
        )
    paths.BASE.mkdir(parents=True)  # the report re-tokenizes the answers with the base tokenizer
    shutil.copy(Path(p.model.source) / "tokenizer.json", paths.BASE)
    for name in p.methods:
        (paths.CURVES / name).mkdir(parents=True)
        for run in p.runs(name):
            (paths.CURVES / name / f"{run.key.replace('/', '-')}.csv").write_text(
                "step,loss,lr\n1,2.0,1e-4\n2,1.5,1e-4\n"
            )
    write_json(
        paths.DATA_SUMMARY,
        {
            "builtin": {
                "format": "alpaca",
                "rows_read": 100,
                "duplicates": 0,
                "empty": 0,
                "overlong_dropped": 1,
                "overlong_truncated": 0,
                "rows_with_chat_markup": 0,
                "splits": {"train": 16, "validation": 4, "test": 20},
                "mean_tokens": 30.0,
            }
        },
    )


def expected_cost(name: str, p: config.Params) -> dict:
    """A model's cost per run from the fabricated records: its stages' wall time and tokens trained
    summed and divided by its runs, their largest GPU peak."""
    resources = fabricated_resources(p)
    stages, runs = [resources[s] for s in costs.cost_stages(name, p)], len(p.runs(name))
    return {
        "wall_s": sum(wall for wall, _, _ in stages) / runs,
        "peak_gpu_gib": max(gpu for _, gpu, _ in stages),
        "tokens_trained": sum(tokens for _, _, tokens in stages) / runs,
    }


def answer_tokens(p: config.Params, name: str) -> int:
    """Tokens of a model's saved answers over its runs, by the transformers tokenizer of the base model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(p.model.source)
    rows = [r for run in p.runs(name) for r in read_jsonl(paths.predictions_file(name, run))]
    return sum(len(tokenizer(r["prediction"], add_special_tokens=False).input_ids) for r in rows)


def test_chain_and_pairs(project):
    p = config.load()
    assert costs.chain("base", p) == []
    assert costs.chain("hybrid", p) == ["train-qlora", "merge-qlora", "train-hybrid"]
    assert costs.cost_stages("base", p) == ["evaluate-base"]
    assert costs.cost_stages("hybrid", p) == [*costs.chain("hybrid", p), "evaluate-hybrid"]
    assert ("hybrid", "qlora") in study.pairs(p) and ("galore", "qlora") in study.pairs(p)
    assert ("hybrid", "galore") in study.pairs(p) and ("qlora", "base") in study.pairs(p)
    assert study.roles(p) == ("hybrid", "qlora", "galore")
    assert costs.chain("ensemble", p) == ["train-qlora", "train-galore"]  # its members' training
    assert costs.cost_stages("ensemble", p) == ["train-qlora", "train-galore", "evaluate-ensemble"]
    assert ("ensemble", "hybrid") in study.pairs(p) and ("ensemble", "base") in study.pairs(p)


def test_an_ensemble_is_compared_and_costs_its_members_training_and_its_own_inference(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    row = next(line for line in text.splitlines() if line.startswith("| ensemble | ") and "[" in line)
    assert row.endswith("| - | - |")  # no test loss: ensemble writes none
    cost = next(line for line in text.splitlines() if line.startswith("| ensemble | train-qlora"))
    r, built = fabricated_resources(p), ("train-qlora", "train-galore", "evaluate-ensemble")
    wall, tokens = (sum(r[s][i] for s in built) / len(p.runs("ensemble")) for i in (0, 2))
    assert (
        f"{' + '.join(built)} | {wall:.1f} | {max(r[s][1] for s in built):.2f} | 1.00 | {tokens:.0f} |"
        in cost
    )
    assert (
        "Inference, ensemble (qlora + galore): "
        f"evaluate-ensemble {r['evaluate-ensemble'][0]:.1f} s, peak RSS 1.00 GiB, "
        f"peak GPU {r['evaluate-ensemble'][1]:.2f} GiB; its members alone: evaluate-qlora "
        f"{r['evaluate-qlora'][0]:.1f} s, peak RSS 1.00 GiB, peak GPU {r['evaluate-qlora'][1]:.2f} GiB; "
        f"evaluate-galore {r['evaluate-galore'][0]:.1f} s"
    ) in text
    saved = json.loads(paths.REPORT_JSON.read_text())
    assert saved["models"]["ensemble"]["cost"]["wall_s"] == wall
    assert {"ensemble-vs-hybrid", "ensemble-vs-base"} <= set(saved["pairs"])
    assert saved["models"]["ensemble"]["builtin/seed0"]["test_loss"] is None
    assert "ensemble" in {point["model"] for point in json.loads(paths.PARETO.read_text())}


def test_report_holds_every_section_and_sums_the_hybrid_chain(project, tiny_model_dir):
    write_params(project, tiny_model_dir, seeds=[0, 1])
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    for title in (
        "Conventions",
        "Quality",
        "Differences",
        "The seed's expectation",
        "Ranking: quality against cost",
        "Which differences the test set can resolve",
        "Resources",
        "Data",
        "Provenance",
    ):
        assert f"## {title}" in text
    assert "**Across training seeds**" in text
    assert "Exact match" not in text  # no `#### <answer>` in the references: the report as before
    hybrid_cost = next(line for line in text.splitlines() if line.startswith("| hybrid | train-qlora"))
    c = expected_cost("hybrid", p)
    assert (
        f"| {c['wall_s']:.1f} | {c['peak_gpu_gib']:.2f} | 1.00 | {c['tokens_trained']:.0f} |" in hybrid_cost
    )
    assert "| builtin/seed0 | hybrid − qlora | ROUGE-L |" in text
    assert paths.REPORT.read_text() == text
    page = paths.REPORT_HTML.read_text()  # the same tables (headless Chromium checks the rendering)
    assert "<h2>The seed&#x27;s expectation</h2>" in page and page.count("<img") == 3
    stages = " + ".join(costs.cost_stages("hybrid", p))
    assert f"<td>hybrid</td><td>{stages}</td><td>{c['wall_s']:.1f}</td>" in page


def recomputed(p: config.Params, name: str, metric: str) -> tuple[float, float, float]:
    """A model's point estimate and 95% interval, straight from its predictions file."""
    scores = inputs.per_example(name, config.Run("builtin", None if name == "base" else 0))
    idx = stats.resample_indices(len(scores["rougeL"]), p.report.resamples, p.seed)
    return (stats.point(metric, scores[metric]), *stats.confidence(scores, metric, idx))


def test_quality_numbers_recompute_from_predictions(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    evals = json.loads((paths.EVAL / "hybrid.json").read_text())["runs"]["builtin/seed0"]
    row = next(line for line in text.splitlines() if line.startswith("| hybrid | ") and "[" in line)
    value, lo, hi = recomputed(p, "hybrid", "rougeL")
    assert row.split(" | ")[1].startswith(f"{evals['bleu4']:.2f} [")
    assert row.split(" | ")[2] == f"{value:.2f} [{lo:.2f}, {hi:.2f}]" and lo < value < hi


def test_report_json_holds_intervals_differences_verdicts_and_costs(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    value, lo, hi = recomputed(p, "hybrid", "bleu4")
    hybrid = out["models"]["hybrid"]
    assert hybrid["builtin/seed0"]["bleu4"] == {
        "value": round(value, 4),
        "ci_low": round(lo, 4),
        "ci_high": round(hi, 4),
    }
    assert hybrid["builtin/seed0"]["test_loss"] == 1.0
    assert hybrid["cost"] == {
        **expected_cost("hybrid", p),
        "peak_rss_gib": 1.0,
        "tokens_generated": answer_tokens(p, "hybrid") / len(p.runs("hybrid")),
    }
    assert set(out["models"]["base"]) == {"builtin", "cost"}  # one run per dataset; its evaluation's cost
    assert out["models"]["base"]["cost"]["wall_s"] == fabricated_resources(p)["evaluate-base"][0]  # one run
    # no `#### <answer>` in the references: no exact match in any table or key
    assert set(hybrid["builtin/seed0"]) == {"bleu4", "rougeL", "test_loss"} and "Exact match" not in text
    assert set(out["pairs"]["hybrid-vs-qlora"]["builtin/seed0"]) == {"bleu4", "rougeL"}
    assert set(out["pairs"]) == {f"{a}-vs-{b}" for a, b in study.pairs(p)}
    d = out["pairs"]["hybrid-vs-qlora"]["builtin/seed0"]["rougeL"]
    assert f"| builtin/seed0 | hybrid − qlora | ROUGE-L | {d['diff']:+.2f} | " in text
    assert d["ci_low"] > 0 and d["p"] < 0.05  # fabricated ROUGE-L: 50 against at most 45
    verdicts = out["expectation"]["builtin/seed0"]
    assert set(verdicts) == {"bleu4", "rougeL"}
    e = verdicts["rougeL"]
    assert (
        f"| builtin/seed0 | ROUGE-L | {e['margin']:+.2f} | [{e['ci_low']:+.2f}, {e['ci_high']:+.2f}] | yes |"
        in text
    )
    points = {pt["model"]: pt for pt in json.loads(paths.PARETO.read_text())}
    assert points["hybrid"]["wall_s"] == expected_cost("hybrid", p)["wall_s"]
    assert points["hybrid"]["peak_memory_gib"] == expected_cost("hybrid", p)["peak_gpu_gib"]
    assert points["hybrid"]["rougeL"] == json.loads((paths.EVAL / "hybrid.json").read_text())["rougeL"]


def test_report_carries_exact_match_where_references_have_final_answers(project, tiny_model_dir):
    write_params(project, tiny_model_dir, seeds=[0, 1])
    p = config.load()
    fabricate_stage_outputs(p, final_answers={"builtin"})
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    value, lo, hi = recomputed(p, "hybrid", "exact_match")
    assert lo < value < hi  # the fabricated hybrid gets about 5 in 6 right: an interval, not a point
    got = out["models"]["hybrid"]["builtin/seed0"]["exact_match"]
    assert got == {"value": round(value, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}
    header = "| model | BLEU-4 | ROUGE-L | ROUGE-1 | ROUGE-2 | Exact match | test loss | perplexity |"
    assert header in text
    row = next(line for line in text.splitlines() if line.startswith("| hybrid | ") and "[" in line)
    assert row.split(" | ")[5] == f"{value:.2f} [{lo:.2f}, {hi:.2f}]"
    # the difference: the same paired bootstrap as ROUGE-L's, on the same resampled examples
    d = out["pairs"]["hybrid-vs-qlora"]["builtin/seed0"]["exact_match"]
    assert d["diff"] == pytest.approx(value - recomputed(p, "qlora", "exact_match")[0], abs=1e-4)
    assert d["ci_low"] <= d["diff"] <= d["ci_high"] and 0 <= d["p"] <= 1
    row = f"| builtin/seed0 | hybrid − qlora | Exact match | {d['diff']:+.2f} | "
    assert row + f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] | {d['p']:.3f} |" in text
    assert set(out["expectation"]["builtin/seed0"]) == {"bleu4", "rougeL", "exact_match"}
    assert "| dataset | model | BLEU-4 | ROUGE-L | Exact match |" in text  # across training seeds
    assert "<th>Exact match</th>" in paths.REPORT_HTML.read_text()


def test_exact_match_is_only_where_a_dataset_has_final_answers(project, tiny_model_dir):
    (project / "gsm.jsonl").write_text("")  # the report reads the evaluate stage's files only
    datasets = {"builtin": {"source": "builtin"}, "gsm": {"source": str(project / "gsm.jsonl")}}
    write_params(project, tiny_model_dir, seeds=[0, 1], **{"data.datasets": datasets})
    p = config.load()
    fabricate_stage_outputs(p, final_answers={"gsm"})
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    assert (
        "exact_match" in out["models"]["qlora"]["gsm/seed1"] and "exact_match" in out["models"]["base"]["gsm"]
    )
    assert "exact_match" not in out["models"]["qlora"]["builtin/seed1"]
    assert "exact_match" not in out["models"]["base"]["builtin"]
    assert "exact_match" in out["pairs"]["qlora-vs-base"]["gsm/seed0"]
    assert "exact_match" not in out["pairs"]["qlora-vs-base"]["builtin/seed0"]
    quality = text.split("## Differences")[0]
    builtin_table = quality.split("**builtin/seed0**")[1].split("**gsm/seed0**")[0]
    assert "Exact match" not in builtin_table
    assert "| Exact match |" in quality.split("**gsm/seed0**")[1].split("**gsm/seed1**")[0]
    # across seeds: one table for both datasets, exact match left empty where there is none
    seeds = quality.split("**Across training seeds**")[1]
    assert next(line for line in seeds.splitlines() if line.startswith("| builtin | hybrid |")).endswith(
        " - |"
    )
    assert (
        " ± "
        in next(line for line in seeds.splitlines() if line.startswith("| gsm | hybrid |")).split("|")[-2]
    )


def test_report_json_keys_every_dataset_and_seed_run(project, tiny_model_dir):
    write_params(project, tiny_model_dir, seeds=[0, 1])
    p = config.load()
    fabricate_stage_outputs(p)
    report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    assert set(out["models"]["qlora"]) == {"builtin/seed0", "builtin/seed1", "cost"}
    assert (
        set(out["pairs"]["hybrid-vs-base"]) == set(out["expectation"]) == {"builtin/seed0", "builtin/seed1"}
    )


def test_cost_on_a_cpu_has_no_gpu_peak_and_memory_falls_back_to_rss(project):
    p = config.load()
    fabricate_stage_outputs(p)
    for record in paths.RESOURCES.glob("*.json"):
        write_json(record, {**json.loads(record.read_text()), "peak_gpu_gib": None, "peak_rss_gib": 2.0})
    report.run(p)
    cost = json.loads(paths.REPORT_JSON.read_text())["models"]["galore"]["cost"]
    assert cost["peak_gpu_gib"] is None and cost["peak_rss_gib"] == 2.0
    points = json.loads(paths.PARETO.read_text())
    assert all(pt["memory"] == "peak RSS" and pt["peak_memory_gib"] == 2.0 for pt in points)


def test_provenance_names_the_packages_the_stages_ran_on_beside_the_reports(project):
    p = config.load()
    fabricate_stage_outputs(p)
    ran_on = "torch 2.11.0+cu130, transformers 5.17.0"  # a study's records copied from a GPU machine
    for record in paths.RESOURCES.glob("*.json"):
        write_json(record, {**json.loads(record.read_text()), "packages": ran_on})
    text = report.run(p)
    assert f"| packages, the stages' | {ran_on} |" in text
    assert f"| packages, this report's | torch {torch.__version__}, " in text


def test_a_resumed_training_stage_is_charged_its_earlier_attempts_training_seconds(project):
    p = config.load()
    fabricate_stage_outputs(p)
    report.run(p)
    before = json.loads(paths.REPORT_JSON.read_text())["models"]["galore"]["cost"]["wall_s"]
    record = paths.RESOURCES / "train-galore.json"
    write_json(record, {**json.loads(record.read_text()), "resumed_train_s": 12.0})  # train.run writes it
    report.run(p)
    after = json.loads(paths.REPORT_JSON.read_text())["models"]["galore"]["cost"]["wall_s"]
    assert after == pytest.approx(before + 12.0 / len(p.runs("galore")))


@pytest.mark.skipif(
    not shutil.which("chromedriver"), reason="chromium-driver not installed (.ci/run installs it)"
)
def test_html_report_renders_in_headless_chromium(project):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    p = config.load()
    fabricate_stage_outputs(p)
    report.run(p)
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(paths.REPORT_HTML.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
        )
        rows = driver.execute_script("return document.querySelectorAll('table tbody tr').length")
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
        )
    finally:
        driver.quit()
    assert len(images) == 3 and all(images)  # two Pareto figures and the loss curves, all decoded
    assert rows > 20 and "Quality" in headings and "Provenance" in headings


def test_conventions_name_a_method_that_is_not_galore_as_published(project, tiny_model_dir):
    projected = {"accumulation": "projected", "layerwise": True}  # the accumulation only applies layerwise
    overrides = {f"methods.hybrid.galore.{k}": v for k, v in projected.items()}
    write_params(project, tiny_model_dir, **overrides, **{"train.cuda_graphs": False})
    p = config.load()
    fabricate_stage_outputs(p)
    conventions = report.run(p).split("## Quality")[0]
    assert "Deviation, hybrid: galore.accumulation: projected" in conventions
    assert "Deviation, galore" not in conventions  # the default is GaLore as published


def test_conventions_say_which_form_each_adapter_model_was_scored_in(project):
    p = config.load()
    fabricate_stage_outputs(p)
    forms = {
        "qlora": {
            "scored_form": "merged-bfloat16",
            "continuity": {"rows": 32, "relative_difference": 0.0012, "tolerance": 0.01},
        },
        "qlora-3ep": {"scored_form": "nf4+adapter"},
        "lora": {"scored_form": "merged-bfloat16"},
    }
    for name, facts in forms.items():
        saved = json.loads((paths.EVAL / f"{name}.json").read_text())
        saved["scored_form"] = facts["scored_form"]
        if "continuity" in facts:
            for run in saved["runs"].values():
                run["continuity"] = facts["continuity"]
        write_json(paths.EVAL / f"{name}.json", saved)
    conventions = report.run(p).split("## Quality")[0]
    assert "Scored form, qlora: merged-bfloat16 (the adapter merged into the dequantized NF4" in conventions
    assert "first 32 test rows is within 0.120% of NF4 + adapter's, tolerance 1%" in conventions
    assert "Scored form, qlora-3ep: nf4+adapter (the adapter on the NF4 base, as trained)." in conventions
    assert (
        "Scored form, lora: merged-bfloat16 (the adapter merged into the unquantized weights" in conventions
    )
    assert "Scored form, galore" not in conventions and "Scored form, hybrid" not in conventions


def dominated(point: tuple, others: list[tuple]) -> bool:
    """(quality, wall s, memory): another point is at least as good and at most as costly, not the same."""
    return any(q >= point[0] and w <= point[1] and m <= point[2] and (q, w, m) != point for q, w, m in others)


@pytest.mark.parametrize(
    ("base_gpu_gib", "base_optimal"),
    [(100.0, False), (0.5, True)],
    ids=["base-dominated", "base-kept-by-its-memory"],
)
def test_ranking_orders_every_model_by_bleu_and_flags_the_pareto_front(project, base_gpu_gib, base_optimal):
    p = config.load()
    fabricate_stage_outputs(p)
    # the base model's evaluation made the slowest stage: the least good and the slowest model, so only
    # the least memory keeps it on the front
    write_json(
        paths.RESOURCES / "evaluate-base.json",
        {
            "stage": "evaluate-base",
            "wall_s": 1000,
            "peak_gpu_gib": base_gpu_gib,
            "peak_rss_gib": 1.0,
            "device": "cpu",
        },
    )
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    models = out["models"]
    bleu = {name: models[name][study.run_for(name, config.Run("builtin", 0)).key]["bleu4"] for name in models}
    ranked = out["ranking"]["builtin/seed0"]
    assert set(ranked) == set(study.models(p))
    by_rank = sorted(ranked, key=lambda name: ranked[name]["rank"])
    assert by_rank == sorted(bleu, key=lambda name: -bleu[name]["value"])
    table = text.split("## Ranking: quality against cost")[1].split("## ")[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "[" in line]
    assert [row[1] for row in rows] == by_rank
    assert (
        rows[0][2] == f"{bleu[by_rank[0]]['value']:.2f} [{bleu[by_rank[0]]['ci_low']:.2f}, "
        f"{bleu[by_rank[0]]['ci_high']:.2f}]"
    )
    points = {
        n: (bleu[n]["value"], models[n]["cost"]["wall_s"], models[n]["cost"]["peak_gpu_gib"]) for n in models
    }
    for name in models:
        expected = not dominated(points[name], [x for n, x in points.items() if n != name])
        assert ranked[name]["pareto_optimal"] == expected
        assert (rows[by_rank.index(name)][-1].rstrip(" |") == "yes") == expected
    assert ranked["base"]["pareto_optimal"] == base_optimal and ranked[by_rank[0]]["pareto_optimal"]


def test_pareto_optimal_drops_a_dominated_model_only():
    points = {
        "cheap": (40.0, 10.0, 3.0),
        "better": (50.0, 20.0, 5.0),
        "dominated": (40.0, 12.0, 3.0),
        "twin": (50.0, 20.0, 5.0),
        "leaner": (30.0, 30.0, 1.0),
    }
    expected = {n for n, x in points.items() if not dominated(x, [y for m, y in points.items() if m != n])}
    assert ranking.pareto_optimal(points) == expected == {"cheap", "better", "twin", "leaner"}


def test_resolution_says_resolved_only_when_the_interval_excludes_zero():
    run = "builtin/seed0"
    diffs = [  # (run, a, b, metric, a - b): the Differences' pairs, some the other way round
        (run, "hybrid", "qlora", "bleu4", {"diff": 6.0, "lo": 2.0, "hi": 10.0, "p": 0.004}),
        (run, "qlora", "base", "bleu4", {"diff": 1.0, "lo": -3.0, "hi": 5.0, "p": 0.6}),
        (run, "hybrid", "base", "bleu4", {"diff": 7.0, "lo": 1.0, "hi": 13.0, "p": 0.01}),
        (run, "qlora", "base", "rougeL", {"diff": -4.0, "lo": -7.0, "hi": -1.0, "p": 0.02}),
    ]
    ranked = {run: [{"model": m} for m in ("hybrid", "qlora", "base")]}
    got = ranking.resolution(ranked, diffs)[run]
    assert [(a, b, ranking.resolved(d)) for a, b, d in got["adjacent"]] == [
        ("hybrid", "qlora", True),
        ("qlora", "base", False),
    ]
    widths = [(d["hi"] - d["lo"]) / 2 for _, _, _, m, d in diffs if m == "bleu4"]
    assert got["min_detectable"] == {"bleu4": float(np.median(widths)), "rougeL": 3.0}
    # a pair the Differences hold the other way round comes back negated
    base_first = ranking.resolution({run: [{"model": "base"}, {"model": "qlora"}]}, diffs)[run]["adjacent"]
    assert base_first == [("base", "qlora", {"diff": -1.0, "lo": -5.0, "hi": 3.0, "p": 0.6})]
    _, parts = ranking_sections.resolution_section(ranking.resolution(ranked, diffs))
    rows = parts[1].rows
    assert rows[0][1:] == ["hybrid − qlora", "+6.00", "[+2.00, +10.00]", "0.004", "resolved"]
    assert rows[1][1:] == ["qlora − base", "+1.00", "[-3.00, +5.00]", "0.600", "not resolved"]


def test_report_ranks_and_resolves_every_model_in_json_md_and_pareto_data(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    res = out["resolution"]["builtin/seed0"]
    ranked = out["ranking"]["builtin/seed0"]
    by_rank = sorted(ranked, key=lambda name: ranked[name]["rank"])
    assert list(res["adjacent"]) == [f"{a}-vs-{b}" for a, b in pairwise(by_rank)]
    section = text.split("## Which differences the test set can resolve")[1].split("## ")[0]
    for pair, d in res["adjacent"].items():
        assert d["resolved"] == (d["ci_low"] > 0 or d["ci_high"] < 0)
        a, b = pair.split("-vs-")
        row = next(line for line in section.splitlines() if line.startswith(f"| builtin/seed0 | {a} − {b} |"))
        assert row.endswith(" | resolved |" if d["resolved"] else " | not resolved |")
    halves = [
        (d["bleu4"]["ci_high"] - d["bleu4"]["ci_low"]) / 2
        for d in (pair["builtin/seed0"] for pair in out["pairs"].values())
    ]
    assert res["min_detectable"]["bleu4"] == pytest.approx(float(np.median(halves)), abs=2e-4)
    assert f"| builtin/seed0 | BLEU-4 | {res['min_detectable']['bleu4']:.2f} |" in section
    points = {pt["model"]: pt for pt in json.loads(paths.PARETO.read_text())}
    assert set(points) == set(study.models(p))
    for name, pt in points.items():
        assert pt["wall_s"] == expected_cost(name, p)["wall_s"]
        assert pt["bleu4"] == json.loads((paths.EVAL / f"{name}.json").read_text())["bleu4"]
    assert out["models"]["base"]["cost"]["tokens_generated"] == answer_tokens(p, "base") > 0  # one run


def test_a_method_added_to_params_is_reported_with_no_edit_here(project, tiny_model_dir):
    """Issue 14's rule: a new method touches its recipe, params.yaml and its own test only; this file's
    fabricated study and expectations follow params.yaml."""
    qlora = yaml.safe_load((ROOT / "params.yaml").read_text())["methods"]["qlora"]
    write_params(project, tiny_model_dir, **{"methods.qlora-4ep": {**qlora, "epochs": 4}})
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    out = json.loads(paths.REPORT_JSON.read_text())
    assert "qlora-4ep" in out["ranking"]["builtin/seed0"] and "qlora-4ep-vs-base" in out["pairs"]
    c = expected_cost("qlora-4ep", p)
    assert f"| qlora-4ep | train-qlora-4ep + evaluate-qlora-4ep | {c['wall_s']:.1f} | " in text
