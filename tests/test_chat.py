import pytest
from transformers import AutoTokenizer

from ftbench import chat


@pytest.fixture(scope="module")
def tok(gemma_tokenizer_dir):
    return AutoTokenizer.from_pretrained(gemma_tokenizer_dir)


def test_gemma_turn_format_with_one_bos(tok):
    messages = [{"role": "user", "content": "Name a colour."}]
    ids, labels = chat.encode(tok, messages, "Blue.")
    text = tok.decode(ids)
    assert (
        text
        == "<bos><start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\nBlue.<end_of_turn>"
    )
    assert ids.count(tok.bos_token_id) == 1
    learned = [t for t, lab in zip(ids, labels, strict=True) if lab != chat.IGNORE]
    assert tok.decode(learned) == "Blue.<end_of_turn>"
    assert learned[-1] == chat.end_of_turn_id(tok) == 106


def test_system_message_joins_the_first_user_turn(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    text = tok.decode(chat.prompt_ids(tok, messages))
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello."
        "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
