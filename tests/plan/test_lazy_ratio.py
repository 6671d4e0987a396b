"""The lazy ratio (LightTransfer Eq. 1) against a brute-force eager-attention computation."""

import pytest
import torch

from ltexport.plan.identify import choose_lazy_layers
from ltexport.plan.lazy_ratio import measure_lazy_ratios


def brute_force_ratios(model, ids, sink, window, last_queries):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = model(input_ids=ids, output_attentions=True, use_cache=False).attentions
    finally:
        model.set_attn_implementation("sdpa")
    length = ids.shape[1]
    ratios = []
    for probs in attentions:  # [B,H,L,L], the model's own masks applied
        total = 0.0
        for q in range(length - last_queries, length):
            kept = [j for j in range(q + 1) if j < sink or j > q - window]
            total += probs[0, :, q, kept].sum(-1).mean().item()
        ratios.append(total / last_queries)
    return ratios


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral", "tiny-qwen2"])
def test_lazy_ratio_matches_brute_force(name, tiny_models):
    _, model = tiny_models[name]
    ids = torch.randint(3, 256, (1, 96), generator=torch.Generator().manual_seed(1))
    got = measure_lazy_ratios(model, ids, sink=3, window=20, last_queries=16)
    want = brute_force_ratios(model, ids, sink=3, window=20, last_queries=16)
    assert got == pytest.approx(want, abs=1e-5)
    assert model.config._attn_implementation == "sdpa"  # restored


def test_choose_lazy_layers_takes_the_laziest():
    assert choose_lazy_layers([0.1, 0.9, 0.5, 0.8], 0.5) == [1, 3]
    assert choose_lazy_layers([0.1, 0.9, 0.5, 0.8], 0.01) == [1]  # at least one
    assert choose_lazy_layers([0.1, 0.9, 0.5, 0.8], 1.0) == [0, 1, 2, 3]
