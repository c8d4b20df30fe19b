"""`train.cuda_graphs`: the decoder's forward and backward of each training pass replayed as CUDA graphs.

At the seed's batch a step is a few thousand small kernels launched one by one from Python (the 4-bit
linears with their adapters most of them), and the GPU was busy 15% of a QLoRA stage (BENCHMARKS.md):
the host, not the GPU, bounds it. A CUDA graph replays a recorded pass with one launch. It needs fixed
shapes, so each pass is padded (packing.Static) to a multiple of `train.graph_bucket_tokens` tokens and
to a fixed number of rows, and each padded length gets its own graph. The graphs share one memory pool
(why they are recorded here and not by `make_graphed_callables`: Graph); every length the stage will
run is recorded at its first pass, the longest first, so the shorter ones fit in the blocks it leaves
(recorded shortest first, each longer one needed blocks of its own). The output layer and the loss stay
eager: the answer positions they read change from pass to pass.

Only the decoder is graphed: every trainable weight is in it, and its input is the packed row alone.
Validation and test passes (eval mode, no gradients) run eagerly.
"""

from __future__ import annotations

import functools
import math

import torch

from ftbench import packing
from ftbench.common import config, distributed
from ftbench.common.errors import UserError
from ftbench.common.progress import LOG
from ftbench.packing import causal_lm

WARM_UP_PASSES = 2


class Decoder(torch.nn.Module):
    """The decoder as a recording takes it: a packed pass's tensors (`inputs`) in, hidden states out.
    `tokens` is the pass length the attention kernel is launched for (a graph fixes it)."""

    def __init__(self, decoder: torch.nn.Module, tokens: int) -> None:
        super().__init__()
        self.decoder, self.tokens = decoder, tokens

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
        return self.decoder(
            input_ids=ids,
            position_ids=positions,
            use_cache=False,
            cu_seq_lens_q=bounds,
            cu_seq_lens_k=bounds,
            max_length_q=self.tokens,
            max_length_k=self.tokens,
        ).last_hidden_state


class Graph:
    """One pass length's decoder forward and backward, recorded once and replayed.

    Not `torch.cuda.make_graphed_callables`: it returns each weight's gradient from a buffer of the
    graph's own, which autograd then adds into `.grad`, so every recorded length holds a copy of every
    gradient (2.8 GB of fp32 per length for GaLore on 1B; measured 28 GiB with two lengths on the
    H200). Here the recorded backward adds into the weights' `.grad` itself, which training therefore
    keeps allocated (zeroed, not freed: training.loop.train_step): one gradient, however many lengths.
    """

    def __init__(self, decoder: torch.nn.Module, static: packing.Static, pool, warm_up: bool) -> None:
        sample = packing.pack([], decoder.embed_tokens.weight.device, static)  # filler rows only
        self.inputs = inputs(sample)
        body = Decoder(decoder, static.tokens)
        # no autocast cache: a recorded cast would point at a cache entry freed after the step
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            if warm_up:
                _warm_up(body, self.inputs)
            self.forward, self.backward = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.forward, pool=pool):
                hidden = body(*self.inputs)
            self.grad = torch.zeros_like(hidden)
            with torch.cuda.graph(self.backward, pool=pool):
                hidden.backward(self.grad)
        self.hidden = hidden.detach()

    def __call__(self, batch: dict) -> torch.Tensor:
        for static, given in zip(self.inputs, inputs(batch), strict=True):
            static.copy_(given)
        return _Replay.apply(self, _anchor(self.hidden.device))


def _warm_up(body: Decoder, inputs: tuple) -> None:
    """Passes before the first recording, on a side stream as PyTorch's CUDA-graph notes ask: lazy
    initialisation (cuBLAS workspaces, Triton's first launch) must not be recorded. Later lengths need
    none: a warm-up then would hold its activations beside the pool's, the peak twice over. Their output
    gradient is zero, so the gradients they add are zeros. Their activations are handed back to the
    device afterwards: the recorded passes keep theirs in the graphs' own pool, and a second, cached copy
    of them outside it would only raise the peak."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(WARM_UP_PASSES):
            hidden = body(*inputs)
            hidden.backward(torch.zeros_like(hidden))
            del hidden
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


class _Replay(torch.autograd.Function):
    """A recorded pass inside autograd: forward replays the forward graph; backward takes the loss's
    gradient of the hidden states and replays the backward graph, which adds into the weights' `.grad`."""

    @staticmethod
    def forward(ctx, graph: Graph, anchor: torch.Tensor) -> torch.Tensor:
        ctx.graph = graph
        graph.forward.replay()
        return graph.hidden.detach()  # a new alias each pass: autograd marks it, not the buffer

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.graph.grad.copy_(grad)
        ctx.graph.backward.replay()
        return None, None


