"""Stage-by-stage breakdown of one `dvc repro`, from the stages' own records (metrics/resources/*.json).

Each record's wall_s is the stage's work inside its Python process (resources.measure), and its
startup_s the time from that process's start to the work: the interpreter, imports, CUDA start-up and
params. What the `dvc repro` took beyond both is DVC's: hashing deps and outputs, linking outputs into
the cache, the processes' exits, and the report stage (it reads metrics/resources, so it writes no
record there). DVC's share is split at the recorded stages' span (the first one's process start to the
last one's end): between them, and outside it (DVC's start, the report, and a stage stopped before its
record: a `dvc repro` cut short by a timeout leaves its last stage's time there, not between stages).
Prints a markdown table, then one JSON line.

usage: python tools/stage_table.py TOTAL_SECONDS [--resources metrics/resources]
(TOTAL_SECONDS: the `dvc repro` wall time, measured around it; see bench/h200_study.sh)
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
    # records from before startup_s existed leave their start-up in DVC's share
    startup_s = sum(r.get("startup_s", 0.0) for r in records)
    return {
        "repro_s": round(total_s, 1),
        "stages_s": round(stages_s, 1),
        "overhead_s": round(total_s - stages_s, 1),
        "overhead_share": round((total_s - stages_s) / total_s, 4),
        "startup_s": round(startup_s, 1),
        "dvc_s": round(total_s - stages_s - startup_s, 1),
        **span_split(records, stages_s, startup_s, total_s),
        "stages": {r["stage"]: r["wall_s"] for r in records},
    }


def span_split(records: list[dict], stages_s: float, startup_s: float, total_s: float) -> dict:
    """DVC's time between the recorded stages and outside their span, and the overhead share within it
    (all of the span that is not the stages' own work); {} for records without start times."""
    if not all("started_at" in r for r in records):
        return {}
    first = min(records, key=lambda r: r["started_at"])
    span = max(r["finished_at"] for r in records) - (first["started_at"] - first.get("startup_s", 0.0))
    return {
        "span_s": round(span, 1),
        "dvc_between_s": round(span - stages_s - startup_s, 1),
        "outside_span_s": round(total_s - span, 1),
        "overhead_share_in_span": round((span - stages_s) / span, 4),
    }


def markdown(records: list[dict], s: dict) -> str:
    total = s["repro_s"]
    lines = [
        "| stage | wall s | share | phases s | start-up s | tokens/s | peak GPU GiB (else RSS) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        phases = ", ".join(f"{k} {v}" for k, v in r.get("phases_s", {}).items())
        memory = r["peak_gpu_gib"] if r.get("peak_gpu_gib") is not None else f"{r['peak_rss_gib']} (RSS)"
        lines.append(
            f"| {r['stage']} | {r['wall_s']} | {r['wall_s'] / total:.1%} | {phases} | "
            f"{r.get('startup_s', '')} | {r.get('tokens_per_s', '')} | {memory} |"
        )
    lines += [
        f"| **stages together** | {s['stages_s']} | {s['stages_s'] / total:.1%} | | | | |",
        f"| **their start-up** (interpreter, imports, CUDA) | {s['startup_s']} | "
        f"{s['startup_s'] / total:.1%} | | | | |",
        f"| **DVC** (hashing, caching, exits) + report | {s['dvc_s']} | {s['dvc_s'] / total:.1%} | | | | |",
        f"| **`dvc repro`** | {total} | 100% | | | | |",
    ]
    if "span_s" in s:
        lines += [
            "",
            f"DVC between the recorded stages: {s['dvc_between_s']} s of their {s['span_s']} s span; "
            f"start-up and DVC are {s['overhead_share_in_span']:.1%} of it. Outside the span: "
            f"{s['outside_span_s']} s "
            "(DVC's start, the report, a stage stopped before its record).",
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
