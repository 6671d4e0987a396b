"""The CUDA kernel source, run on CPU threads (plugins/tests/cpu_emulation.h), against the reference op.

This checks the kernels' indexing, masking, ring update, split-KV combine and online softmax on machines
without a GPU. It cannot show GPU-only problems (races the emulation serialises, timing, memory limits):
tests/plugins/test_kernels_gpu.py runs the same cases on a GPU.
"""

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ltexport.hybrid.sink_window")  # registers torch.ops.ltexport.sink_window_attention
sys.path.insert(0, str(Path(__file__).parent))
import _sink_window_cases as sw  # noqa: E402

from ltexport.errors import LtexportError  # noqa: E402

DTYPES = ["fp32", "fp16", "bf16"]
# 7 and 33: odd sizes (scalar staging paths); 130: the 8-dims-per-lane kernels; 40/64: the common ones.
QUICK = sw.covering_set(dtypes=DTYPES, head_dims=[8, 40, 130, 7, 64, 33], configs=sw.CONFIGS + [sw.BIG_RING])
QUICK = [c for c in QUICK if not (c.ring > 100 and c.seq > 3)]  # keep the default run short
FULL = sw.full_matrix(dtypes=DTYPES, head_dims=[8, 40, 130])


@pytest.fixture(scope="module")
def kernels():
    return sw.load_or_skip("cpu")


@pytest.mark.parametrize("case", QUICK, ids=sw.Case.id)
def test_kernels_match_reference(kernels, case):
    sw.run_and_check(kernels, case, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("case", FULL, ids=sw.Case.id)
def test_kernels_match_reference_full(kernels, case):
    sw.run_and_check(kernels, case, "cpu")


@pytest.mark.parametrize("seq", [1, 5])
def test_in_place_update_matches(kernels, seq):
    """present_* aliasing past_* (TensorRT's aliased I/O) gives the same output and ring."""
    case = sw.Case(4, 124, 6, 2, 16, seq, (3, 130, 700), "streaming", "fp16")
    sw.run_and_check(kernels, case, "cpu", in_place=True)


def test_workspace_covers_smaller_batches(kernels):
    for dtype, d, ring in (("float16", 128, 1024), ("float32", 256, 4096), ("bfloat16", 64, 128)):
        sizes = [kernels.workspace_size(dtype, b, 32, 8, 4, ring - 4, d) for b in range(1, 65)]
        assert sizes[0] > 0, "batch 1 splits the ring and needs a workspace"
        assert all(sizes[-1] >= s for s in sizes) and sizes == sorted(sizes)
        assert kernels.workspace_size(dtype, 1024, 32, 8, 4, ring - 4, d) == sizes[-1]


@pytest.mark.parametrize("change, message", [
    (dict(head_dim=300), "head_dim must be in 1..256"),
    (dict(q_heads=5), "multiple of kv_heads"),
])
def test_kernel_rejects_bad_arguments(kernels, change, message):
    case = sw.Case(2, 3, change.get("q_heads", 2), 2, change.get("head_dim", 8), 3, (0, 4), "dense", "fp32")
    with pytest.raises(LtexportError, match=message):
        kernels.attention(*sw.make_inputs(case, "cpu"), sink=2, window=3, scale=1.0)


def test_harness_rejects_inconsistent_tensors(kernels):
    case = sw.Case(2, 3, 2, 2, 8, 3, (0, 4), "dense", "fp32")
    q, k, v, pk, pv, pl = sw.make_inputs(case, "cpu")
    with pytest.raises(LtexportError, match="shapes"):
        kernels.attention(q, k, v, pk[:, :, :4].contiguous(), pv[:, :, :4].contiguous(), pl, sink=2, window=3, scale=1.0)
    with pytest.raises(LtexportError, match="int64"):
        kernels.attention(q, k, v, pk, pv, pl.int(), sink=2, window=3, scale=1.0)
    with pytest.raises(LtexportError, match="dtype"):
        kernels.attention(q.double(), k, v, pk, pv, pl, sink=2, window=3, scale=1.0)
    assert torch.equal(pk, sw.make_inputs(case, "cpu")[3])  # nothing was written on refusal
