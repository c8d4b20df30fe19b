import json

from ftbench import config, paths, report
from ftbench.atomic import write_json


def test_hybrid_cost_is_its_whole_chain(project):
    p = config.load()
    assert report.chain("base", p) == []
    assert report.chain("qlora", p) == ["train-qlora"]
    assert report.chain("hybrid", p) == ["train-qlora", "merge-qlora", "train-hybrid"]


def test_report_table_sums_the_chain(project):
    p = config.load()
    for i, name in enumerate(["base", "qlora", "galore", "hybrid"]):
        write_json(paths.EVAL / f"{name}.json", {"bleu4": i, "rouge1": i, "rouge2": i, "rougeL": 10 * i})
    for stage, wall, gpu, tokens in [
        ("train-qlora", 10, 3.0, 100),
        ("merge-qlora", 2, 1.0, 0),
        ("train-hybrid", 5, 4.5, 50),
        ("train-galore", 7, 5.0, 80),
    ]:
        write_json(
            paths.RESOURCES / f"{stage}.json",
            {"stage": stage, "wall_s": wall, "peak_gpu_gib": gpu, "peak_rss_gib": 1.0, "tokens": tokens},
        )
    text = report.run(p)
    hybrid = next(line for line in text.splitlines() if line.startswith("| hybrid"))
    assert "| 3.00 | 30.00 |" in hybrid and "| 17.0 | 4.50 | 1.00 | 150 |" in hybrid
    assert paths.REPORT.read_text() == text
    assert json.loads((paths.EVAL / "base.json").read_text())["bleu4"] == 0
