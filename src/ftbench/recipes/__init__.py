"""Training methods as plug-in recipes: one module each in this package, named by params.yaml's
`methods.<name>.recipe`, whose `RECIPE` implements `Recipe`.

train, evaluate, merge, checkpoint and bench ask `get(name)` for a method's recipe and never name one,
so a new recipe is its module, its params.yaml entry (with its settings class in config.py's union of
method blocks) and its test. `get` imports only the recipe asked for: the train stage of a method runs
(and dvc.yaml lists as a dep) its own recipe's module and no other.

A recipe module may import this package and the modules every train stage runs anyway (config,
loading, loss, distributed, resources, errors), no other recipe: dvc.yaml names one recipe module per
method (`src/ftbench/recipes/${item.recipe}.py`). Building blocks two recipes share live here.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import torch
from galore_torch import GaLoreAdamW
from galore_torch.galore_projector import GaLoreProjector
from peft import LoraConfig, PeftModel, get_peft_model

from ftbench import config, distributed, resources
from ftbench.errors import UserError
from ftbench.loading import compute_dtype, load_model


def get(name: str) -> Recipe:
    """The recipe params.yaml's `recipe: <name>` names (config's union admits only existing ones)."""
    return importlib.import_module(f"{__name__}.{name}").RECIPE


class Recipe(Protocol):
    """What the stages need from a training method. Subclass it to inherit the defaults, which suit a
    model trained and saved whole with a stock torch optimizer."""

    weight_gradients: bool = True
    """Every weight matrix gets a gradient: training FLOPs count 6 per weight and token, not 4."""
    nf4_adapter: bool = False
    """The model is a LoRA adapter on the NF4 base: evaluate.qlora_form applies, and merge can fold it."""

    def setup(self, init: Path, method: config.MethodParams, p: config.Params, seed: int) -> tuple:
        """(model, optimizer, facts for metrics/train: what was trained, e.g. projected parameters)."""
        ...

    def save(self, model, out: Path, tokenizer) -> None:
        """Write what evaluation (load_trained) and later stages read: here the whole model, in the
        compute dtype (bf16 on a GPU halves the write and DVC's hashing; fp32 masters matter to training
        only), with the tokenizer."""
        model.to(compute_dtype())
        tokenizer.save_pretrained(out)
        model.save_pretrained(out, safe_serialization=True)

    def to_save(self, model, trained_loss: float | None, score: Callable[[Any], float]) -> tuple[Any, dict]:
        """The model save() writes, from the trained one, and facts for metrics/train; a recipe that
        changes its form (a merge) checks with `score(m)`, m's loss on the check rows, that it did not
        change what it computes: that the new form's loss is the trained model's, `trained_loss` (train
        computed it once, as validation; None without validation rows: then score(model), before the
        change)."""
        return model, {}

    def load_trained(self, base: Path, folder: Path):
        """The trained model as evaluation scores it, from what save() wrote to `folder`."""
        return load_model(folder, compute_dtype())

    def scored_form(self, p: config.Params) -> str | None:
        """The form load_trained gives, for metrics/eval and the report's conventions; None for a model
        scored as saved."""
        return None

    def clip(self, optimizer, trainable: list[torch.Tensor], max_norm: float) -> float:
        """Clip what optimizer.step() will use to `max_norm`; returns the norm before clipping."""
        return torch.nn.utils.clip_grad_norm_(trainable, max_norm).item()

    def before_backward(self, optimizer, last: bool) -> None:
        """Called before each backward pass of a step; `last` for the step's final one."""

    def check_first_step(self, optimizer) -> None:
        """Raise if the first optimizer step shows the method did not apply (e.g. nothing projected)."""

    def optimizer_state(self, optimizer) -> dict:
        """The optimizer's state as tensors and plain data, for a checkpoint loaded with weights_only."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def facts_after(self, optimizer) -> dict:
        """Facts for metrics/train known only after training (e.g. time spent refreshing projections)."""
        return {}

    def periodic_cost(self, optimizer, method: config.MethodParams) -> tuple[float, int] | None:
        """(seconds spent so far on work done once every `gap` steps, gap), for bench to amortise."""
        return None


def adamw(params: list[torch.Tensor], lr: float, p: config.Params) -> torch.optim.AdamW:
    """torch's AdamW at `lr` with train.* betas, eps and weight decay."""
    return torch.optim.AdamW(
        params,
        lr=lr,
        betas=p.train.betas,
        eps=p.train.eps,
        weight_decay=p.train.weight_decay,
        fused=torch.cuda.is_available(),  # one kernel for all tensors instead of one per tensor
    )


