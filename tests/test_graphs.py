"""train.cuda_graphs on the CPU: the fixed-shape passes a graph replays, and the training path through
them. Recording a graph needs CUDA; here the "graph" is the same decoder run eagerly (EagerGraphs), so
everything around the recording (padding, bucketing, the loss on the graphed output, which passes take
it) runs on the real recipe. The recording itself ran on the H200 (BENCHMARKS.md)."""

import pytest
import torch

from ftbench import packing
from ftbench.common import paths
from ftbench.common.atomic import read_jsonl
from ftbench.common.errors import UserError
from ftbench.loss import answer_loss, mean_loss
from ftbench.recipes import qlora
from ftbench.stages import train
from ftbench.training import graphs, loop

ROWS = [
    {"input_ids": [5, 6, 7, 8, 9], "prompt_len": 2},
    {"input_ids": [10, 11, 12], "prompt_len": 1},
]


class EagerGraphs(graphs.Graphs):
    """Graphs whose recorded pass is the same decoder run eagerly, on the same fixed-shape inputs."""

    def _record(self, static: packing.Static):
        body = graphs.Decoder(self.decoder, static.tokens)

        def run(batch: dict) -> torch.Tensor:
            return body(*graphs.inputs(batch))

        self.graphed[static.tokens] = run
        return run


def test_a_static_pass_is_the_packed_pass_followed_by_filler_rows():
    plain = packing.pack(ROWS, torch.device("cpu"))
    static = packing.pack(ROWS, torch.device("cpu"), packing.Static(tokens=16, rows=5))
    assert static["input_ids"].shape == (1, 16)
    assert static["input_ids"][0, :8].tolist() == plain["input_ids"][0].tolist()
    assert static["input_ids"][0, 8:].eq(packing.PAD_ID).all()
    # 3 filler rows, none empty; positions restart in each; no labels in them
    assert static["attention"]["cu_seq_lens_q"].tolist() == [0, 5, 8, 14, 15, 16]
    assert static["position_ids"][0, 8:].tolist() == [0, 1, 2, 3, 4, 5, 0, 0]
    assert torch.equal(static["scored"], plain["scored"]) and torch.equal(static["targets"], plain["targets"])
    assert static["attention"]["max_length_q"] == 16  # fixed for the graph, not the longest row
    with pytest.raises(ValueError, match="do not fit"):
        packing.pack(ROWS, torch.device("cpu"), packing.Static(tokens=9, rows=4))


def test_pass_shapes_round_up_to_the_bucket_with_room_for_the_filler_rows(prepared):
    model, _, _ = qlora.RECIPE.setup(paths.BASE, prepared.methods["qlora"], prepared, seed=0)
    g = graphs.Graphs(model, rows=17, bucket=512)
    assert g.shape(ROWS) == packing.Static(tokens=512, rows=17)
    # 500 tokens in one row leave 12 for 16 filler rows: the next bucket
    assert g.shape([{"input_ids": [1] * 500, "prompt_len": 1}]) == packing.Static(tokens=1024, rows=17)


def test_every_length_of_the_stage_is_recorded_at_its_first_pass_longest_first(prepared, monkeypatch):
    """The longest first, so the shorter ones fit in the pool blocks it leaves; only the first recording
    warms up (a later warm-up's activations would sit beside the pool's). The CUDA recording itself is
    replaced by a note of what was asked (no CUDA here)."""
    recorded = []

    def record(decoder, static, pool, warm_up):
        recorded.append((static.tokens, warm_up))
        return lambda batch: static.tokens

    monkeypatch.setattr(graphs, "Graph", record)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (1, 0))
    model, _, _ = qlora.RECIPE.setup(paths.BASE, prepared.methods["qlora"], prepared, seed=0)
    long_row = {"input_ids": [1] * 600, "prompt_len": 1}
    g = graphs.Graphs(model, rows=17, bucket=512, passes=[ROWS, [long_row], ROWS, [long_row, long_row]])
    assert recorded == []  # nothing before the first pass
    assert g(packing.pack(ROWS, torch.device("cpu"), g.shape(ROWS)), g.shape(ROWS)) == 512
    assert recorded == [(1536, True), (1024, False), (512, False)]
    g(packing.pack([long_row], torch.device("cpu"), g.shape([long_row])), g.shape([long_row]))
    assert len(recorded) == 3  # recorded once


