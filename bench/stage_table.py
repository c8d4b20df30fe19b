"""Stage-by-stage breakdown of one `dvc repro`, from the stages' own records (metrics/resources/*.json).

Each record's wall_s is the stage's work inside its Python process (resources.measure). What the
`dvc repro` took beyond their sum is DVC and start-up: hashing deps and outputs, linking or copying
outputs into the cache, one Python interpreter and its imports per stage, and the report stage (it
reads metrics/resources, so it writes no record there). Prints a markdown table, then one JSON line.

usage: python bench/stage_table.py TOTAL_SECONDS [--resources metrics/resources]
(TOTAL_SECONDS: the `dvc repro` wall time, measured around it; see bench/h200_repro.sh)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PIPELINE_ORDER = ("model", "data", "train", "merge", "evaluate")  # stage name prefixes, as dvc.yaml runs them


def read_records(folder: Path) -> list[dict]:
    """The stage records of the folder, in pipeline order (then by name)."""
    records = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    if not records:
        raise SystemExit(f"stage_table: error: no stage records (*.json) in {folder}; run dvc repro first")

    def order(r: dict) -> tuple[int, str]:
        prefix = r["stage"].split("-")[0]
        return (PIPELINE_ORDER.index(prefix) if prefix in PIPELINE_ORDER else len(PIPELINE_ORDER), r["stage"])

    return sorted(records, key=order)


def summary(records: list[dict], total_s: float) -> dict:
    stages_s = sum(r["wall_s"] for r in records)
    return {
        "repro_s": round(total_s, 1),
        "stages_s": round(stages_s, 1),
        "overhead_s": round(total_s - stages_s, 1),
        "overhead_share": round((total_s - stages_s) / total_s, 4),
        "stages": {r["stage"]: r["wall_s"] for r in records},
    }


def markdown(records: list[dict], s: dict) -> str:
    total = s["repro_s"]
    lines = [
        "| stage | wall s | share | phases s | tokens/s | peak GPU GiB (else RSS) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        phases = ", ".join(f"{k} {v}" for k, v in r.get("phases_s", {}).items())
        memory = r["peak_gpu_gib"] if r.get("peak_gpu_gib") is not None else f"{r['peak_rss_gib']} (RSS)"
        lines.append(
            f"| {r['stage']} | {r['wall_s']} | {r['wall_s'] / total:.1%} | {phases} | "
            f"{r.get('tokens_per_s', '')} | {memory} |"
        )
    lines += [
        f"| **stages together** | {s['stages_s']} | {s['stages_s'] / total:.1%} | | | |",
        f"| **DVC + start-up + report** | {s['overhead_s']} | {s['overhead_share']:.1%} | | | |",
        f"| **`dvc repro`** | {total} | 100% | | | |",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("total_seconds", type=float, help="the `dvc repro` wall time, measured around it")
    ap.add_argument("--resources", type=Path, default=Path("metrics/resources"))
    args = ap.parse_args()
    records = read_records(args.resources)
    s = summary(records, args.total_seconds)
    print(markdown(records, s))
    print(json.dumps(s))


if __name__ == "__main__":
    main()