def checkpoint_activations(model, p: config.Params, frozen_input: bool) -> None:
    """train.gradient_checkpointing. With a frozen embedding (`frozen_input`) the layers' inputs need
    requires_grad, or the checkpointed layers would get no gradient."""
    if p.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if frozen_input:
            model.enable_input_require_grads()


def add_adapters(model, lora: config.LoraParams, seed: int):
    """peft's LoRA adapters, initialised from `seed`, on every linear layer but the output head; peft
    freezes every other parameter. Adapters are fp32 over a bf16 base (autocast_adapter_dtype)."""
    torch.manual_seed(seed)
    settings = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, settings)


class AdapterRecipe(Recipe):
    """LoRA adapters (peft) on every linear layer but the output head of a frozen base that `base` loads;
    only the adapter is saved; load_trained puts it back on the same base (a recipe may merge it there)."""

    weight_gradients = False  # the frozen base's weights get none (the adapters' are negligible)

    def base(self, path: Path):
        """The frozen base model the adapter trains on."""
        raise NotImplementedError

    def setup(self, init: Path, method: config.MethodParams, p: config.Params, seed: int) -> tuple:
        model = self.base(init)
        # peft's prepare_model_for_kbit_training would also upcast the 262k-token embedding to fp32
        # (1.2 GB on Gemma-3-1B) for no gain: the base is frozen, so only checkpointing needs input grads.
        checkpoint_activations(model, p, frozen_input=True)
        model = add_adapters(model, method.lora, seed)
        trainable = [t for t in model.parameters() if t.requires_grad]
        return model, adamw(trainable, method.lr, p), {"trainable_params": sum(t.numel() for t in trainable)}

    def save(self, model, out: Path, tokenizer) -> None:
        model.save_pretrained(out, safe_serialization=True)  # the adapter alone

    def load_trained(self, base: Path, folder: Path):
        return PeftModel.from_pretrained(self.base(base), folder)


# ---------------------------------------------------------------- GaLore
# The GaLore optimizer (galore.py's recipe, the docstring there explains `layerwise` and `accumulation`)
# and lora_galore.py's base matrices share these.

PROJECTED_MODULES = ("self_attn", "mlp")
PROJECTOR_KEYS = ("rank", "update_proj_gap", "scale", "proj_type", "svd")
LOWRANK_OVERSAMPLE = 8  # extra columns for torch.svd_lowrank: rank 128 is found to ~1e-3 of full SVD
# The batched update works through a group's tensors in chunks of this many low-rank (Adam state)
# elements: its temporaries (projected gradients, Adam's denominator and update) stay under 0.1 GB, where
# all at once they would be 3 x 0.34 GB on Gemma-3-1B, at the step's memory peak (weights, gradients and
# the graphs' pool all held); 10 chunks a step still replace ~2,200 launches with ~70.
UPDATE_CHUNK_ELEMENTS = 8 * 2**20


def galore_base(init: Path, g: config.GaloreParams, p: config.Params):
    """The model GaLore trains: fp32 master weights (bf16 autocast on the GPU), the embedding trained
    or not as `g.train_embedding` says."""
    if g.layerwise and distributed.world_size() > 1:
        raise UserError(
            "galore.layerwise: true needs one process (each rank would project its own gradient with its "
            "own basis); set methods.*.galore.layerwise: false to train on several GPUs"
        )
    model = load_model(init, dtype=torch.float32)
    embedding = model.get_input_embeddings().weight
    embedding.requires_grad_(g.train_embedding)
    if not g.train_embedding:
        # A frozen embedding needs no fp32 master copy; the output layer multiplies in bf16 anyway
        # (0.6 GB less on Gemma-3-1B, and no per-step cast of the 262k x hidden matrix).
        embedding.data = embedding.data.to(compute_dtype())
    checkpoint_activations(model, p, frozen_input=not g.train_embedding)
    return model


