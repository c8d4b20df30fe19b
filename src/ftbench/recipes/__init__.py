"""Training methods as plug-in recipes: one module each in this package, named by params.yaml's
`methods.<name>.recipe`, whose `RECIPE` implements `Recipe`.

train, evaluate, merge, checkpoint and bench ask `get(name)` for a method's recipe and never name one,
so a new recipe is its module, its params.yaml entry (with its settings class in config.py's union of
method blocks) and its test. `get` imports only the recipe asked for: the train stage of a method runs
(and dvc.yaml lists as a dep) its own recipe's module and no other.

A recipe module may import this package and the modules every train stage runs anyway (config,
loading, distributed, resources, errors), no other recipe: dvc.yaml names one recipe module per
method (`src/ftbench/recipes/${item.recipe}.py`). Building blocks two recipes share live here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ftbench import config
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


def adamw(params: list[torch.Tensor], method: config.MethodParams, p: config.Params) -> torch.optim.AdamW:
    """torch's AdamW with the method's learning rate and train.* betas, eps and weight decay."""
    return torch.optim.AdamW(
        params,
        lr=method.lr,
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
        torch.manual_seed(seed)  # adapter initialisation
        lora = LoraConfig(
            r=method.lora.r,
            lora_alpha=method.lora.alpha,
            lora_dropout=method.lora.dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)  # adapters in fp32 over a bf16 base (autocast_adapter_dtype)
        trainable = [t for t in model.parameters() if t.requires_grad]
        return model, adamw(trainable, method, p), {"trainable_params": sum(t.numel() for t in trainable)}

    def save(self, model, out: Path, tokenizer) -> None:
        model.save_pretrained(out, safe_serialization=True)  # the adapter alone

    def load_trained(self, base: Path, folder: Path):
        return PeftModel.from_pretrained(self.base(base), folder)
