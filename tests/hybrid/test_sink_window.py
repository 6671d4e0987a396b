"""The torch reference of ltexport::sink_window_attention against a brute force.

The brute force keeps each batch row's full key/value history, writes the ring token by token,
and applies the mask rule position by position in float64. It shares no code with the op.
"""

import pytest
import torch

from ltexport.errors import LtexportError
from ltexport.hybrid.sink_window import PREFILL_MODES, ring_slot, sink_window_attention

CONFIGS = [(2, 3), (0, 4), (3, 1), (0, 1)]  # (sink, window)
GQA = [(2, 2), (6, 2)]  # (query heads, kv heads): ratios 1 and 3
HEAD_DIM = 4
SCALE = 0.7
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # atol = rtol


def seq_lens(sink, window):
    return sorted({1, 3, sink + window - 1, 3 * (sink + window)} - {0})


def past_len_pairs(sink, window):
    """Two rows with different histories: empty/partial sinks vs. a ring wrapped several times."""
    ring = sink + window
    return [(0, sink + 3 * window + 2), (1, ring - 1), (ring, sink + 7 * window + 1)]


class Row:
    """One batch row: full history + a ring cache written one token at a time."""

    def __init__(self, sink, window, garbage_k, garbage_v):
        self.sink, self.window = sink, window
        self.keys, self.values = [], []  # position -> [Hkv, D]
        self.slot_pos = [None] * (sink + window)  # position held by each slot, None = never written
        self.cache_k, self.cache_v = garbage_k.clone(), garbage_v.clone()  # [Hkv, S+W, D]

    def write(self, k, v):
        pos = len(self.keys)
        slot = pos if pos < self.sink else self.sink + (pos - self.sink) % self.window
        self.keys.append(k)
        self.values.append(v)
        self.slot_pos[slot] = pos
        self.cache_k[:, slot], self.cache_v[:, slot] = k, v

    def step(self, q, k, v, prefill):
        """q [Hq,T,D], k/v [Hkv,T,D] -> float64 output [Hq,T,D]; updates history and ring."""
        start, seq = len(self.keys), q.shape[1]
        available = {p for p in self.slot_pos if p is not None}
        for t in range(seq):
            self.write(k[:, t], v[:, t])
        return torch.stack([self._attend(q[:, t], start, start + t, available, prefill) for t in range(seq)], 1)

    def _attend(self, q, start, p, available, prefill):
        new = set(range(start, p + 1))
        if prefill == "dense":
            keys = sorted(available | new)
        else:
            keys = [j for j in range(p + 1) if j < self.sink or j > p - self.window]
            assert set(keys) <= available | new, "streaming must only need cached keys"
        group = q.shape[0] // self.keys[0].shape[0]
        kv_head = torch.arange(q.shape[0]) // group
        k = torch.stack([self.keys[j] for j in keys]).double()[:, kv_head]  # [n, Hq, D]
        v = torch.stack([self.values[j] for j in keys]).double()[:, kv_head]
        probs = torch.softmax(torch.einsum("hd,nhd->hn", q.double(), k) * SCALE, dim=-1)
        return torch.einsum("hn,nhd->hd", probs, v)

    def valid_slots(self):
        return [s for s, p in enumerate(self.slot_pos) if p is not None]


def make_rows(past_lens, sink, window, hkv, dtype, gen):
    """Rows whose history has the given lengths; returns rows, past_key, past_value."""
    rows = []
    for n in past_lens:
        garbage = torch.randn(2, hkv, sink + window, HEAD_DIM, generator=gen).to(dtype)
        row = Row(sink, window, garbage[0], garbage[1])
        for _ in range(n):
            kv = torch.randn(2, hkv, HEAD_DIM, generator=gen).to(dtype)
            row.write(kv[0], kv[1])
        rows.append(row)
    return rows, torch.stack([r.cache_k for r in rows]), torch.stack([r.cache_v for r in rows])


def new_tokens(batch, hq, hkv, seq, dtype, gen):
    q = torch.randn(batch, hq, seq, HEAD_DIM, generator=gen).to(dtype)
    k, v = torch.randn(2, batch, hkv, seq, HEAD_DIM, generator=gen).to(dtype)
    return q, k, v


def check_step(rows, q, k, v, past_key, past_value, sink, window, prefill):
    """Run the op once, compare with the brute force, return the op's presents."""
    past_len = torch.tensor([len(r.keys) for r in rows])
    out, pk, pv = sink_window_attention(
        q, k, v, past_key, past_value, past_len, sink=sink, window=window, scale=SCALE, prefill=prefill
    )
    tol = TOLERANCE[q.dtype]
    assert out.dtype == q.dtype and out.shape == q.shape and pk.shape == past_key.shape
    for b, row in enumerate(rows):
        expected = row.step(q[b], k[b], v[b], prefill)
        torch.testing.assert_close(out[b].double(), expected, atol=tol, rtol=tol)
        slots = row.valid_slots()  # never-written slots are garbage by contract
        assert torch.equal(pk[b][:, slots], row.cache_k[:, slots])
        assert torch.equal(pv[b][:, slots], row.cache_v[:, slots])
    return pk, pv


