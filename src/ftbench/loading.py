"""Loading models and tokenizers the same way in every stage: safetensors only, no remote code."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from ftbench import chat
from ftbench.common.paths import require


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


def load_tokenizer(path: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(require(path))
    chat.ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | Path, dtype: torch.dtype = torch.float32):
    """A full-precision model on the default device; fp32 master weights unless told otherwise."""
    return AutoModelForCausalLM.from_pretrained(
        require(path), dtype=dtype, use_safetensors=True, device_map={"": device()}
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
        require(path),
        quantization_config=nf4_config(),
        dtype=compute_dtype(),
        use_safetensors=True,
        device_map={"": device()},
    )
