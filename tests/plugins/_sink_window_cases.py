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


def cases(*, dtypes, head_dims, configs, gqa=((2, 2), (6, 2)), prefills=("dense", "streaming"),
          seqs=None) -> list[Case]:
    out = []
    for dtype in dtypes:
        for sink, window in configs:
            for hq, hkv in gqa:
                for d in head_dims:
                    for t in (seqs or seq_lens(sink, window)):
                        for rows in past_len_rows(sink, window):
                            for prefill in prefills:
                                out.append(Case(sink, window, hq, hkv, d, t, rows, prefill, dtype))
    return out
