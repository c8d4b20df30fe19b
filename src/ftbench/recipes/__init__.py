"""Training methods as plug-in recipes: one module each in this package, named by params.yaml's
`methods.<name>.recipe`, whose `RECIPE` implements `Recipe`.

train, evaluate, merge, checkpoint and bench ask `get(name)` for a method's recipe and never name one,
so a new recipe is its module, its params.yaml entry (with its settings class in config.py's union of
method blocks) and its test. `get` imports only the recipe asked for: the train stage of a method runs
(and dvc.yaml lists as a dep) its own recipe's module and no other.

A recipe module may import this package and the modules every train stage runs anyway (config,
loading, loss, distributed, resources, errors), no other recipe: dvc.yaml names one recipe module per
method (`src/ftbench/recipes/${item.recipe}.py`). Building blocks two recipes share live here. peft
and the GaLore optimizer (ftbench.optim, which imports galore-torch and through it bitsandbytes) are
imported where a recipe trains or loads adapters, not with this package: a stage that scores a full
model, or none, does not spend seconds importing them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from ftbench.common import config, distributed, paths
from ftbench.common.errors import UserError
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
    from peft import LoraConfig, get_peft_model  # only where adapters train: peft takes seconds to import

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
        from peft import PeftModel

        adapter = paths.require(folder)  # before the base model's load, which a missing adapter would waste
        return PeftModel.from_pretrained(self.base(base), adapter)


# ---------------------------------------------------------------- GaLore
# The GaLore recipes (galore.py, whose docstring explains `layerwise` and `accumulation`, and
# lora_galore.py's base matrices) share these.

PROJECTED_MODULES = ("self_attn", "mlp")


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


def split_parameters(model) -> tuple[list, list]:
    """2-D attention and MLP weights go to GaLore; every other trainable tensor to plain AdamW."""
    projected, plain = [], []
    for name, tensor in model.named_parameters():
        if not tensor.requires_grad:
            continue
        is_matrix = tensor.ndim == 2 and any(f".{m}." in name for m in PROJECTED_MODULES)
        (projected if is_matrix else plain).append((name, tensor))
    return projected, plain


def galore_optimizer(projected: list, plain: list, lr: float, g: config.GaloreParams, p: config.Params):
    """The GaLore optimizer (ftbench.optim) at `lr` on the `projected` and `plain` (name, tensor) pairs."""
    from ftbench import optim

    return optim.galore_adamw(projected, plain, lr, g, p.train)


class GaloreHooks(Recipe):
    """The training-loop hooks of a recipe whose optimizer is, or holds, a GaLore optimizer
    (ftbench.optim.BatchedGaLoreAdamW)."""

    def galore_part(self, optimizer):
        """The GaLore optimizer within the recipe's optimizer."""
        return optimizer

    def clip(self, optimizer, trainable: list[torch.Tensor], max_norm: float) -> float:
        """A layerwise GaLore holds projected gradients and the full ones' norms, so it clips them, with
        the trainable gradients it does not hold (a joint optimizer's adapters), by the norm of all of
        them (`galore.accumulation: full`: the full gradient's); any other GaLore, as every recipe."""
        galore = self.galore_part(optimizer)
        if not galore.layerwise:
            return super().clip(optimizer, trainable, max_norm)
        held = {id(t) for g in galore.param_groups for t in g["params"]}
        also = [t.grad for t in trainable if id(t) not in held and t.grad is not None]
        return galore.clip(max_norm, also=also).item()

    def before_backward(self, optimizer, last: bool) -> None:
        self.galore_part(optimizer).mark_pass(last)

    def check_first_step(self, optimizer) -> None:
        self.galore_part(optimizer).check_projected()

    def facts_after(self, optimizer) -> dict:
        return {"svd_s": round(self.galore_part(optimizer).svd_seconds(), 2)}

    def periodic_cost(self, optimizer, method: config.MethodParams) -> tuple[float, int]:
        return self.galore_part(optimizer).svd_seconds(), method.galore.update_proj_gap
