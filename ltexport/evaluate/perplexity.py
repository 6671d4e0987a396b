"""Decode-time perplexity on long text.

At context L, the first L - N tokens are a prompt (prefilled as the variant deploys it) and the
last N tokens are scored teacher-forced, each with the attention it would have had if the model
had generated it: lazy layers see sink + window only. (Scoring the prompt itself would measure
nothing with dense prefill: there every layer attends densely, exactly like the original.)
Predictions: token t+1 from position t for t in [L-N, L-1), i.e. N - 1 tokens.
"""

import math

import numpy as np

from ltexport.evaluate.steps import SharedPrefill, Variant, prefill, run_chunks


def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of `targets` [T] under `logits` [T,V], in float64."""
    z = logits.astype(np.float64)
    z -= z.max(-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(-1))
    return log_norm - z[np.arange(len(targets)), targets]


def decode_perplexity(variant: Variant, ids: list[int], scored: int, prefill_chunk: int, score_chunk: int,
                      shared: SharedPrefill) -> dict:
    """`ids` is the whole context; `shared` prefills ids[:-scored] with the original model."""
    prompt, tail = ids[:-scored], ids[-scored:]
    _, past_len, caches = prefill(variant, prompt, prefill_chunk, shared)
    nll = []

    def collect(start, logits):
        targets = np.array(tail[start + 1:start + 1 + len(logits)])
        nll.append(log_softmax_nll(logits[:len(targets)], targets))

    run_chunks(variant.decode_view, tail, int(past_len[0]), caches, variant.decode_chunk or score_chunk, collect)
    values = np.concatenate(nll)
    mean = float(values.mean())
    return {"ppl": math.exp(mean), "nll": mean, "tokens": int(values.size)}
