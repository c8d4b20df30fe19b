"""The Resources section: every stage's record, each model's cost over its chain of stages, and each
ensemble's inference beside its members'."""

from __future__ import annotations

from collections.abc import Mapping

from ftbench.common import config
from ftbench.report.cells import fmt
from ftbench.report.costs import cost_stages
from ftbench.report.render import Section, Table


def resources_section(p: config.Params, resources: dict, costs: dict[str, dict]) -> Section:
    stage_rows = [
        [
            r["stage"],
            fmt(r["wall_s"], 1),
            fmt(r.get("cpu_s"), 1),
            fmt(r["peak_rss_gib"]),
            fmt(r["peak_gpu_gib"]),
            fmt(r.get("torch_peak_allocated_gib")),
            f"{r.get('tokens', 0):,}",
            fmt(r.get("tokens_per_s"), 0),
            r.get("device", "-"),
        ]
        for r in resources.values()
    ]
    model_rows = [
        [
            name,
            " + ".join(cost_stages(name, p)),
            fmt(c["wall_s"], 1),
            fmt(c["peak_gpu_gib"]),
            fmt(c["peak_rss_gib"]),
            f"{c['tokens_trained']:,.0f}",
            f"{c['tokens_generated']:,.0f}",
        ]
        for name, c in costs.items()
    ]
    return "Resources", [
        "Per stage (peak GPU: NVML device memory above the stage's starting baseline):",
        Table(
            [
                "stage",
                "wall s",
                "CPU s",
                "peak RSS GiB",
                "peak GPU GiB",
                "torch peak GiB",
                "tokens",
                "tokens/s",
                "device",
            ],
            stage_rows,
        ),
        "Per model and run: summed over the stages that built it and its evaluation, divided by its runs "
        "(peaks: the largest of its stages; on a GPU, of its training and its evaluation's model as loaded, "
        "not generation's, whose calls evaluate.batch_size: auto sizes to the free memory; the model stage, "
        "shared by every model, is not counted; "
        "tokens generated: its answers re-tokenized with the base tokenizer, stop token not counted):",
        Table(
            [
                "model",
                "stages",
                "wall s per run",
                "peak GPU GiB",
                "peak RSS GiB",
                "tokens trained per run",
                "tokens generated per run",
            ],
            model_rows,
        ),
        *inference_lines(p.ensembles, resources),
    ]


def inference_lines(ensembles: Mapping[str, config.EnsembleParams], resources: dict) -> list[str]:
    """Per ensemble, its evaluation's time and memory next to its members' own evaluations: the seed
    names "inference time 2x, memory 2x" as the ensemble's cost."""

    def measured(stage: str) -> str:
        r = resources[stage]
        memory = f"peak RSS {fmt(r['peak_rss_gib'])} GiB, peak GPU {fmt(r['peak_gpu_gib'])} GiB"
        return f"{stage} {fmt(r['wall_s'], 1)} s, {memory}"

    return [
        f"Inference, {name} ({' + '.join(e.members)}): {measured(f'evaluate-{name}')}; its members alone: "
        + "; ".join(measured(f"evaluate-{m}") for m in dict.fromkeys(e.members))
        + "."
        for name, e in ensembles.items()
    ]
