"""KV-cache state memory per sequence: the hybrid vs the same model with no lazy layers.

A lazy layer keeps a fixed ring buffer of S+W rows per cache tensor; a full layer keeps one row per
token of context. One row is kv_heads * head_dim elements of the cache dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ltexport.triton.build_io import CacheState, bytes_per_element


@dataclass(frozen=True)
class StateMemory:
    """Bytes of cache state one sequence holds after `context` tokens.

    hybrid_bytes: lazy layers at their fixed S+W rows, full layers at `context` rows.
    dense_bytes: the same caches if every layer were full (no lazy layers).
    extra_bytes: the other per-sequence states (past_len), counted in both totals.
    """

    context: int
    hybrid_bytes: int
    dense_bytes: int
    extra_bytes: int = 0

    @property
    def saved_bytes(self) -> int:
        return self.dense_bytes - self.hybrid_bytes

    @property
    def ratio(self) -> float:
        """hybrid / dense (1.0 when nothing is saved)."""
        return self.hybrid_bytes / self.dense_bytes if self.dense_bytes else 1.0


def cache_bytes(cache: CacheState, context: int) -> int:
    """Bytes one cache tensor (one layer's key or value, batch 1) holds after `context` tokens."""
    rows = context if cache.slots is None else cache.slots
    return cache.kv_heads * cache.head_dim * rows * bytes_per_element(cache.elem_type)


def state_memory_per_sequence(caches: Iterable[CacheState], context: int, extra_bytes: int = 0) -> StateMemory:
    """State memory of one sequence at `context` tokens, hybrid vs no lazy layers.

    caches: one CacheState per cache tensor (key and value of every layer), e.g.
    `read_build(OUT).caches`. extra_bytes: other per-sequence state (8 for an int64 past_len).
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    caches = list(caches)
    hybrid = sum(cache_bytes(c, context) for c in caches)
    dense = sum(c.kv_heads * c.head_dim * context * bytes_per_element(c.elem_type) for c in caches)
    return StateMemory(context=context, hybrid_bytes=hybrid + extra_bytes, dense_bytes=dense + extra_bytes,
                       extra_bytes=extra_bytes)


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, one decimal)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