def galore_optimizer(projected: list, plain: list, lr: float, g: config.GaloreParams, p: config.Params):
    """BatchedGaLoreAdamW (layerwise: AccumulatingGaLoreAdamW) at `lr`: the `projected` (name, tensor) pairs
    through GaLore, the `plain` ones with its plain AdamW group; ftbench's Projector on each matrix."""
    groups = [
        {"params": [t for _, t in plain]},
        {
            "params": [t for _, t in projected],
            "rank": g.rank,
            "update_proj_gap": g.update_proj_gap,
            "scale": g.scale,
            "proj_type": g.proj_type,
            "refresh_streams": g.refresh_streams,
        },
    ]
    kind, options = (BatchedGaLoreAdamW, {})
    if g.layerwise:
        kind, options = AccumulatingGaLoreAdamW, {"accumulation": g.accumulation}
    optimizer = kind(
        groups,
        **options,
        lr=lr,
        betas=p.train.betas,
        eps=p.train.eps,
        weight_decay=p.train.weight_decay,
        no_deprecation_warning=True,
    )
    for _, t in projected:  # GaLoreAdamW builds a stock projector only where none is set
        optimizer.state[t]["projector"] = Projector(g.rank, g.update_proj_gap, g.scale, g.proj_type, g.svd)
    return optimizer


def mark_pass(optimizer, last: bool) -> None:
    """Before a backward pass: tell a layerwise GaLore optimizer whether it is the step's last."""
    if isinstance(optimizer, AccumulatingGaLoreAdamW):
        optimizer.last_pass = last


class GaloreHooks(Recipe):
    """The training-loop hooks of a recipe whose optimizer is, or holds, a GaLore optimizer."""

    def galore_part(self, optimizer) -> GaLoreAdamW:
        """The GaLore optimizer within the recipe's optimizer."""
        return optimizer

    def clip(self, optimizer, trainable: list[torch.Tensor], max_norm: float) -> float:
        """A layerwise GaLore holds projected gradients and the full ones' norms, so it clips them, with
        the trainable gradients it does not hold (a joint optimizer's adapters), by the norm of all of
        them (`galore.accumulation: full`: the full gradient's); any other GaLore, as every recipe."""
        galore = self.galore_part(optimizer)
        if not isinstance(galore, AccumulatingGaLoreAdamW):
            return super().clip(optimizer, trainable, max_norm)
        held = {id(t) for g in galore.param_groups for t in g["params"]}
        also = [t.grad for t in trainable if id(t) not in held and t.grad is not None]
        return galore.clip(max_norm, also=also).item()

    def before_backward(self, optimizer, last: bool) -> None:
        mark_pass(self.galore_part(optimizer), last)

    def check_first_step(self, optimizer) -> None:
        check_projected(self.galore_part(optimizer))

    def facts_after(self, optimizer) -> dict:
        return {"svd_s": round(svd_seconds(self.galore_part(optimizer)), 2)}

    def periodic_cost(self, optimizer, method: config.MethodParams) -> tuple[float, int]:
        return svd_seconds(self.galore_part(optimizer)), method.galore.update_proj_gap


