"""Explicit KV caches: fixed S+W ring buffers for lazy layers, growing tensors for full layers.

Caches travel as a flat list [key_0, value_0, key_1, value_1, ...], the order of the graph I/O.
"""

import torch

from ltexport.plan.schema import Plan


def empty_caches(plan: Plan, batch: int, dtype=torch.float32) -> list[torch.Tensor]:
    heads, dim = plan.model["num_kv_heads"], plan.model["head_dim"]
    caches = []
    for layer in range(plan.num_layers):
        slots = plan.sink + plan.window if plan.is_lazy(layer) else 0
        caches += [torch.zeros(batch, heads, slots, dim, dtype=dtype) for _ in range(2)]
    return caches


def cache_names(num_layers: int, prefix: str) -> list[str]:
    """`past_key_values.{i}.key|value` for inputs, `present.{i}.key|value` for outputs."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


INPUT_PREFIX = "past_key_values"
OUTPUT_PREFIX = "present"
