"""The GaLore optimizer: galore-torch's GaLoreAdamW update, batched over tensors, with a choice of SVD
for the projection refreshes, refreshes run side by side, and a layerwise form that projects each
gradient during backward (recipes/galore.py's docstring explains `layerwise` and `accumulation`).

Only training imports this module: galore-torch imports bitsandbytes, which starts CUDA.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor

import torch
from galore_torch import GaLoreAdamW
from galore_torch.galore_projector import GaLoreProjector

from ftbench.common import config, distributed, resources

PROJECTOR_KEYS = ("rank", "update_proj_gap", "scale", "proj_type", "svd")
LOWRANK_OVERSAMPLE = 8  # extra columns for torch.svd_lowrank: rank 128 is found to ~1e-3 of full SVD
# The batched update works through a group's tensors in chunks of this many low-rank (Adam state)
# elements: its temporaries (projected gradients, Adam's denominator and update) stay under 0.1 GB, where
# all at once they would be 3 x 0.34 GB on Gemma-3-1B, at the step's memory peak (weights, gradients and
# the graphs' pool all held); 10 chunks a step still replace ~2,200 launches with ~70.
UPDATE_CHUNK_ELEMENTS = 8 * 2**20


def galore_adamw(
    projected: list, plain: list, lr: float, g: config.GaloreParams, train: config.TrainParams
) -> BatchedGaLoreAdamW:
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
        betas=train.betas,
        eps=train.eps,
        weight_decay=train.weight_decay,
        no_deprecation_warning=True,
    )
    for _, t in projected:  # GaLoreAdamW builds a stock projector only where none is set
        optimizer.state[t]["projector"] = Projector(g.rank, g.update_proj_gap, g.scale, g.proj_type, g.svd)
    return optimizer


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

    layerwise = False
    """Whether gradients are projected during backward (AccumulatingGaLoreAdamW)."""

    def mark_pass(self, last: bool) -> None:
        """Before a backward pass: whether it is the step's last (only a layerwise optimizer cares)."""

    def svd_seconds(self) -> float:
        """Time spent in projector refreshes so far."""
        return sum(s["projector"].svd_s for s in self.state.values() if "projector" in s)

    def check_projected(self) -> None:
        """After the first step every projected tensor must hold a projector with its basis."""
        group = next(g for g in self.param_groups if "rank" in g)
        missing = [
            t
            for t in group["params"]
            if getattr(self.state.get(t, {}).get("projector"), "ortho_matrix", None) is None
        ]
        if missing or not group["params"]:
            raise RuntimeError(
                f"GaLore did not project {len(missing)} of {len(group['params'])} matrices after the first "
                "step; check that the model has attention and MLP linear layers"
            )
        bases = [self.state[t]["projector"].ortho_matrix for t in group["params"]]
        flat = [m for b in bases for m in (b if isinstance(b, list) else [b])]
        distributed.check_same(flat, "GaLore projections")  # gradients are summed first: they must agree

    # galore-torch keeps each projector as a Python object in the optimizer state, which
    # `torch.load(weights_only=True)` refuses, so a checkpoint stores projectors as their tensors and
    # settings and rebuilds them on load: it never needs unpickling of arbitrary objects.

    def checkpoint_state(self) -> dict:
        """state_dict() with each projector as plain data (state_dict shares the live per-param dicts, so
        they are copied before the projector is swapped out)."""
        state = self.state_dict()
        state["state"] = {i: _storable(s) for i, s in state["state"].items()}
        return state

    def load_checkpoint_state(self, state: dict) -> None:
        """Load the state, then rebuild projectors. They bypass load_state_dict, whose casting of state
        values would mangle their strings; state keys are positions in the param groups' order."""
        projectors = {i: s.pop("projector") for i, s in state["state"].items() if "projector" in s}
        self.load_state_dict(state)
        params = [t for group in self.param_groups for t in group["params"]]
        for i, saved in projectors.items():
            proj = Projector(**{k: saved[k] for k in PROJECTOR_KEYS})
            matrix, device = saved["ortho_matrix"], params[i].device
            on_device = [m.to(device) for m in matrix] if isinstance(matrix, list) else matrix.to(device)
            proj.ortho_matrix = on_device
            self.state[params[i]]["projector"] = proj

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

    layerwise = True

    def __init__(self, params, accumulation: str = "full", **kw) -> None:
        super().__init__(params, **kw)
        self.accumulation = accumulation
        self.last_pass = True
        for p in self._projected():
            p.register_post_accumulate_grad_hook(self._accumulate)

    def mark_pass(self, last: bool) -> None:
        self.last_pass = last

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


def _storable(s: dict) -> dict:
    """A parameter's state with its projector as plain data."""
    s = dict(s)
    proj = s.pop("projector", None)
    if proj is not None:
        s["projector"] = {"ortho_matrix": proj.ortho_matrix, **{k: getattr(proj, k) for k in PROJECTOR_KEYS}}
    return s
