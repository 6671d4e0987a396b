"""Explicit KV caches: fixed S+W ring buffers for lazy layers, growing tensors for full layers.

Caches travel as a flat list [key_0, value_0, key_1, value_1, ...], the order of the graph I/O
(their names: ltexport.export.contract.cache_names).
"""

from ltexport.plan.schema import Plan


def empty_caches(plan: Plan, batch: int, dtype=None) -> list:
    """torch tensors (dtype default float32). torch is imported here, not at module level, so the cache
    naming and shape helpers serve the ONNX Runtime and TensorRT steps without loading torch."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    heads, dim = plan.model["num_kv_heads"], plan.model["head_dim"]
    caches = []
    for layer in range(plan.num_layers):
        slots = plan.sink + plan.window if plan.is_lazy(layer) else 0
        caches += [torch.zeros(batch, heads, slots, dim, dtype=dtype) for _ in range(2)]
    return caches


def initial_cache_shape(dims, batch: int) -> list[int]:
    """An empty cache for graph input dims: fixed dims (a lazy layer's ring) stay, dynamic ones (a full
    layer's length: a name, None, or -1 as TensorRT reports it) start at 0."""
    return [batch if i == 0 else (d if isinstance(d, int) and d >= 0 else 0) for i, d in enumerate(dims)]
