"""The hybrid model with explicit caches against the original transformers model."""

import pytest
import torch

from ltexport.hybrid.caches import empty_caches
from ltexport.hybrid.model import HybridModel
from ltexport.plan.schema import Plan


def run_hybrid(hybrid, ids, prefill_len):
    """Prefill `prefill_len` tokens, then decode the rest one by one; returns logits [B,L,V]."""
    batch = ids.shape[0]
    logits, past_len, *caches = hybrid(ids[:, :prefill_len], torch.zeros(batch, dtype=torch.long),
                                       *empty_caches(hybrid.plan, batch))
    steps = [logits]
    for t in range(prefill_len, ids.shape[1]):
        logits, past_len, *caches = hybrid(ids[:, t:t + 1], past_len, *caches)
        steps.append(logits)
    return torch.cat(steps, 1), past_len


def plan_for(source, lazy, window, prefill="dense", sink=2):
    return Plan(model=source.spec().plan_header(), sink=sink, window=window, lazy_layers=lazy, prefill=prefill)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral", "tiny-qwen2"])
@pytest.mark.parametrize("lazy, window, prefill", [
    ([], 14, "dense"),               # no lazy layers: the original model
    ([0, 2], 200, "streaming"),      # window covers the whole context: the original model
])
@torch.no_grad()
def test_hybrid_reproduces_the_original(name, lazy, window, prefill, tiny_models):
    source, model = tiny_models[name]
    sink = 2
    if lazy and source.spec().sliding_window:  # Mistral: streaming with S=0, W=its window is its own attention
        sink, window = 0, source.spec().sliding_window
    hybrid = HybridModel(model, plan_for(source, lazy, window, prefill, sink)).eval()
    ids = torch.randint(3, 256, (2, 70), generator=torch.Generator().manual_seed(0))
    got, past_len = run_hybrid(hybrid, ids, 50)
    assert torch.allclose(got, model(ids).logits, atol=2e-5)
    assert past_len.tolist() == [70, 70]


@torch.no_grad()
def test_no_lazy_plan_reproduces_greedy_tokens(tiny_models):
    source, model = tiny_models["tiny-llama"]
    hybrid = HybridModel(model, plan_for(source, [], 14)).eval()
    prompt = torch.tensor([[1, 40, 50, 60, 70]])
    want = model.generate(prompt, max_new_tokens=20, do_sample=False)[0, 5:].tolist()
    logits, past_len, *caches = hybrid(prompt, torch.zeros(1, dtype=torch.long), *empty_caches(hybrid.plan, 1))
    got = []
    for _ in range(20):
        token = int(logits[0, -1].argmax())
        got.append(token)
        logits, past_len, *caches = hybrid(torch.tensor([[token]]), past_len, *caches)
    assert got == want


@torch.no_grad()
def test_lazy_layers_keep_fixed_size_caches(tiny_models):
    source, model = tiny_models["tiny-mistral"]
    hybrid = HybridModel(model, plan_for(source, [1, 3], 14)).eval()
    ids = torch.randint(3, 256, (1, 40))
    _, _, *caches = hybrid(ids, torch.zeros(1, dtype=torch.long), *empty_caches(hybrid.plan, 1))
    assert [c.shape[2] for c in caches] == [40, 40, 16, 16, 40, 40, 16, 16]


@torch.no_grad()
def test_streaming_window_changes_the_output(tiny_models):
    """A small window must actually drop context (else the op would be a no-op)."""
    source, model = tiny_models["tiny-llama"]
    hybrid = HybridModel(model, plan_for(source, [0, 1, 2, 3], 6, "streaming")).eval()
    ids = torch.randint(3, 256, (1, 60), generator=torch.Generator().manual_seed(2))
    got, _ = run_hybrid(hybrid, ids, 30)
    assert (got - model(ids).logits).abs().max() > 1e-2