class Projector(GaLoreProjector):
    """galore-torch's projector with a choice of SVD, a timer, and projection without a refresh.

    `svd="lowrank"` replaces the full `torch.linalg.svd` of each refresh with randomized
    `torch.svd_lowrank`, which only finds the `rank` directions GaLore keeps. `svd="gram"` finds the
    same singular vectors as the full SVD from the smaller Gram matrix (_gram_basis).
    """

    def __init__(self, rank: int, update_proj_gap: int, scale: float, proj_type: str, svd: str = "full"):
        super().__init__(rank, update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type)
        self.svd = svd
        self.svd_s = 0.0  # time spent in SVDs (synchronised on the GPU)
        self._refresh = True
        self._timed = True
        self.refreshed_at: int | None = None  # the step whose basis refresh() computed ahead of it

    def due(self, iter: int) -> bool:
        """Whether project() refreshes the basis at step `iter` (galore-torch's test)."""
        return self.ortho_matrix is None or iter % self.update_proj_gap == 0

    def refresh(self, full_rank_grad: torch.Tensor, iter: int) -> None:
        """Compute the basis the step `iter` refreshes to, ahead of its project() call, untimed (its
        caller times all refreshes at once: a device sync here would serialise refreshes run side by
        side)."""
        self._refresh, self._timed = True, False
        super().project(full_rank_grad, iter)  # sets ortho_matrix; the projection itself is not kept
        self._timed, self.refreshed_at = True, iter

    def project(self, full_rank_grad: torch.Tensor, iter: int, refresh: bool = True) -> torch.Tensor:
        """GaLore's projection; `refresh=False` keeps the current basis even on a refresh step, as does
        a refresh already computed for this step."""
        self._refresh = refresh and iter != self.refreshed_at
        return super().project(full_rank_grad, iter)

    def get_orthogonal_matrix(self, weights, rank, type):
        if not self._refresh and self.ortho_matrix is not None:
            return self.ortho_matrix
        t0 = resources.synced_clock() if self._timed else 0.0
        if self.svd == "full":
            basis = super().get_orthogonal_matrix(weights, rank, type)
        elif self.svd == "gram":
            basis = _gram_basis(weights, rank, type)
        else:
            basis = _lowrank_basis(weights, rank, type)
        if self._timed:
            self.svd_s += resources.synced_clock() - t0
        return basis


def refresh_bases(
    projectors: list[Projector], grads: list[torch.Tensor], steps: list[int], streams: int
) -> None:
    """Compute every basis due at this step before the step projects, in `streams` threads side by side,
    each on a CUDA stream of its own on a GPU: the same calls on the same gradients as one after another,
    so the same bases. A refresh is one SVD per projected matrix (182 on Gemma-3-1B), each too small to
    fill an H200: one after another 8.8 s, on 8 streams 3.5 s (bitwise the same bases; 16: 3.3 s). Their
    time is shared out over the refreshed projectors. With one stream, on the CPU (_side_by_side) and for
    `svd: lowrank` (its fixed seed forks the global RNG, which threads would race for), project()
    refreshes each in turn on the training stream, as galore-torch does."""
    due = [(pr, g, t) for pr, g, t in zip(projectors, grads, steps, strict=True) if pr.due(t)]
    if not due or streams == 1 or due[0][0].svd == "lowrank" or not _side_by_side():
        return
    t0 = resources.synced_clock()
    main = torch.cuda.current_stream() if torch.cuda.is_available() else None
    sides = _side_streams(streams) if main else [None] * streams
    if main:
        # the side streams cannot use the blocks the training stream holds cached (its freed temporaries):
        # hand those back first, so that the SVDs' workspaces take their place instead of adding to them
        torch.cuda.empty_cache()

    def refresh(k: int) -> None:
        if main:
            # the gradients are the main stream's; the main stream waits for the bases below. A basis
            # replaced here is freed to this stream after the main stream's last use of it (the wait).
            sides[k].wait_stream(main)
        with torch.cuda.stream(sides[k]):  # None: no stream (the CPU)
            for projector, grad, step in due[k::streams]:
                projector.refresh(grad, step)

    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(refresh, range(streams)))
    if main:
        for side in sides:
            main.wait_stream(side)
        # what the SVDs left cached on the side streams, no other stream can use: hand it back, so that
        # it does not stay beside the training's memory (on the H200 GaLore's stage peak was 26.2 GiB
        # NVML with new streams each refresh and their caches kept, 20.2 with this, 17.0 with refreshes
        # one after another)
        torch.cuda.empty_cache()
    seconds = resources.synced_clock() - t0
    for projector, _, _ in due:
        projector.svd_s += seconds / len(due)


def _side_by_side() -> bool:
    """Refreshes side by side on a GPU only: on the CPU LAPACK already uses every core, and threads made
    a refresh of Gemma 3 270M's matrices 1.7x (8 threads) to 3.3x (2) slower on 2 cores."""
    return torch.cuda.is_available()


