"""Chat formatting shared by training and evaluation, so both see byte-identical prompts."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from transformers import PreTrainedTokenizerBase

from ftbench.common.errors import UserError

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
# Where each message's content starts and ends in the rendered template, so that control tokens in it can be
# told from the template's: Unicode noncharacters, reserved for a program's internal use, not for text.
_OPEN, _CLOSE = "\ufdd0", "\ufdd1"
_CONTENT = re.compile(f"{_OPEN}(.*?){_CLOSE}", re.DOTALL)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    if not tokenizer.chat_template:
        tokenizer.chat_template = GEMMA_TEMPLATE


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Gemma closes a turn with <end_of_turn>; other tokenizers with their EOS token."""
    tid = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    return tid if isinstance(tid, int) and tid != tokenizer.unk_token_id else tokenizer.eos_token_id


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of the conversation so far plus the opening of the model's turn.

    Only the template's own markers become control tokens: a `<end_of_turn>` typed in a message is
    tokenized as the characters it is, so data cannot close a turn or forge one. The text between two
    control tokens, template text and content alike, is tokenized in one piece, so a row without markup
    gets exactly the ids of its rendered text tokenized whole. The template writes <bos> itself, so no
    special tokens are added.
    """
    wrapped = [{**m, "content": _wrap(m["content"])} for m in messages]
    text = tokenizer.apply_chat_template(wrapped, tokenize=False, add_generation_prompt=True)
    ids: list[int] = []
    plain = ""  # text since the last control token
    for part, is_control in _parts(text, _control_tokens(tokenizer)):
        if is_control:
            ids += text_ids(tokenizer, plain) + [tokenizer.convert_tokens_to_ids(part)]
            plain = ""
        else:
            plain += part
    return ids + text_ids(tokenizer, plain)


def _parts(text: str, controls: re.Pattern) -> Iterator[tuple[str, bool]]:
    """The rendered text as (part, is_control): control tokens only where the template wrote them."""
    for n, piece in enumerate(_CONTENT.split(text)):  # template, content, template, ..., template
        if n % 2:
            yield piece, False
            continue
        if _OPEN in piece or _CLOSE in piece:
            raise UserError(
                "the chat template cuts into message content, so ftbench cannot tell the template's markers "
                "from the data's; use a template that inserts each message's content whole"
            )
        for k, part in enumerate(controls.split(piece)):  # text, control, text, ..., text
            yield part, k % 2 == 1


def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of text from the data, in which `<end_of_turn>` or `<bos>` are characters, not control tokens."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def has_markup(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    """Whether the text holds a control token's text, which plain tokenization would turn into the token."""
    return _control_tokens(tokenizer).search(text) is not None


@functools.lru_cache(maxsize=4)
def _control_tokens(tokenizer: PreTrainedTokenizerBase) -> re.Pattern:
    """The tokenizer's special tokens (Gemma's turn markers, <bos>, <eos>, <pad>, <unusedN>...), exactly
    those `split_special_tokens` reads as text; longest first, so no token is cut short by its prefix."""
    special = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    longest_first = sorted(special, key=len, reverse=True)
    # (?!) matches nothing, for a tokenizer without special tokens
    return re.compile("(" + "|".join(map(re.escape, longest_first)) + ")" if special else "(?!)")


def _wrap(content: str) -> str:
    """The content between the reserved characters, its surrounding whitespace outside them, so that a
    template that trims content (Gemma's does) trims exactly what it trimmed unwrapped."""
    if _OPEN in content or _CLOSE in content:
        raise UserError(
            f"message text {content[:60]!r} contains U+FDD0 or U+FDD1, Unicode noncharacters that ftbench "
            "reserves to mark message content; remove them from the data"
        )
    core = content.strip()
    lead = len(content) - len(content.lstrip())
    return content[:lead] + _OPEN + core + _CLOSE + content[lead + len(core) :]


def encode(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], answer: str
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example: loss on the answer and its end-of-turn token only."""
    prompt = prompt_ids(tokenizer, messages)
    target = text_ids(tokenizer, answer.strip()) + [end_of_turn_id(tokenizer)]
    return prompt + target, [IGNORE] * len(prompt) + target
