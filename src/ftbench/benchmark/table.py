"""`ftbench bench`'s results as a markdown table, beside the stock recipe's figures, and the seed's plan
projected from the measured rates."""

from __future__ import annotations

import json

from ftbench.common import config
from ftbench.common.atomic import atomic_path
from ftbench.common.errors import UserError

SEED_PLAN_EXAMPLES = 52_000  # Alpaca's size: the seed's plan is projected at this scale
START, END = (
    "<!-- ftbench bench: start -->",
    "<!-- ftbench bench: end -->",
)


def seed_plan(results: list[dict], p: config.Params, mean_length: float) -> dict:
    """Wall time of the seed's plan at Alpaca scale, projected from the measured rates."""
    rate = {r["variant"]: r["tokens_per_s"] for r in results if "recipe" in r}  # params.yaml as it is
    gens = [r for r in results if "answers" in r]
    if not {"qlora", "galore"} <= set(rate) or not gens:
        return {}
    gen = min(gens, key=lambda r: r["seconds"] / r["answers"])
    epoch_tokens = SEED_PLAN_EXAMPLES * mean_length
    trained = {n: m for n, m in p.methods.items() if n in ("qlora", "galore", "hybrid")}
    parts = {f"train {n}": m.epochs * epoch_tokens / rate[m.recipe] for n, m in trained.items()}
    parts["evaluate"] = (len(trained) + 1) * gen["seconds"] * 2000 / gen["answers"]  # + the base model
    return {
        "examples": SEED_PLAN_EXAMPLES,
        "epoch_tokens": round(epoch_tokens),
        "seconds": {k: round(v) for k, v in parts.items()},
        "total_minutes": round(sum(parts.values()) / 60, 1),
    }


def markdown(results: list[dict], peer: list[dict], plan: dict, env: dict, setup: dict) -> str:
    stock = {"qlora": "qlora", "galore": "galore"}
    peer_by = {r["method"]: r for r in peer if "tokens_per_s" in r}
    versions = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("date", "device"))
    lines = [
        f"Measured {env['date']} on {env['device']}; {versions}.",
        "",
        f"Model: random weights of the {setup['shape']} shape. Data: `{setup['data']}` through the chat "
        f"template, sequences up to {setup['max_length']} tokens (data.max_length). {_step_sizes(results)} "
        "as `dvc repro` makes them (methods.*.batch_size x grad_accum, passes of its micro_batch_tokens).",
        "",
        "```",
        setup["command"] or "python -m ftbench bench ...",
        "```",
        "",
        "| variant | rows/step | tokens/s | MFU | NVML peak GiB | torch peak GiB | passes/step | "
        "stock tokens/s | stock NVML GiB | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "recipe" not in r:
            continue
        s = peer_by.get(stock.get(r["variant"].split(":")[0], ""), {})
        ratio = f"{r['tokens_per_s'] / s['tokens_per_s']:.1f}x" if s else ""
        lines.append(
            f"| {r['variant']} | {r['rows_per_step']:g} | {r['tokens_per_s']:,} | {r['mfu']} | "
            f"{r['nvml_peak_gib']} | {r['torch_peak_gib']} | {r['forward_passes_per_step']} | "
            f"{s.get('tokens_per_s', '')} | {s.get('nvml_peak_gib', '')} | {ratio} |"
        )
    for r in results:
        if "answers" in r:
            lines += [
                "",
                f"Generation ({r['variant']}): {r['answers']} greedy answers of at most "
                f"{r['max_new_tokens']} new tokens in {r['seconds']} s ({r['new_tokens_per_s']:,} new "
                f"tokens/s), NVML peak {r['nvml_peak_gib']} GiB.",
            ]
    if plan:
        lines += [
            "",
            f"Seed plan at Alpaca scale ({plan['examples']:,} examples, {plan['epoch_tokens']:,} tokens an "
            "epoch), "
            f"projected from these rates: {plan['total_minutes']} minutes "
            f"({', '.join(f'{k} {v} s' for k, v in plan['seconds'].items())}).",
        ]
    lines += ["", "Raw results, one JSON line per variant:", "", "```"]
    lines += [json.dumps(r) for r in [env, setup, *results, *peer]] + ["```", ""]
    return "\n".join(lines)


def _step_sizes(results: list[dict]) -> str:
    """'Optimizer steps of 16 rows, about 2,600 tokens (galore: 8 rows, about 1,300 tokens)': the first
    training variant's size, then each variant whose size differs."""
    sizes = [(r["variant"], r["rows_per_step"], r["tokens_per_step"]) for r in results if "recipe" in r]
    if not sizes:
        return "No training variant"
    _, rows, tokens = sizes[0]
    others = [f"{v}: {n:g} rows, about {t:,} tokens" for v, n, t in sizes[1:] if n != rows]
    return f"Optimizer steps of {rows:g} rows, about {tokens:,} tokens" + (
        f" ({'; '.join(others)})" if others else ""
    )


def write_markdown(lines: list[dict], args) -> None:
    """BENCHMARKS.md from the bench's JSON lines and, with --peer, peer_bench.py's."""
    if not args.markdown:
        raise UserError("bench: --rebuild needs --markdown FILE")
    peer_lines = args.peer.read_text().splitlines() if args.peer else []
    peer = [json.loads(x) for x in peer_lines if x.startswith('{"')]
    env = next(x["env"] for x in lines if "env" in x)
    setup = next(x["setup"] for x in lines if "setup" in x)
    plan = next((x["seed_plan"] for x in lines if "seed_plan" in x), {})
    results = [x for x in lines if "variant" in x]
    table = f"{START}\n{markdown(results, peer, plan, env, setup)}{END}\n"
    old = args.markdown.read_text() if args.markdown.exists() else ""
    if START in old and END in old:  # update the measured part, keep the prose around it
        table = old[: old.index(START)] + table + old[old.index(END) + len(END) + 1 :]
    with atomic_path(args.markdown) as tmp:
        tmp.write_text(table)