@functools.cache
def _side_streams(n: int) -> list[torch.cuda.Stream]:
    """The refreshes' side streams, made once: a new stream each refresh would leave its cache behind."""
    return [torch.cuda.Stream() for _ in range(n)]


def _lowrank_basis(weights: torch.Tensor, rank: int, type: str):
    """The same bases as GaLoreProjector.get_orthogonal_matrix, from a randomized SVD."""
    q = min(rank + LOWRANK_OVERSAMPLE, *weights.shape)
    # A fixed seed for the random test matrix, outside the training RNG stream: every data-parallel rank
    # must find the same basis, and dropout must not depend on when refreshes happen.
    with torch.random.fork_rng(devices=[weights.device] if weights.is_cuda else []):
        torch.manual_seed(0)
        u, _, v = torch.svd_lowrank(weights.float(), q=q, niter=2)
    left, right = u[:, :rank].to(weights.dtype), v[:, :rank].T.contiguous().to(weights.dtype)
    return {"left": left, "right": right, "full": [left, right]}[type]


def _gram_basis(weights: torch.Tensor, rank: int, type: str):
    """GaLoreProjector.get_orthogonal_matrix's bases from an eigendecomposition of the smaller Gram
    matrix (G Gᵀ for a wide G, Gᵀ G for a tall one): its eigenvectors are G's singular vectors on that
    side, its eigenvalues their squared singular values. The same subspace as the full SVD (up to each
    vector's sign) without the SVD of the whole matrix: a 1152 x 6912 gradient needs a 1152 x 1152
    symmetric eigensolve and one matmul. GaLore's `std` projection always keeps the smaller side, so
    the other side (`full`, or `left` of a tall matrix) costs one more matmul, divided by the values."""
    g = weights.float()
    wide = g.shape[0] <= g.shape[1]
    values, vectors = torch.linalg.eigh(g @ g.T if wide else g.T @ g)  # ascending
    kept = min(rank, vectors.shape[1])
    top = vectors[:, -kept:].flip(1)  # largest first, as the SVD orders them
    values = values[-kept:].flip(0).clamp_min(torch.finfo(g.dtype).tiny).sqrt()

    def left():
        return top if wide else g @ top / values

    def right():
        return (top.T @ g) / values[:, None] if wide else top.T.contiguous()

    sides = {"left": left, "right": right, "full": lambda: [left(), right()]}
    basis = sides[type]()
    return [b.to(weights.dtype) for b in basis] if type == "full" else basis.to(weights.dtype)


class BatchedGaLoreAdamW(GaLoreAdamW):
    """galore-torch 1.0's GaLoreAdamW update (adamw.py), each operation over many tensors at once.

    galore-torch steps one matrix at a time, a dozen small kernels each: on Gemma-3-1B about 2,200
    launches a step; on the H200 (bench, 4,096-token passes) a GaLore step took 106 ms where full
    fine-tuning's with fused AdamW took 74. Here a refresh first computes every due basis side by side
    (refresh_bases), and Adam's arithmetic runs as torch._foreach_* kernels over a chunk of tensors: the
    same operations in the same order (on the CPU the same numbers, tests/test_galore.py). Projections
    stay one matmul per matrix.
    """

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params, grads = self.step_gradients(group)
            for chunk in _chunks(params, grads, group):
                self._update(group, *chunk)

    def step_gradients(self, group: dict) -> tuple[list, list]:
        """The group's tensors that step, and the gradients Adam sees (GaLore's group: to be projected)."""
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if "rank" in group:
            for p in params:
                self.state[p].setdefault("step", 0)
            projectors = [self.state[p]["projector"] for p in params]
            steps = [self.state[p]["step"] for p in params]
            refresh_bases(projectors, grads, steps, group["refresh_streams"])
        return params, grads

    def project(self, group: dict, params: list, grads: list) -> list:
        """The gradients in GaLore's low-rank space (the plain group's as they are)."""
        if "rank" not in group:
            return grads
        return [
            self.state[p]["projector"].project(g, self.state[p]["step"])
            for p, g in zip(params, grads, strict=True)
        ]

    def _update(self, group: dict, params: list, grads: list) -> None:
        beta1, beta2 = group["betas"]
        grads = self.project(group, params, grads)
        states = [self.state[p] for p in params]
        for state, grad in zip(states, grads, strict=True):
            if "exp_avg" not in state:
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(grad), torch.zeros_like(grad)
            state["step"] = state.get("step", 0) + 1
        exp_avg, exp_avg_sq = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(exp_avg, beta1)
        torch._foreach_add_(exp_avg, grads, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - beta2)
        del grads
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_add_(denom, group["eps"])
        updates = torch._foreach_div(exp_avg, denom)
        del denom
        for p, state, update in zip(params, states, updates, strict=True):
            if "rank" in group:  # back to full shape one matrix at a time: all at once is the model's size
                update = state["projector"].project_back(update)
            p.add_(update, alpha=-_step_size(group, state["step"]))
        if group["weight_decay"] > 0.0:
            torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])


