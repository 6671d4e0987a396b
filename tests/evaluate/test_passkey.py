"""Passkey prompts: exact length, the needle where the prompt says it is; answer scoring."""

import numpy as np
import pytest

from ltexport.errors import LtexportError
from ltexport.evaluate import passkey as pk
from ltexport.models.tokenizers import ByteTokenizer


class ChatByteTokenizer(ByteTokenizer):
    """A byte tokenizer with a toy chat template, to test the chat framing."""

    chat_template = "toy"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), ChatByteTokenizer()])
@pytest.mark.parametrize("depth", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_needle_is_where_the_prompt_says(tokenizer, depth):
    context = 2000
    prompt = pk.build_prompt(tokenizer, context, depth, "73915", pk.uses_chat(tokenizer))
    assert len(prompt.ids) == context
    needle = tokenizer.decode(prompt.ids[prompt.needle_start:prompt.needle_end])
    assert needle == pk.NEEDLE.format(key="73915")
    assert tokenizer.decode(prompt.ids).count("73915") == 2  # only in the needle
    unit = len(pk.FILLER.encode())  # the needle sits on a filler-sentence boundary
    assert abs(prompt.actual_depth - depth) <= unit / (prompt.haystack_end - prompt.haystack_start)
    assert tokenizer.decode(prompt.ids).rstrip().endswith(pk.ANSWER_PREFIX)


def test_chat_framing_wraps_the_haystack():
    tok = ChatByteTokenizer()
    text = tok.decode(pk.build_prompt(tok, 1000, 0.5, "123", chat=True).ids)
    assert text.startswith("<user>" + pk.INSTRUCTION) and text.endswith(pk.QUESTION + "</user><assistant>" + pk.ANSWER_PREFIX)


def test_too_short_context_is_a_user_error():
    with pytest.raises(LtexportError, match="too short"):
        pk.build_prompt(ByteTokenizer(), 300, 0.5, "12345", chat=False)


def test_keys_have_the_requested_digits():
    rng = np.random.default_rng(0)
    assert all(len(pk.make_key(rng, 5)) == 5 for _ in range(100))


@pytest.mark.parametrize("text, answer, correct", [
    (" 71432.", "71432", True),
    ("71432 is the key", "71432", True),
    (" 7143.", "7143", False),          # a prefix is wrong
    (" 714321", "714321", False),       # so is a longer number
    (" the key is 1, then 71432", "1", False),  # the first number counts
    (" I do not know", "", False),
])
def test_score_answer(text, answer, correct):
    assert pk.score_answer(text, "71432") == (answer, correct)