@pytest.mark.parametrize("prefill", PREFILL_MODES)
@pytest.mark.parametrize("hq,hkv", GQA)
@pytest.mark.parametrize("sink,window", CONFIGS)
def test_single_call_matches_brute_force(sink, window, hq, hkv, prefill):
    gen = torch.Generator().manual_seed(sink * 100 + window * 10 + hq)
    for past_lens in past_len_pairs(sink, window):
        for seq in seq_lens(sink, window):
            rows, past_key, past_value = make_rows(past_lens, sink, window, hkv, torch.float32, gen)
            q, k, v = new_tokens(2, hq, hkv, seq, torch.float32, gen)
            check_step(rows, q, k, v, past_key, past_value, sink, window, prefill)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prefill", PREFILL_MODES)
def test_half_precision_matches_brute_force(dtype, prefill):
    sink, window = 2, 3
    gen = torch.Generator().manual_seed(7)
    for past_lens in past_len_pairs(sink, window):
        rows, past_key, past_value = make_rows(past_lens, sink, window, 2, dtype, gen)
        q, k, v = new_tokens(2, 6, 2, 4, dtype, gen)
        check_step(rows, q, k, v, past_key, past_value, sink, window, prefill)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prefill", PREFILL_MODES)
@pytest.mark.parametrize("sink,window", [(2, 3), (0, 2), (1, 1)])
def test_prefill_then_decode_chain(sink, window, prefill, dtype):
    """Presents fed back as past over many decode steps that wrap the ring several times."""
    gen = torch.Generator().manual_seed(3)
    rows, past_key, past_value = make_rows((0, 2), sink, window, 2, dtype, gen)
    steps = [sink + window + 2] + [1] * (3 * (sink + window) + 1) + [2, 1]  # prefill, decode, a chunk
    for seq in steps:
        q, k, v = new_tokens(2, 6, 2, seq, dtype, gen)
        past_key, past_value = check_step(rows, q, k, v, past_key, past_value, sink, window, prefill)


def test_dense_decode_also_sees_oldest_window_token():
    """With T=1 dense attends S+W cached keys + itself; streaming drops position p - W."""
    sink, window = 1, 2
    gen = torch.Generator().manual_seed(0)
    rows, pk, pv = make_rows((5,), sink, window, 1, torch.float32, gen)
    q, k, v = new_tokens(1, 1, 1, 1, torch.float32, gen)
    past_len = torch.tensor([5])
    args = (q, k, v, pk, pv, past_len)
    dense = sink_window_attention(*args, sink=sink, window=window, scale=SCALE, prefill="dense")[0]
    stream = sink_window_attention(*args, sink=sink, window=window, scale=SCALE, prefill="streaming")[0]
    assert not torch.allclose(dense, stream)
    # streaming: keys {0, 4, 5}; position 3 is still cached but outside the window
    keys = torch.cat([pk[0, 0, [0, 2]], k[0, 0]])  # slot 0 -> pos 0, slot 2 -> pos 4 (1 + 3 % 2)
    values = torch.cat([pv[0, 0, [0, 2]], v[0, 0]])
    expected = torch.softmax(q[0, 0] @ keys.T * SCALE, -1) @ values
    torch.testing.assert_close(stream[0, 0], expected)


def test_ring_slot_rule():
    assert [ring_slot(j, 2, 3) for j in range(9)] == [0, 1, 2, 3, 4, 2, 3, 4, 2]
    assert [ring_slot(j, 0, 1) for j in range(3)] == [0, 0, 0]


def test_opcheck_fake_kernel_and_schema():
    gen = torch.Generator().manual_seed(1)
    q, k, v = new_tokens(2, 6, 2, 3, torch.float32, gen)
    _, pk, pv = make_rows((0, 4), 1, 2, 2, torch.float32, gen)
    args = (q, k, v, pk, pv, torch.tensor([0, 4]), 1, 2, SCALE, "dense")
    torch.library.opcheck(torch.ops.ltexport.sink_window_attention.default, args)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"sink": -1}, "sink"),
        ({"sink": True}, "sink"),
        ({"window": 0}, "window"),
        ({"window": 2.0}, "window"),
        ({"prefill": "chunked"}, "prefill"),
        ({"past_len": torch.tensor([0, 1], dtype=torch.int32)}, "past_len"),
        ({"past_key": torch.zeros(2, 2, 4, HEAD_DIM)}, "past_key"),
        ({"query": torch.zeros(2, 3, 1, HEAD_DIM)}, "query"),
        ({"key": torch.zeros(2, 2, 1)}, "query/key/value"),
    ],
)
def test_bad_arguments_raise_user_error(change, message):
    args = {
        "query": torch.zeros(2, 4, 1, HEAD_DIM),
        "key": torch.zeros(2, 2, 1, HEAD_DIM),
        "value": torch.zeros(2, 2, 1, HEAD_DIM),
        "past_key": torch.zeros(2, 2, 5, HEAD_DIM),
        "past_value": torch.zeros(2, 2, 5, HEAD_DIM),
        "past_len": torch.tensor([0, 1]),
        "sink": 2,
        "window": 3,
        "scale": 1.0,
        "prefill": "dense",
    }
    args.update(change)
    with pytest.raises(LtexportError, match=message):
        sink_window_attention(**args)
