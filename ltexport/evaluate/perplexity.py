"""Decode-time perplexity on long text.

At context L, the first L - N tokens are a prompt (prefilled as the variant deploys it) and the
last N tokens are scored teacher-forced, each with the attention it would have had if the model
had generated it: lazy layers see only their sink + window ring (and the token itself). (Scoring the prompt itself would measure
nothing with dense prefill: there every layer attends densely, exactly like the original.)
Predictions: token t+1 from position t for t in [L-N, L-1), i.e. N - 1 tokens.

Scoring N tokens one decode step at a time is slow, so chunks are used where they are exact:
streaming plans score through their own step (its mask is the decode mask at any chunk size);
dense plans through their view (steps.view_plan) on transplanted caches; otherwise one token per call.
"""

import math

import numpy as np

from ltexport.evaluate.steps import SharedPrefill, Variant, can_transplant, prefill, run_chunks, transplant


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
    step, chunk, past, caches = _scoring_start(variant, prompt, prefill_chunk, score_chunk, shared)
    return perplexity_of(score_tokens(step, tail, past, caches, chunk))


def perplexity_of(nll: np.ndarray) -> dict:
    mean = float(nll.mean())
    return {"ppl": math.exp(mean), "nll": mean, "tokens": int(nll.size)}


def _scoring_start(variant: Variant, prompt: list[int], prefill_chunk: int, score_chunk: int, shared):
    """(step, chunk size, past_len, caches) that score the tail exactly as decode steps would."""
    dense = variant.plan.prefill == "dense" and variant.plan.lazy_layers
    if dense and variant.view is not None and prefill_chunk > 0 and can_transplant(variant, len(prompt)):
        view = variant.view
        caches = transplant(shared.get()[1], view.hybrid.plan, len(prompt), view.empty_caches(1)[0].dtype)
        return view, score_chunk, len(prompt), caches
    _, past_len, caches = prefill(variant, prompt, prefill_chunk, shared)
    return variant.step, 1 if dense else score_chunk, int(past_len[0]), caches


def score_tokens(step, tail: list[int], past: int, caches, chunk: int) -> np.ndarray:
    """NLL of tail[1:] fed teacher-forced from position `past`."""
    nll = []

    def collect(start, logits):
        targets = np.array(tail[start + 1:start + 1 + len(logits)], dtype=np.int64)
        if len(targets):
            nll.append(log_softmax_nll(logits[:len(targets)], targets))

    run_chunks(step, tail, past, caches, chunk, collect)
    return np.concatenate(nll)