def _step_size(group: dict, step: int) -> float:
    """galore-torch's learning rate with Adam's bias correction, computed as it does."""
    step_size = group["lr"]
    if group["correct_bias"]:
        beta1, beta2 = group["betas"]
        step_size = step_size * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
    return step_size


def _chunks(params: list, grads: list, group: dict) -> list[tuple[list, list]]:
    """params and grads cut into runs of about UPDATE_CHUNK_ELEMENTS low-rank (Adam state) elements."""
    out, used = [], UPDATE_CHUNK_ELEMENTS
    for p, g in zip(params, grads, strict=True):
        if used >= UPDATE_CHUNK_ELEMENTS:
            out.append(([], []))
            used = 0
        out[-1][0].append(p)
        out[-1][1].append(g)
        used += min(p.numel(), group.get("rank", p.numel()) * max(p.shape))
    return out


class AccumulatingGaLoreAdamW(BatchedGaLoreAdamW):
    """GaLoreAdamW that projects gradients during backward (`galore.layerwise`), as `accumulation` says.

    The training loop sets `last_pass` before each backward pass of a step (True outside a loop, where
    one backward is one step).
    """

    def __init__(self, params, accumulation: str = "full", **kw) -> None:
        super().__init__(params, **kw)
        self.accumulation = accumulation
        self.last_pass = True
        for p in self._projected():
            p.register_post_accumulate_grad_hook(self._accumulate)

    def _projected(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups if "rank" in g for p in g["params"]]

    def _plain(self) -> list[torch.Tensor]:
        grads = [p.grad for g in self.param_groups if "rank" not in g for p in g["params"]]
        return [g for g in grads if g is not None]

    @torch.no_grad()
    def _accumulate(self, p: torch.Tensor) -> None:
        state = self.state[p]
        if self.accumulation == "full":
            if not self.last_pass:
                return  # .grad keeps accumulating the step's passes
            state["full_norm_sq"] = _squared_norm(p.grad)
        step, pending = state.get("step", 0), "low_grad" in state
        low = state["projector"].project(p.grad, step, refresh=not pending)
        state["low_grad"] = state["low_grad"].add_(low) if pending else low
        p.grad = None

    def gradients(self) -> list[torch.Tensor]:
        """What step() will use: low-rank gradients of projected matrices, full gradients of the rest."""
        low = [self.state[p]["low_grad"] for p in self._projected() if "low_grad" in self.state[p]]
        return low + self._plain()

    def gradient_norm(self, also: list[torch.Tensor] = ()) -> torch.Tensor:
        """The clipping norm: the full gradient's (`full`) or that of the gradients kept (`projected`),
        with the gradients `also` (those another optimizer steps on, clipped together with these)."""
        if self.accumulation == "full":
            recorded = [self.state[p].get("full_norm_sq") for p in self._projected()]
            squares = [s for s in recorded if s is not None]
            squares += [_squared_norm(g) for g in self._plain()]
        else:
            squares = [_squared_norm(g) for g in self.gradients()]
        squares += [_squared_norm(g) for g in also]
        return torch.stack(squares).sum().sqrt() if squares else torch.tensor(0.0)

    @torch.no_grad()
    def clip(self, max_norm: float, also: list[torch.Tensor] = ()) -> torch.Tensor:
        """torch's clip_grad_norm_ on what step() will use and on `also`; returns the norm before clipping."""
        norm = self.gradient_norm(also)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(self.gradients() + list(also), coef)
        for p in self._projected():  # the recorded norms now describe the clipped full gradient
            if "full_norm_sq" in self.state[p]:
                self.state[p]["full_norm_sq"].mul_(coef.square())
        return norm

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Also drop gradients projected but not stepped on (a step skipped for a non-finite loss)."""
        super().zero_grad(set_to_none)
        for p in self._projected():
            self.state[p].pop("low_grad", None)
            self.state[p].pop("full_norm_sq", None)

    def step_gradients(self, group: dict) -> tuple[list, list]:
        """GaLore's group: the low-rank gradients accumulated in backward, already projected."""
        if "rank" not in group:
            return super().step_gradients(group)
        params = [p for p in group["params"] if "low_grad" in self.state[p]]
        return params, [self.state[p].pop("low_grad") for p in params]

    def project(self, group: dict, params: list, grads: list) -> list:
        return grads


