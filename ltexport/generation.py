"""A decode loop over any step function (ONNX Runtime or the PyTorch reference): greedy or sampled."""

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


def pick_token(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """logits [V] of the last position -> next token id."""
    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    z = (logits.astype(np.float64) - logits.max()) / sampling.temperature  # max first: a tiny temperature gives -inf, not nan
    probs = np.exp(z)
    probs /= probs.sum()
    order = np.argsort(-probs)
    cumulative = np.cumsum(probs[order])
    keep = order[: int(np.searchsorted(cumulative, sampling.top_p) + 1)]  # nucleus incl. the crossing token
    return int(rng.choice(keep, p=probs[keep] / probs[keep].sum()))


def iter_tokens(step, empty_caches, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling = Sampling(),
                eos_id: int | None = None) -> Iterator[int]:
    """step(input_ids [1,T], past_len [1], caches) -> (logits, present_len, caches); batch 1."""
    rng = np.random.default_rng(sampling.seed)
    ids = np.array([prompt_ids], dtype=np.int64)
    past_len = np.zeros(1, dtype=np.int64)
    caches = empty_caches
    for _ in range(max_new_tokens):
        logits, past_len, caches = step(ids, past_len, caches)
        token = pick_token(np.asarray(logits)[0, -1], sampling, rng)
        if eos_id is not None and token == eos_id:
            return
        yield token
        ids = np.array([[token]], dtype=np.int64)


def generate(step, empty_caches, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling = Sampling(),
             eos_id: int | None = None) -> list[int]:
    return list(iter_tokens(step, empty_caches, prompt_ids, max_new_tokens, sampling, eos_id))
