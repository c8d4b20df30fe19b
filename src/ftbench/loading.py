"""Loading models and tokenizers the same way in every stage: safetensors only, no remote code."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from ftbench import chat

# The attention every model is loaded with: transformers' sdpa, except that a query row the mask lets
# attend to no key at all (a left pad's first positions, in batched generation) attends to every key.
# transformers 5 dropped the `_unmask_unattended` step that did this, and on CUDA such rows come out NaN:
# on the H200 (torch 2.11, transformers 5.17) the first generated token of 252 of 500 left-padded GSM8K
# prompts was garbage in every model (transformers#47651). What those rows compute is padding, never read.
SDPA = "ftbench_sdpa"


def device() -> torch.device:
    """The GPU this process runs on (its rank's, under torchrun), or the CPU."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def compute_dtype() -> torch.dtype:
    """bf16 on the GPU (Gemma overflows in fp16); fp32 on the CPU, where bf16 matmuls are slow."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def configure_attention() -> None:
    """cuDNN's attention builds a plan for every new input shape, and shapes change from one micro-batch
    (or generated token) to the next: on the H200 QLoRA trained 2.4x faster with it off."""
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)


def sdpa_attending_somewhere(module, query, key, value, attention_mask, **kwargs):
    """sdpa with every fully masked query row unmasked (SDPA above)."""
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = attention_mask | ~attention_mask.any(dim=-1, keepdim=True)
    return AttentionInterface._global_mapping["sdpa"](module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(SDPA, sdpa_attending_somewhere)
AttentionMaskInterface.register(SDPA, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # the same masks as sdpa's


def load_tokenizer(path: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(path)
    chat.ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, dtype: torch.dtype = torch.float32):
    """A full-precision model on the default device; fp32 master weights unless told otherwise."""
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, use_safetensors=True, attn_implementation=SDPA, device_map={"": device()}
    )


def nf4_config() -> BitsAndBytesConfig:
    """The QLoRA quantization: NF4 with double quantization, computing in bf16 (fp32 on the CPU)."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(),
    )


def load_nf4(path: str | Path):
    """The base model with every linear layer but the output head in NF4 (bitsandbytes' default)."""
    return AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=nf4_config(),
        dtype=compute_dtype(),
        use_safetensors=True,
        attn_implementation=SDPA,
        device_map={"": device()},
    )
