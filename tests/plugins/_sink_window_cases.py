"""Shared by the kernel tests (GPU and CPU emulation): problem generation and the comparison with the reference op.

The reference is `torch.ops.ltexport.sink_window_attention` (ltexport.hybrid.sink_window), itself tested against
a brute force in tests/hybrid/test_sink_window.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# atol = rtol per dtype: the kernels and the reference both accumulate in fp32 but round differently.
TOLERANCE = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    sink: int
    window: int
    q_heads: int
    kv_heads: int
    head_dim: int
    seq: int
    past_lens: tuple[int, ...]
    prefill: str
    dtype: str

    @property
    def ring(self) -> int:
        return self.sink + self.window

    def id(self) -> str:
        return (f"S{self.sink}W{self.window}-h{self.q_heads}x{self.kv_heads}-d{self.head_dim}-T{self.seq}"
                f"-L{'_'.join(map(str, self.past_lens))}-{self.prefill}-{self.dtype}")


def seq_lens(sink: int, window: int) -> list[int]:
    ring = sink + window
    return sorted({1, 3, ring - 1, 3 * ring} - {0})


def past_len_rows(sink: int, window: int) -> list[tuple[int, ...]]:
    """Batch rows with different histories: empty / partial sinks next to a ring wrapped several times."""
    ring = sink + window
    return [(0, sink + 3 * window + 2), (1, ring - 1, ring), (ring, sink + 7 * window + 1)]


def make_inputs(case: Case, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    b, t, d = len(case.past_lens), case.seq, case.head_dim
    dtype = DTYPES[case.dtype]

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype).to(device)

    query = rand(b, case.q_heads, t, d)
    key, value = rand(b, case.kv_heads, t, d), rand(b, case.kv_heads, t, d)
    # Garbage in never-written slots on purpose: it must never be attended.
    past_key, past_value = rand(b, case.kv_heads, case.ring, d), rand(b, case.kv_heads, case.ring, d)
    past_len = torch.tensor(case.past_lens, dtype=torch.int64, device=device)
    return query, key, value, past_key, past_value, past_len


def scale_of(case: Case) -> float:
    return case.head_dim ** -0.5


def reference(case: Case, inputs):
    """The reference op on CPU in the case dtype."""
    cpu = [t.cpu() for t in inputs]
    return torch.ops.ltexport.sink_window_attention(*cpu, case.sink, case.window, scale_of(case), case.prefill)


def assert_matches(case: Case, got, want) -> None:
    tol = TOLERANCE[DTYPES[case.dtype]]
    out, pk, pv = (t.cpu() for t in (got.output, got.present_key, got.present_value))
    torch.testing.assert_close(out.float(), want[0].float(), atol=tol, rtol=tol, msg=lambda m: f"output: {m}")
    # The ring update is a pure copy: every slot (valid or still garbage) must match exactly.
    assert torch.equal(pk, want[1]), "present_key differs from the reference"
    assert torch.equal(pv, want[2]), "present_value differs from the reference"


CONFIGS = [(2, 3), (0, 4), (3, 1), (0, 1)]  # (sink, window): as in tests/hybrid/test_sink_window.py
BIG_RING = (4, 124)  # long enough for the decode kernel to split the ring across blocks
GQA = [(2, 2), (6, 2)]  # (query heads, kv heads): ratios 1 and 3


def full_matrix(*, dtypes, head_dims, configs=CONFIGS, gqa=GQA, prefills=("dense", "streaming")) -> list[Case]:
    """Every combination (the exhaustive run)."""
    out = []
    for dtype in dtypes:
        for sink, window in configs:
            for hq, hkv in gqa:
                for d in head_dims:
                    for t in seq_lens(sink, window):
                        for rows in past_len_rows(sink, window):
                            for prefill in prefills:
                                out.append(Case(sink, window, hq, hkv, d, t, rows, prefill, dtype))
    return out


def covering_set(*, dtypes, head_dims, configs=CONFIGS, gqa=GQA, prefills=("dense", "streaming")) -> list[Case]:
    """Every (config, GQA, seq, prefill) once; dtype, head_dim and batch rows rotate so each value is still covered."""
    out = []
    for sink, window in configs:
        for hq, hkv in gqa:
            for t in seq_lens(sink, window):
                for prefill in prefills:
                    i = len(out)
                    rows = past_len_rows(sink, window)[i % 3]
                    out.append(Case(sink, window, hq, hkv, head_dims[i % len(head_dims)], t, rows, prefill,
                                    dtypes[i % len(dtypes)]))
    return out


def run_and_check(kernels, case: Case, device: str, *, in_place: bool = False) -> None:
    """in_place: present_* alias past_* (TensorRT's aliased I/O) and must still match."""
    inputs = make_inputs(case, device)
    want = reference(case, inputs)  # first: in place, the kernels overwrite past_key/past_value
    got = kernels.attention(*inputs, sink=case.sink, window=case.window, scale=scale_of(case), prefill=case.prefill,
                            in_place=in_place)
    if in_place:
        if got.output.is_cuda:
            torch.cuda.synchronize()
        assert got.present_key.data_ptr() == inputs[3].data_ptr()
        assert got.present_value.data_ptr() == inputs[4].data_ptr()
    assert_matches(case, got, want)


def load_or_skip(device: str):
    """The kernels built for `device`; skips (not fails) when the toolchain is missing, fails on compile errors."""
    import pytest

    from ltexport.backends.trt.kernels import load_kernels
    from ltexport.errors import LtexportError

    try:
        return load_kernels(device)
    except LtexportError as exc:
        if "build failed" in str(exc):
            raise
        pytest.skip(str(exc))
