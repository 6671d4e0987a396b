"""The sink+window CUDA kernels on a GPU against the reference op `torch.ops.ltexport.sink_window_attention`.

Builds the kernels with nvcc for the local GPU (cached, see ltexport.backends.trt.kernels) and compares output and
ring update for: ring wrap (past_len several times S+W), S = 0, W = 1, batch rows with different past_len,
GQA 1 and 3, both prefill modes, fp32/fp16/bf16, T in {1, 3, S+W-1, 3(S+W)}, several head dims (incl. the
8-dims-per-lane and odd-size paths), plus a long ring that makes the decode kernel split the cache across blocks.
"""

import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("ltexport.hybrid.sink_window")  # registers torch.ops.ltexport.sink_window_attention
sys.path.insert(0, str(Path(__file__).parent))
import _sink_window_cases as sw  # noqa: E402

DTYPES = ["fp32", "fp16", "bf16"]
CASES = sw.full_matrix(dtypes=DTYPES, head_dims=[64, 96, 128, 256, 7], configs=sw.CONFIGS + [sw.BIG_RING])


@pytest.fixture(scope="module")
def kernels():
    return sw.load_or_skip("cuda")


@pytest.mark.parametrize("case", CASES, ids=sw.Case.id)
def test_kernels_match_reference(kernels, case):
    sw.run_and_check(kernels, case, "cuda")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq", [1, 7, 600])
def test_realistic_shapes(kernels, dtype, seq):
    """Llama-3-8B-like heads (32 q / 8 kv, D=128) with a 1024-slot ring, rows before/after wrapping."""
    case = sw.Case(4, 1020, 32, 8, 128, seq, (0, 1023, 5000), "streaming", dtype)
    sw.run_and_check(kernels, case, "cuda")
    sw.run_and_check(kernels, sw.Case(**{**case.__dict__, "prefill": "dense"}), "cuda")


@pytest.mark.parametrize("seq", [1, 5])
def test_in_place_update_matches(kernels, seq):
    case = sw.Case(4, 124, 6, 2, 128, seq, (3, 130, 700), "streaming", "fp16")
    sw.run_and_check(kernels, case, "cuda", in_place=True)


def test_decode_steps_match_one_prefill(kernels):
    """Token-by-token decode through the kernels reproduces a streaming prefill of the same tokens."""
    sink, window, steps = 2, 6, 20
    base = sw.Case(sink, window, 4, 2, 64, steps, (0,), "streaming", "fp32")
    q, k, v, pk, pv, pl = sw.make_inputs(base, "cuda")
    whole = kernels.attention(q, k, v, pk, pv, pl, sink=sink, window=window, scale=sw.scale_of(base), prefill="streaming")
    ring_k, ring_v = pk.clone(), pv.clone()
    outs = []
    for t in range(steps):
        step = kernels.attention(q[:, :, t:t + 1].contiguous(), k[:, :, t:t + 1].contiguous(),
                                 v[:, :, t:t + 1].contiguous(), ring_k, ring_v, torch.tensor([t], device="cuda"),
                                 sink=sink, window=window, scale=sw.scale_of(base), prefill="streaming")
        ring_k, ring_v = step.present_key, step.present_value
        outs.append(step.output)
    torch.testing.assert_close(torch.cat(outs, dim=2), whole.output, atol=2e-5, rtol=2e-5)
    assert torch.equal(ring_k, whole.present_key) and torch.equal(ring_v, whole.present_value)