def inputs(batch: dict) -> tuple[torch.Tensor, ...]:
    """A packed pass's tensors in Decoder's order."""
    return batch["input_ids"], batch["position_ids"], batch["attention"]["cu_seq_lens_q"]


@functools.cache
def _anchor(device: torch.device) -> torch.Tensor:
    """A leaf that requires grad: autograd calls a Function's backward only when an input needs a
    gradient, and a replay's real inputs are the graph's own buffers."""
    return torch.zeros((), device=device, requires_grad=True)


class Graphs:
    """A model's graphed decoder, one recorded graph per padded pass length (sharing one memory pool).
    `passes`: the training passes to come, whose lengths are all recorded at the first, longest first."""

    def __init__(self, model, rows: int, bucket: int, passes: list[list[dict]] = ()) -> None:
        self.decoder = causal_lm(model).model
        self.rows, self.bucket = rows, bucket
        self.pool = None  # the first recording's memory pool, which later ones share
        self.graphed: dict[int, Graph] = {}
        self.pending = sorted({self.shape(rows).tokens for rows in passes}, reverse=True)
        for t in model.parameters():  # the fixed gradient buffers the recorded backward adds into
            if t.requires_grad and t.grad is None:
                t.grad = torch.zeros_like(t)

    def shape(self, rows: list[dict]) -> packing.Static:
        """The pass shape for `rows`: room for every filler row, rounded up to the bucket."""
        need = sum(len(r["input_ids"]) for r in rows) + self.rows - len(rows)
        return packing.Static(tokens=math.ceil(need / self.bucket) * self.bucket, rows=self.rows)

    def __call__(self, batch: dict, static: packing.Static) -> torch.Tensor:
        for tokens in self.pending:
            self._record(packing.Static(tokens=tokens, rows=self.rows))
        self.pending = []
        return (self.graphed.get(static.tokens) or self._record(static))(batch)

    def _record(self, static: packing.Static):
        try:
            self.pool = self.pool or torch.cuda.graph_pool_handle()
            self.graphed[static.tokens] = Graph(self.decoder, static, self.pool, warm_up=not self.graphed)
        except RuntimeError as err:  # an op that cannot be recorded (one that waits for the GPU, say)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"train.cuda_graphs: recording a {static.tokens}-token pass failed ({first}); "
                "set train.cuda_graphs: false to train eagerly"
            ) from err
        return self.graphed[static.tokens]


def record(
    model, method: config.MethodParams, p: config.Params, steps: list[list[list[dict]]]
) -> Graphs | None:
    """Graphs for `model`'s training passes (`steps`: optimizer steps of packed passes) if `train.cuda_graphs`
    asks, on one GPU: the CPU has nothing to graph, and several data-parallel ranks all-reduce from DDP's
    gradient hooks, which a recorded backward would not run. None where it does not graph."""
    if not (p.train.cuda_graphs and torch.cuda.is_available()):
        return None
    if distributed.world_size() > 1:
        LOG.info("train.cuda_graphs: not used with several GPUs (DDP all-reduces from its hooks)")
        return None
    # a pass holds at most a step's rows, and at least one filler row
    passes = [rows for step in steps for rows in step]
    rows = method.batch_size * method.grad_accum + 1
    return Graphs(model, rows, p.train.graph_bucket_tokens, passes)


def release(model) -> None:
    """After the graphs are dropped: the gradients they added into go too. The passes after training
    (validation, a merge's check) run eagerly, and the graphs' pool and an fp32 gradient (2.8 GB for
    GaLore on 1B) would only sit beside theirs."""
    for t in model.parameters():
        t.grad = None
    torch.cuda.empty_cache()


def pool_bytes() -> int:
    """Device memory the graphs' pools hold (segments outside the eager allocator's own pool), for the
    bench's memory breakdown."""
    segments = torch.cuda.memory_snapshot() if torch.cuda.is_available() else []
    return sum(s["total_size"] for s in segments if tuple(s.get("segment_pool_id", (0, 0))) != (0, 0))


def lengths(graphs: Graphs | None) -> list[int]:
    """The pass lengths there are graphs for (the train record)."""
    return sorted(graphs.graphed) if graphs else []
