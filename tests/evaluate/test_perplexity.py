"""Decode perplexity and the prefill paths: exact against direct computations on tiny models."""

import math

import numpy as np
import pytest
import torch

from ltexport.evaluate.perplexity import decode_perplexity, score_tokens
from ltexport.evaluate.steps import SharedPrefill, can_transplant, greedy, prefill, ring_from_full, run_chunks, torch_variant
from ltexport.hybrid.caches import empty_caches
from ltexport.plan.schema import Plan


def plan(source, lazy, window=14, prefill_mode="dense"):
    return Plan(model=source.spec().plan_header(), sink=2, window=window, lazy_layers=lazy, prefill=prefill_mode)


def ids(n, seed=0):
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def ppl(variant, model, tokens, scored, prefill_chunk=32, score_chunk=16):
    shared = SharedPrefill(model, tokens[:-scored], prefill_chunk)
    return decode_perplexity(variant, tokens, scored, prefill_chunk, score_chunk, shared)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral"])
@torch.no_grad()
def test_fraction_zero_equals_the_hf_model_logits(name, tiny_models):
    source, model = tiny_models[name]
    tokens, scored = ids(200), 64
    got = ppl(torch_variant("original", model, plan(source, [])), model, tokens, scored)
    logits = model(torch.tensor([tokens])).logits[0].double()
    targets = torch.tensor(tokens[-scored + 1:])
    nll = -torch.log_softmax(logits[-scored:-1], -1)[torch.arange(scored - 1), targets]
    assert got["tokens"] == scored - 1
    assert got["ppl"] == pytest.approx(math.exp(nll.mean().item()), rel=1e-5)


@torch.no_grad()
def test_lazy_layers_cost_perplexity_only_beyond_the_window(tiny_models):
    source, model = tiny_models["tiny-llama"]
    tokens = ids(200, 1)
    original = ppl(torch_variant("o", model, plan(source, [])), model, tokens, 64)["ppl"]
    covering = ppl(torch_variant("w", model, plan(source, [0, 1, 2], window=300)), model, tokens, 64)["ppl"]
    small = ppl(torch_variant("s", model, plan(source, [0, 1, 2], window=14)), model, tokens, 64)["ppl"]
    assert covering == pytest.approx(original, rel=1e-5)
    assert abs(small / original - 1) > 1e-3


@pytest.mark.parametrize("prefill_mode", ["dense", "streaming"])
@torch.no_grad()
def test_chunked_scoring_is_exactly_one_decode_step_per_token(prefill_mode, tiny_models):
    """The fast chunked scoring = the deployed step fed one token per call after its own prefill."""
    source, model = tiny_models["tiny-qwen2"]
    variant = torch_variant("v", model, plan(source, [1, 3], prefill_mode=prefill_mode))
    tokens, scored = ids(150, 2), 80
    fast = ppl(variant, model, tokens, scored, score_chunk=32)
    _, past_len, caches = run_chunks(variant.step, tokens[:-scored], 0, variant.step.empty_caches(1), 0)
    slow = score_tokens(variant.step, tokens[-scored:], int(past_len[0]), caches, 1)
    assert fast["ppl"] == pytest.approx(math.exp(slow.mean()), rel=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral"])  # Mistral: prompt > its own window of 48
@pytest.mark.parametrize("prefill_mode", ["dense", "streaming"])
@torch.no_grad()
def test_chunked_prefill_equals_the_deployed_one_call_prefill(name, prefill_mode, tiny_models):
    """Transplanted (dense) or chunked (streaming) prefill, then decode = the hybrid's own one-call prefill."""
    source, model = tiny_models[name]
    variant = torch_variant("v", model, plan(source, [0, 2], prefill_mode=prefill_mode))
    prompt = ids(90, 3)
    assert can_transplant(variant, len(prompt)) == (prefill_mode == "dense" and name == "tiny-llama")
    logits, past_len, caches = prefill(variant, prompt, 16, SharedPrefill(model, prompt, 16))
    want_logits, want_len, want_caches = run_chunks(variant.step, prompt, 0, variant.step.empty_caches(1), 0)
    np.testing.assert_allclose(logits, want_logits, atol=1e-4)
    assert past_len.tolist() == want_len.tolist() == [90]
    got = greedy(variant.step, logits, past_len, caches, 12, None)
    assert got == greedy(variant.step, want_logits, want_len, want_caches, 12, None)


def test_ring_layout_matches_the_op():
    from ltexport.hybrid.sink_window import ring_slot

    full = np.arange(40, dtype=np.float32).reshape(1, 1, 40, 1)
    ring = ring_from_full(full, sink=3, window=7)
    for position in [0, 1, 2, *range(33, 40)]:
        assert ring[0, 0, ring_slot(position, 3, 7), 0] == position
    assert ring_from_full(full[:, :, :5], 3, 7)[0, 0, :5, 0].tolist() == [0, 1, 2, 3, 4]


def test_empty_plan_caches_are_empty(tiny_models):
    source, _ = tiny_models["tiny-llama"]
    assert all(c.shape[2] == 0 for c in empty_caches(plan(source, []), 1))
