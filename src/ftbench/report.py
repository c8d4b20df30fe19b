"""Report stage: one table comparing the base model and every method, written to metrics/report.md.

A method's cost is its whole chain: the hybrid's is the QLoRA stage + the merge + its GaLore stage.

usage: python -m ftbench.report
"""

from __future__ import annotations

import json
from pathlib import Path

from ftbench import config, paths
from ftbench.atomic import atomic_path
from ftbench.errors import UserError, stage_main


def chain(name: str, p: config.Params) -> list[str]:
    """Resource records that make up a model, earliest first (base: none)."""
    if name == "base":
        return []
    init = p.methods[name].init
    if init == "base":
        return [f"train-{name}"]
    source = init.split("/", 1)[1]
    return [*chain(source, p), f"merge-{source}", f"train-{name}"]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{path} is missing; run `dvc repro` so every stage before the report has run"
        ) from None


def row(name: str, p: config.Params) -> dict:
    scores = _read(paths.EVAL / f"{name}.json")
    stages = [_read(paths.RESOURCES / f"{s}.json") for s in chain(name, p)]
    gpu = [s["peak_gpu_gib"] for s in stages if s["peak_gpu_gib"] is not None]
    return {
        "model": name,
        "chain": " + ".join(s["stage"] for s in stages) or "-",
        **{k: scores[k] for k in ("bleu4", "rouge1", "rouge2", "rougeL")},
        "train_wall_s": round(sum(s["wall_s"] for s in stages), 1),
        "peak_gpu_gib": max(gpu) if gpu else None,
        "peak_rss_gib": max((s["peak_rss_gib"] for s in stages), default=None),
        "tokens_trained": sum(s.get("tokens", 0) for s in stages),
    }


def render(rows: list[dict], p: config.Params) -> str:
    head = (
        "| model | BLEU-4 | ROUGE-L | ROUGE-1 | ROUGE-2 | train wall s | peak GPU GiB | peak RSS GiB "
        "| tokens trained | stages |"
    )
    lines = [
        "# ftbench report",
        "",
        f"Datasets: {', '.join(p.data.datasets)}; model: {p.model.source}; seed {p.seed}. "
        "Scores x100 on the test split, greedy decoding; BLEU-4 is sacrebleu corpus BLEU, "
        "ROUGE is rouge-score F1 (mean over examples). Costs sum every stage that built the model.",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['bleu4']:.2f} | {r['rougeL']:.2f} | {r['rouge1']:.2f} | {r['rouge2']:.2f} "
            f"| {r['train_wall_s']:.1f} | {_num(r['peak_gpu_gib'])} | {_num(r['peak_rss_gib'])} "
            f"| {r['tokens_trained']:,} | {r['chain']} |"
        )
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(p: config.Params) -> str:
    rows = [row(name, p) for name in ["base", *p.methods]]
    text = render(rows, p)
    with atomic_path(paths.REPORT) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text


@stage_main
def main(argv: list[str]) -> None:
    print(run(config.load()))


if __name__ == "__main__":
    main()
