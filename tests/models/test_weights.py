"""Weights read one tensor at a time equal what transformers loads for the whole model."""

import pytest
import torch

from ltexport.models.sources import resolve


@pytest.mark.slow
def test_gguf_weights_are_what_transformers_loads():
    """SmolLM2's .gguf, dequantized tensor by tensor, equals transformers' whole-file load bit for bit."""
    from transformers import AutoModelForCausalLM

    source = resolve("smollm2")
    want = AutoModelForCausalLM.from_pretrained(str(source.path), gguf_file=source.gguf_file, dtype=torch.float32).state_dict()
    weights = source.weights()
    assert weights.names() | {"lm_head.weight"} == set(want)  # tied: the head is the embedding
    for name in weights.names():
        assert torch.equal(weights.get(name), want[name]), name