def _squared_norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t, dtype=torch.float32).square()


def svd_seconds(optimizer) -> float:
    """Time spent in projector refreshes so far."""
    return sum(s["projector"].svd_s for s in optimizer.state.values() if "projector" in s)


def split_parameters(model) -> tuple[list, list]:
    """2-D attention and MLP weights go to GaLore; every other trainable tensor to plain AdamW."""
    projected, plain = [], []
    for name, tensor in model.named_parameters():
        if not tensor.requires_grad:
            continue
        is_matrix = tensor.ndim == 2 and any(f".{m}." in name for m in PROJECTED_MODULES)
        (projected if is_matrix else plain).append((name, tensor))
    return projected, plain


def check_projected(optimizer: GaLoreAdamW) -> None:
    """After the first step every projected tensor must hold a projector with its basis."""
    group = next(g for g in optimizer.param_groups if "rank" in g)
    missing = [
        t
        for t in group["params"]
        if getattr(optimizer.state.get(t, {}).get("projector"), "ortho_matrix", None) is None
    ]
    if missing or not group["params"]:
        raise RuntimeError(
            f"GaLore did not project {len(missing)} of {len(group['params'])} matrices after the first step; "
            "check that the model has attention and MLP linear layers"
        )
    bases = [optimizer.state[t]["projector"].ortho_matrix for t in group["params"]]
    flat = [m for b in bases for m in (b if isinstance(b, list) else [b])]
    distributed.check_same(flat, "GaLore projections")  # gradients are summed first: they must agree


# ---------------------------------------------------------------- checkpoints
# galore-torch keeps each projector as a Python object in the optimizer state, which
# `torch.load(weights_only=True)` refuses, so projectors are stored as their tensors and settings and
# rebuilt on load: a checkpoint never needs unpickling of arbitrary objects.


def galore_state(optimizer: torch.optim.Optimizer) -> dict:
    """state_dict() with each GaLore projector as plain data (state_dict shares the live per-param dicts,
    so they are copied before the projector is swapped out)."""
    state = optimizer.state_dict()
    state["state"] = {i: _plain(s) for i, s in state["state"].items()}
    return state


def _plain(s: dict) -> dict:
    s = dict(s)
    proj = s.pop("projector", None)
    if proj is not None:
        s["projector"] = {"ortho_matrix": proj.ortho_matrix, **{k: getattr(proj, k) for k in PROJECTOR_KEYS}}
    return s


def load_galore_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load the state, then rebuild projectors. They bypass load_state_dict, whose casting of state
    values would mangle their strings; state keys are positions in the param groups' order."""
    projectors = {i: s.pop("projector") for i, s in state["state"].items() if "projector" in s}
    optimizer.load_state_dict(state)
    params = [t for group in optimizer.param_groups for t in group["params"]]
    for i, saved in projectors.items():
        proj = Projector(**{k: saved[k] for k in PROJECTOR_KEYS})
        matrix = saved["ortho_matrix"]
        device = params[i].device
        proj.ortho_matrix = [m.to(device) for m in matrix] if isinstance(matrix, list) else matrix.to(device)
        optimizer.state[params[i]]["projector"] = proj
