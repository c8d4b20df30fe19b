"""Chat formatting shared by training and evaluation, so both see byte-identical prompts."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

# Gemma's turn format, for tokenizers that ship without a chat template (the embedded GGUF's does not).
# Gemma has no system role: a system message is prepended to the first user turn, as Google's template does.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = m['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' + (ns.system if role == 'user' else '') + m['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{% if role == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
IGNORE = -100  # label value the loss skips


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    if not tokenizer.chat_template:
        tokenizer.chat_template = GEMMA_TEMPLATE


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Gemma closes a turn with <end_of_turn>; other tokenizers with their EOS token."""
    tid = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    return tid if isinstance(tid, int) and tid != tokenizer.unk_token_id else tokenizer.eos_token_id


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of the conversation so far plus the opening of the model's turn.

    The template already writes <bos>, so the text is tokenized without special tokens (no doubled <bos>).
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], answer: str
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example: loss on the answer and its end-of-turn token only."""
    prompt = prompt_ids(tokenizer, messages)
    target = tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] + [end_of_turn_id(tokenizer)]
    return prompt + target, [IGNORE] * len(prompt) + target
