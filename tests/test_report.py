import json
import shutil

import numpy as np
import pytest

from ftbench import config, paths, report, stats
from ftbench.atomic import write_json, write_jsonl

from .conftest import write_params

MODELS = ["base", "qlora", "galore", "qlora-3ep", "hybrid"]
QUALITY = {"base": 20, "qlora": 40, "galore": 30, "qlora-3ep": 42, "hybrid": 50}


def fabricate_stage_outputs(p: config.Params) -> None:
    """Consistent outputs of every stage before the report, with known quality and costs."""
    rng = np.random.default_rng(0)
    for name in MODELS:
        runs = {}
        for run in p.runs(name):
            rows = []
            for i in range(20):
                ref = f"the answer to question {i} is {i + 1}"
                pred = ref if rng.random() < QUALITY[name] / 60 else f"maybe {i}"
                rouge = QUALITY[name] + rng.normal(0, 5)
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
            write_jsonl(paths.predictions_file(name, run), rows)
            runs[run.key] = {
                "bleu4": stats.corpus_bleu(np.array([r["bleu_stats"] for r in rows])),
                **{k: float(np.mean([r[k] for r in rows])) for k in ("rouge1", "rouge2", "rougeL")},
                "loss": 1.0,
                "perplexity": 2.718,
                "n": 20,
            }
        mean = {
            k: float(np.mean([r[k] for r in runs.values()])) for k in ("bleu4", "rouge1", "rouge2", "rougeL")
        }
        write_json(
            paths.EVAL / f"{name}.json", {**mean, "convention": "BLEU-4: sacrebleu (tok:13a).", "runs": runs}
        )
    for stage, wall, gpu, tokens in [
        ("train-qlora", 10, 3.0, 100),
        ("merge-qlora", 2, 1.0, 0),
        ("train-hybrid", 5, 4.5, 50),
        ("train-galore", 7, 5.0, 80),
        ("train-qlora-3ep", 15, 3.0, 150),
    ]:
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
        (paths.CURVES / stage.removeprefix("train-")).mkdir(parents=True, exist_ok=True)
    for name in p.methods:
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
                "splits": {"train": 16, "validation": 4, "test": 20},
                "mean_tokens": 30.0,
            }
        },
    )


def test_chain_and_pairs(project):
    p = config.load()
    assert report.chain("base", p) == []
    assert report.chain("hybrid", p) == ["train-qlora", "merge-qlora", "train-hybrid"]
    assert ("hybrid", "qlora") in report.pairs(p) and ("galore", "qlora") in report.pairs(p)
    assert ("hybrid", "galore") in report.pairs(p) and ("qlora", "base") in report.pairs(p)
    assert report.roles(p) == ("hybrid", "qlora", "galore")


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
        "Resources",
        "Data",
        "Provenance",
    ):
        assert f"## {title}" in text
    assert "**Across training seeds**" in text
    hybrid_cost = next(line for line in text.splitlines() if line.startswith("| hybrid | train-qlora"))
    assert "| 17.0 | 4.50 | 1.00 | 150 |" in hybrid_cost
    assert "| builtin/seed0 | hybrid − qlora | ROUGE-L |" in text
    assert paths.REPORT.read_text() == text and paths.REPORT_HTML.exists()


def test_quality_numbers_recompute_from_predictions(project):
    p = config.load()
    fabricate_stage_outputs(p)
    text = report.run(p)
    evals = json.loads((paths.EVAL / "hybrid.json").read_text())["runs"]["builtin/seed0"]
    row = next(line for line in text.splitlines() if line.startswith("| hybrid | ") and "[" in line)
    assert row.split(" | ")[1].startswith(f"{evals['bleu4']:.2f} [")


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
