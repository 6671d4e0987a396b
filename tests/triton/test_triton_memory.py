"""state_memory_per_sequence: hybrid vs no-lazy cache bytes, from graph shapes + plan."""

import pytest
from onnx import TensorProto
from triton_synth import HD, KV, SINK, WINDOW, make_build

from ltexport.triton import CacheState, cache_bytes, read_build, state_memory_per_sequence
from ltexport.triton.memory import format_bytes


def caches(num_layers, lazy, kv, hd, slots, elem_type):
    return [CacheState(i, k, f"past_key_values.{i}.{k}", f"present.{i}.{k}", elem_type, kv, hd,
                       slots if i in lazy else None)
            for i in range(num_layers) for k in ("key", "value")]


@pytest.mark.parametrize("dtype, nbytes", [("fp32", 4), ("fp16", 2)])
def test_synthetic_build_by_hand(tmp_path, dtype, nbytes):
    io = read_build(make_build(tmp_path / "out", dtype=dtype, lazy=(1, 3)))
    ctx = 100
    m = state_memory_per_sequence(io.caches, ctx, extra_bytes=8)
    row = KV * HD * nbytes
    # 2 full layers x (key, value) x ctx rows + 2 lazy layers x (key, value) x (S+W) rows
    assert m.hybrid_bytes == 2 * 2 * ctx * row + 2 * 2 * (SINK + WINDOW) * row + 8
    assert m.dense_bytes == 4 * 2 * ctx * row + 8
    assert m.saved_bytes == 2 * 2 * (ctx - SINK - WINDOW) * row
    assert cache_bytes(io.caches[0], ctx) == ctx * row


def test_smollm2_like_numbers():
    # 30 layers, 3 kv heads, head_dim 64, fp16, a quarter lazy with sink 4 + window 1020
    cs = caches(30, set(range(22, 30)), 3, 64, 1024, TensorProto.FLOAT16)
    m = state_memory_per_sequence(cs, 32768)
    row = 3 * 64 * 2
    assert m.dense_bytes == 30 * 2 * 32768 * row == 754974720  # 720 MiB
    assert m.hybrid_bytes == 22 * 2 * 32768 * row + 8 * 2 * 1024 * row
    assert format_bytes(m.dense_bytes) == "720.0 MiB"
    assert round(m.ratio, 3) == round((22 * 32768 + 8 * 1024) / (30 * 32768), 3)


def test_short_context_costs_the_full_ring_buffer():
    cs = caches(2, {1}, 1, 8, 16, TensorProto.FLOAT)
    m = state_memory_per_sequence(cs, 4)
    assert m.hybrid_bytes == 2 * 4 * 8 * 4 + 2 * 16 * 8 * 4  # lazy layer holds S+W rows from the start
    assert m.hybrid_bytes > m.dense_bytes
    assert state_memory_per_sequence([], 10).ratio == 1.0
    with pytest.raises(ValueError):
        state_memory_per_sequence(cs, -1)


def test_bf16_and_format():
    cs = caches(1, set(), 1, 1, None, TensorProto.BFLOAT16)
    assert state_memory_per_sequence(cs, 10).hybrid_bytes == 2 * 10 * 2
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
