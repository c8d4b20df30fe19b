"""Ensemble stage: the seed's alternative 1, two trained models answering as one at inference time.

Both members decode one shared answer in lockstep (ftbench.evaluation.lockstep), each with its own KV
cache: an ensemble holds both models and both caches, and runs two forward passes per token (the seed's
"inference time 2x, memory 2x", which its resource record measures). Loading, prompts, batching, stop
tokens, scoring and the written files are the evaluate stage's; only the decoder differs.
"""

from __future__ import annotations

from ftbench.common import config, paths, tracking
from ftbench.common.progress import LOG
from ftbench.evaluation.generate import generate, generation_prompts
from ftbench.evaluation.lockstep import Lockstep
from ftbench.evaluation.score import scored_run, summarize
from ftbench.loading import load_tokenizer
from ftbench.stages import evaluate


def ensemble_run(name: str, run: config.Run, p: config.Params, tokenizer, record) -> dict:
    """One dataset and seed: each member's model of that run, decoding together."""
    ensemble = p.ensembles[name]
    LOG.info(f"evaluate {name} ({' + '.join(ensemble.members)}) on {run.key}")
    rows = paths.split_rows(run.dataset, "test")
    loaded = [evaluate.model_for_eval(m, run, p, rows, record) for m in ensemble.members]
    decoder = Lockstep([model for model, _ in loaded], ensemble.normalized_weights(), ensemble.average)
    with record.phase("generate"):
        predictions = generate(decoder, tokenizer, generation_prompts(rows), p)
    checks = {m: facts["continuity"] for m, (_, facts) in zip(ensemble.members, loaded, strict=True) if facts}
    return scored_run(name, run, rows, predictions, p, record, {"continuity": checks} if checks else {})


def run(name: str, p: config.Params, st: tracking.StageRun) -> dict:
    ensemble = p.ensembles[name]
    tokenizer = load_tokenizer(paths.BASE)
    runs = {r.key: ensemble_run(name, r, p, tokenizer, st.record) for r in p.runs(name)}
    forms = {m: form for m in ensemble.members if (form := evaluate.scored_form(m, p))}
    details = {
        "members": ensemble.members,
        "weights": ensemble.normalized_weights(),
        "average": ensemble.average,
        **({"member_forms": forms} if forms else {}),
    }
    return summarize(name, p, runs, details)


def main(argv: list[str]) -> None:
    evaluate.evaluation_stage("ensemble", run, argv)
