"""Passkey retrieval: a number hidden at a chosen depth in repetitive filler, asked for at the end.

Prompts are assembled from token pieces, so the needle's token position is exact and recorded:
frame head (chat template + instruction), filler, needle, filler, frame tail (question + answer
prefix). The needle goes at the filler-sentence boundary closest to `depth` x filler length.
"""

import math
import re
from dataclasses import dataclass

from ltexport.errors import LtexportError

INSTRUCTION = ("There is an important piece of information hidden inside a lot of irrelevant text. "
               "Find it and memorize it. I will quiz you about it.\n")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\nWhat is the pass key? Answer with the number only."
ANSWER_PREFIX = "The pass key is"
_PLACEHOLDER = "\u0000HAYSTACK\u0000"


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]
    key: str
    context: int
    depth: float           # requested depth in [0, 1]
    needle_start: int      # token index of the needle in `ids`
    needle_end: int
    haystack_start: int    # token index where filler begins
    haystack_end: int

    @property
    def actual_depth(self) -> float:
        """Needle start within the haystack (filler + needle), 0 = first token, 1 = last."""
        span = self.haystack_end - self.haystack_start - (self.needle_end - self.needle_start)
        return (self.needle_start - self.haystack_start) / max(1, span)


def uses_chat(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def frame(tokenizer, chat: bool) -> tuple[list[int], list[int]]:
    """Token ids before and after the haystack."""
    if chat:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": INSTRUCTION + _PLACEHOLDER + QUESTION}], tokenize=False,
            add_generation_prompt=True)
        before, after = text.split(_PLACEHOLDER)
        return _encode(tokenizer, before), _encode(tokenizer, after + ANSWER_PREFIX)
    return tokenizer.encode(INSTRUCTION), _encode(tokenizer, QUESTION + " " + ANSWER_PREFIX)


def build_prompt(tokenizer, context: int, depth: float, key: str, chat: bool) -> PasskeyPrompt:
    """A prompt of exactly `context` tokens with `key` hidden at `depth`."""
    head, tail = frame(tokenizer, chat)
    needle, unit = _encode(tokenizer, NEEDLE.format(key=key)), _encode(tokenizer, FILLER)
    n_filler = context - len(head) - len(tail) - len(needle)
    if n_filler < 2 * len(unit):
        raise LtexportError(f"passkey context {context} is too short for the prompt frame and needle "
                            f"({context - n_filler} tokens); use contexts of at least {context - n_filler + 2 * len(unit)}")
    filler = (unit * math.ceil(n_filler / len(unit)))[:n_filler]
    cut = min(n_filler, round(depth * n_filler / len(unit)) * len(unit))
    ids = head + filler[:cut] + needle + filler[cut:] + tail
    start = len(head) + cut
    return PasskeyPrompt(ids, key, context, depth, start, start + len(needle), len(head), len(ids) - len(tail))


def make_key(rng, digits: int) -> str:
    return str(int(rng.integers(10 ** (digits - 1), 10 ** digits)))


def key_tokens(tokenizer, key: str) -> list[int]:
    """The tokens of " <key>" as they follow the answer prefix (tokenized in that context when the
    tokenizer keeps the prefix's tokens intact)."""
    prefix = _encode(tokenizer, ANSWER_PREFIX)
    whole = _encode(tokenizer, f"{ANSWER_PREFIX} {key}")
    return whole[len(prefix):] if whole[:len(prefix)] == prefix else _encode(tokenizer, f" {key}")


def score_answer(text: str, key: str) -> tuple[str, bool]:
    """The first number in the answer, and whether it is the key (exactly, not a prefix)."""
    match = re.search(r"\d+", text)
    answer = match.group() if match else ""
    return answer, answer == key


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))