def test_graphed_training_follows_the_eager_loss_curve_and_validates_eagerly(prepared):
    """QLoRA's first steps through fixed-shape passes give the eager curve: the filler rows reach no
    real row's attention and no loss. Validation (eval mode, no gradients) takes no graph."""
    method = prepared.methods["qlora"]
    method = method.model_copy(update={"lr": 1e-2, "lora": method.lora.model_copy(update={"dropout": 0.0})})
    p = prepared.model_copy(update={"train": prepared.train.model_copy(update={"max_steps": 3})})
    rows = read_jsonl(paths.split_file("builtin", "train"))
    steps = loop.optimizer_steps(rows, method, p, seed=0)
    curves, validation = [], []
    for graphed in (True, False):
        model, optimizer, _ = qlora.RECIPE.setup(paths.BASE, method, p, seed=0)
        rows_per_pass = method.batch_size * method.grad_accum + 1
        passes = loop.Passes(graphs=EagerGraphs(model, rows_per_pass, 64) if graphed else None)
        trainable = [t for g in optimizer.param_groups for t in g["params"]]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        model.train()
        fit = [
            loop.train_step(qlora.RECIPE, model, optimizer, scheduler, trainable, s, p, passes) for s in steps
        ]
        curves.append([m["loss"] for m in fit])
        validation.append(mean_loss(model, rows[:8]))
        if graphed:
            # the gradients stay allocated between steps: a recorded backward adds into them
            assert all(t.grad is not None and not t.grad.any() for t in trainable)
            lengths = graphs.lengths(passes.graphs)
            assert lengths and all(n % 64 == 0 for n in lengths)
            with torch.no_grad():
                answer_loss(model, rows[:2], passes=passes)
            assert graphs.lengths(passes.graphs) == lengths  # no new shape: the no-grad pass ran eagerly
    assert curves[0][-1] != curves[0][0]  # it learned
    torch.testing.assert_close(curves[0], curves[1], rtol=1e-4, atol=1e-5)
    assert validation[0] == pytest.approx(validation[1], rel=1e-4)


def test_a_graphed_stage_records_its_lengths_then_drops_the_graphs_before_validating(
    prepared, st, monkeypatch
):
    """The train stage with the recording stood in for (EagerGraphs): its record names the lengths, and
    validation runs after the graphs are gone (no graph, no gradient held for it)."""
    seen = {}

    def record(model, method, p, steps):
        passes = [rows for step in steps for rows in step]
        seen["model"] = model
        return EagerGraphs(model, method.batch_size * method.grad_accum + 1, 64, passes)

    def validate(model, rows, *args):
        seen["graphed at validation"] = any(t.grad is not None for t in model.parameters())
        return mean_loss(model, rows, *args)

    monkeypatch.setattr(graphs, "record", record)
    monkeypatch.setattr(train, "mean_loss", validate)
    result = train.run("qlora", prepared, st)["builtin/seed0"]
    assert result["cuda_graphs"] and result["graph_lengths"] and seen["graphed at validation"] is False
    assert all(t.grad is None for t in seen["model"].parameters())


def test_cuda_graphs_have_no_effect_without_a_gpu(prepared):
    p = prepared.model_copy(update={"train": prepared.train.model_copy(update={"cuda_graphs": True})})
    model, _, _ = qlora.RECIPE.setup(paths.BASE, p.methods["qlora"], p, seed=0)
    assert not torch.cuda.is_available()
    assert graphs.record(model, p.methods["qlora"], p, []) is None


def test_a_pass_that_cannot_be_recorded_is_one_line_naming_the_setting(prepared):
    """Here no CUDA can record at all; on a GPU an op that waits for it fails the same way."""
    model, _, _ = qlora.RECIPE.setup(paths.BASE, prepared.methods["qlora"], prepared, seed=0)
    with pytest.raises(
        UserError, match=r"^train.cuda_graphs: recording a 512-token pass failed \(.+\); set"
    ) as err:
        graphs.Graphs(model, rows=17, bucket=512)._record(packing.Static(tokens=512, rows=17))
    assert "\n" not in str(err.value)
