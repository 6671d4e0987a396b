"""SmolLM2's .gguf read one tensor at a time: transformers' own weights, and layer-streamed scores equal to theirs."""

import pytest
import torch

from ltexport.models.sources import resolve
from ltexport.plan.lazy_ratio import measure_lazy_ratios
from ltexport.plan.streamed import stream_lazy_ratios


@pytest.mark.slow
def test_gguf_weights_and_layer_streamed_lazy_ratios_match_transformers():
    from transformers import AutoModelForCausalLM

    source = resolve("smollm2")
    reference = AutoModelForCausalLM.from_pretrained(str(source.path), gguf_file=source.gguf_file, dtype=torch.float32)
    want = reference.state_dict()
    weights = source.weights()
    assert weights.names() | {"lm_head.weight"} == set(want)  # tied: the head is the embedding
    for name in weights.names():
        assert torch.equal(weights.get(name), want[name]), name
    ids = torch.randint(3, source.spec().vocab_size, (512,), generator=torch.Generator().manual_seed(0)).tolist()
    options = dict(sink=4, window=124, last_queries=64)
    streamed = stream_lazy_ratios(source, ids, **options, show_progress=False)
    assert streamed == pytest.approx(measure_lazy_ratios(reference.eval(), torch.tensor([ids]), **options), abs=1e-5)
