"""The lazy-layer attention op `ltexport::sink_window_attention` (torch reference).

A lazy layer keeps a fixed ring cache of S "sink" slots + W "window" slots per kv head.
New token t of batch row b sits at absolute position p = past_len[b] + t.

- streaming: it attends keys j <= p with j < S or j > p - W.
- dense (LightTransfer-Test prefill): it attends every key j <= p still available,
  i.e. the valid ring contents plus the new tokens.
- ring slots follow `ring_slot`; ring slots never written yet hold garbage and are never attended.

The implementation only uses ops with a direct ONNX counterpart, so that
`ltexport.export.sink_window_onnx.make_function` can mirror it node for node:
slot positions come from a closed formula in past_len, the mask from positions, and the
new ring from one gather over concat(old ring, new tokens).
"""

from __future__ import annotations

import torch

from ltexport.errors import LtexportError

PREFILL_MODES = ("dense", "streaming")


def ring_slot(position: int, sink: int, window: int) -> int:
    """Cache slot of absolute `position`: j < S -> j; j >= S -> S + (j - S) mod W."""
    if position < sink:
        return position
    return sink + (position - sink) % window


def slot_positions(length: torch.Tensor, sink: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position held by each ring slot once `length` tokens were written, and whether it is valid.

    length: [B, 1] int64 -> (pos [B, S+W] int64, valid [B, S+W] bool).
    Window slot S+r holds the largest j < length with j >= S and (j - S) mod W == r.
    """
    slot = torch.arange(sink + window, device=length.device).unsqueeze(0)  # [1, S+W]
    last = length - 1 - sink  # [B, 1]: offset of the newest window position (< 0: none)
    # floor-mod (like ONNX Mod fmod=0): the newest offset <= last with offset == r (mod W)
    win_pos = sink + last - torch.remainder(last - (slot - sink), window)  # [B, S+W]
    is_sink = slot < sink
    pos = torch.where(is_sink, slot, win_pos)
    valid = (pos < length) & (is_sink | (pos >= sink))
    return pos, valid


def attention_mask(
    past_len: torch.Tensor, seq: int, sink: int, window: int, dense: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask over keys [ring (S+W), new (T)] and the new ring's gather indices.

    past_len: [B] int64 -> (mask [B, T, S+W+T] bool, src [B, S+W] int64 into concat(ring, new)).
    """
    start = past_len.unsqueeze(1)  # [B, 1]
    q_pos = start + torch.arange(seq, device=past_len.device).unsqueeze(0)  # [B, T]
    ring_pos, ring_valid = slot_positions(start, sink, window)  # [B, S+W]
    k_pos = torch.cat([ring_pos, q_pos], dim=1).unsqueeze(1)  # [B, 1, N]
    k_valid = torch.cat([ring_valid, torch.ones_like(q_pos, dtype=torch.bool)], dim=1).unsqueeze(1)
    q = q_pos.unsqueeze(2)  # [B, T, 1]
    mask = k_valid & (k_pos <= q)
    if not dense:
        mask = mask & ((k_pos < sink) | (k_pos > q - window))
    # new ring: slots whose newest position arrived in this call read the new token, others keep
    new_pos, new_valid = slot_positions(start + seq, sink, window)  # [B, S+W]
    slot = torch.arange(sink + window, device=past_len.device).unsqueeze(0)
    src = torch.where(new_valid & (new_pos >= start), sink + window + new_pos - start, slot)
    return mask, src


def _reference(query, key, value, past_key, past_value, past_len, sink, window, scale, prefill):
    b, hq, t, d = query.shape
    hkv = key.shape[1]
    mask, src = attention_mask(past_len, t, sink, window, prefill == "dense")
    keys = torch.cat([past_key, key], dim=2)  # [B, Hkv, N, D]
    values = torch.cat([past_value, value], dim=2)
    # GQA without copies: query head h = kv_head * G + g reads kv head h // G
    q = query.reshape(b, hkv, hq // hkv, t, d).float()  # [B, Hkv, G, T, D]
    scores = q @ keys.unsqueeze(2).float().transpose(-1, -2) * scale  # [B, Hkv, G, T, N]
    scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ values.unsqueeze(2).float()  # [B, Hkv, G, T, D]
    index = src[:, None, :, None].expand(b, hkv, sink + window, d)  # [B, Hkv, S+W, D]
    present_key = torch.gather(keys, 2, index)
    present_value = torch.gather(values, 2, index)
    return out.reshape(b, hq, t, d).to(query.dtype), present_key, present_value


@torch.library.custom_op("ltexport::sink_window_attention", mutates_args=())
def sink_window_attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    past_key: torch.Tensor,
    past_value: torch.Tensor,
    past_len: torch.Tensor,
    sink: int,
    window: int,
    scale: float,
    prefill: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _reference(query, key, value, past_key, past_value, past_len, sink, window, scale, prefill)


@sink_window_attention_op.register_fake
def _(query, key, value, past_key, past_value, past_len, sink, window, scale, prefill):
    # output like query, presents like the cache: no data-dependent shapes
    return torch.empty_like(query), torch.empty_like(past_key), torch.empty_like(past_value)


def check_config(sink: int, window: int, prefill: str) -> None:
    """Raise LtexportError unless (sink, window, prefill) is a valid lazy-layer configuration."""
    if isinstance(sink, bool) or not isinstance(sink, int) or sink < 0:
        raise LtexportError(f"sink must be an int >= 0, got {sink!r}; fix the plan's 'sink'")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise LtexportError(f"window must be an int >= 1, got {window!r}; fix the plan's 'window'")
    if prefill not in PREFILL_MODES:
        raise LtexportError(f"prefill must be one of {PREFILL_MODES}, got {prefill!r}; fix the plan's prefill")


def _check_shapes(query, key, value, past_key, past_value, past_len, sink, window) -> None:
    # only static dims (heads, head_dim, cache length) are checked: B and T may be symbolic
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise LtexportError("query/key/value must be [batch, heads, seq, head_dim]; reshape before the op")
    cache = (key.shape[1], sink + window, key.shape[3])
    if past_key.shape[1:] != cache or past_value.shape[1:] != cache:
        raise LtexportError(
            f"past_key/past_value must be [batch, {', '.join(map(str, cache))}], got {tuple(past_key.shape)} / "
            f"{tuple(past_value.shape)}; allocate the lazy cache with sink + window slots"
        )
    if query.shape[1] % key.shape[1] or query.shape[3] != key.shape[3]:
        raise LtexportError(
            f"query {tuple(query.shape)} does not fit key {tuple(key.shape)}: query heads must be a "
            "multiple of kv heads with the same head_dim"
        )
    if past_len.dtype != torch.int64 or past_len.dim() != 1:
        raise LtexportError(
            f"past_len must be a [batch] int64 tensor, got {past_len.dtype} {tuple(past_len.shape)}; cast it"
        )


def sink_window_attention(query, key, value, past_key, past_value, past_len, *, sink, window, scale, prefill):
    """Validated entry point; returns (output [B,Hq,T,D], present_key, present_value [B,Hkv,S+W,D])."""
    check_config(sink, window, prefill)
    _check_shapes(query, key, value, past_key, past_value, past_len, sink, window)
    return torch.ops.ltexport.sink_window_attention(
        query, key, value, past_key, past_value, past_len, sink, window, float(scale), prefill
    )
