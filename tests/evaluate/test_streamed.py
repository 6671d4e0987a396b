"""The layer-streamed teacher-forced pass against the deployed step, one decode step per token."""

import numpy as np
import pytest
import torch

from ltexport.evaluate.perplexity import score_tokens
from ltexport.evaluate.steps import SharedPrefill, greedy, prefill, run_chunks, torch_variant
from ltexport.evaluate.streamed import Text, score_texts, streamed_variant
from ltexport.plan.schema import Plan


def plan(source, lazy, prefill_mode="dense"):
    return Plan(model=source.spec().plan_header(), sink=2, window=14, lazy_layers=lazy, prefill=prefill_mode)


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-mistral"])  # Mistral: prompt > its own window of 48
@torch.no_grad()
def test_teacher_forcing_reproduces_the_deployed_greedy_decode_and_its_nll(name, tiny_models):
    """Feeding greedy's own tokens back, every argmax is greedy's next token (the ring wraps: S+W = 16),
    and the NLL of each is what the deployed step's one-token-per-call scoring gives."""
    source, model = tiny_models[name]
    plans = [plan(source, []), plan(source, [0, 2]), plan(source, [1, 3], "streaming")]
    prompt = torch.randint(3, 256, (90,), generator=torch.Generator().manual_seed(5)).tolist()
    texts, deployed = [], []
    for p in plans:
        v = torch_variant("v", model, p)
        logits, past_len, caches = prefill(v, prompt, 16, SharedPrefill(model, prompt, 16))
        tokens = greedy(v.step, logits, past_len, caches, 8, None)
        _, past_len, caches = run_chunks(v.step, prompt, 0, v.step.empty_caches(1), 0)
        deployed.append((tokens, score_tokens(v.step, tokens, int(past_len[0]), caches, 1)))
        texts.append(Text(prompt + tokens, len(prompt), range(len(prompt) - 1, len(prompt) + len(tokens))))
    variants = [streamed_variant(f"v{i}", p, source.spec().sliding_window) for i, p in enumerate(plans)]
    scores = score_texts(source, variants, texts, show_progress=False)
    for i, (tokens, nll) in enumerate(deployed):
        got = scores[i][i]  # text i scored by variant i
        assert got["argmax"][:len(tokens)].tolist() == tokens
        np.testing.assert_allclose(got["nll"][1:], nll, rtol=1e-4)  # from the first decode position on


def test_streaming_leaves_the_weight_source_untouched():
    """Layers are refilled in place: never into the source's own tensors (tiny: an in-memory model)."""
    from ltexport.models.sources import resolve

    source = resolve("tiny-llama")
    weights = source.weights()
    before = {name: weights.get(name).clone() for name in weights.names()}
    original = streamed_variant("o", plan(source, []), None)
    score_texts(source, [original], [Text(list(range(3, 60)), 50, range(50, 56))], show_progress=False)
    assert all(torch.equal(weights.get(name), tensor) for name, tensor in before.items())
