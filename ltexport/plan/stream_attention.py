"""Attention for layer-streamed passes: any sink/window visibility rule, memory O(chunk x keys).

A streamed pass calls one transformers decoder layer at a time and passes `ltexport_stream=
StreamCall(...)`; transformers hands it to the attention function registered here (HOOK_NAME),
which attends by absolute positions:

- query p sees key j when j <= p and (j > p - window or j < sink); window None: every j <= p;
- full layers also apply the original model's own sliding window (Mistral v0.1, Qwen2 sliding
  layers), lazy layers do not: the hybrid's sink+window op ignores it;
- queries may start after position 0 (`start`): the keys before them come from `prefix`
  (another stream's keys at the same layer, e.g. the original model's prompt);
- queries run in chunks through SDPA with an explicit mask over only the keys the chunk can see,
  so 4096 tokens x 32 heads never materialise a [32, 4096, 4096] score matrix (plain causal
  attention goes to SDPA's causal kernel, which does not either).
"""

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

HOOK_NAME = "ltexport_streamed"
QUERY_CHUNK = 256


@dataclass(frozen=True)
class Visibility:
    """Which keys query position p sees: j <= p, and j > p - window or j < sink (window None: all)."""

    window: int | None = None
    sink: int = 0

    def mask(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """q_pos [Q], k_pos [K] -> bool [Q, K]."""
        q, k = q_pos.unsqueeze(1), k_pos.unsqueeze(0)
        visible = k <= q
        if self.window is not None:
            visible &= (k > q - self.window) | (k < self.sink)
        return visible


CAUSAL = Visibility()


@dataclass
class StreamCall:
    """What one layer call of a streamed pass asks of its attention (passed as `ltexport_stream`)."""

    start: int = 0                          # absolute position of the first query
    rules: list = field(default_factory=lambda: [(None, CAUSAL)])  # (end position or None, rule for queries before it)
    lazy: bool = False                      # False: a full layer, causal (within the model's own window)
    prefix: tuple | None = None             # (key, value) [1,Hkv,start,D] of the positions before `start`
    capture: bool = False                   # keep this call's (key, value) in `kv`
    on_qk: Callable | None = None           # on_qk(module, query, key, scale, sliding_window), e.g. the lazy ratio
    kv: tuple | None = None


def streamed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                       sliding_window=None, ltexport_stream: StreamCall | None = None, **kwargs):
    if ltexport_stream is None:  # an ordinary forward of the same model
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, sliding_window=sliding_window, **kwargs)
    call = ltexport_stream
    scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
    if call.on_qk is not None:
        call.on_qk(module, query, key, scale, sliding_window)
    if call.prefix is not None:
        key = torch.cat([call.prefix[0], key], dim=2)
        value = torch.cat([call.prefix[1], value], dim=2)
    if call.capture:
        call.kv = (key, value)
    outputs, begin = [], call.start
    for end, rule in call.rules:
        end = call.start + query.shape[2] if end is None else min(end, call.start + query.shape[2])
        if end > begin:
            if sliding_window and not call.lazy:  # full layers: causal within the model's own window
                rule = Visibility(window=sliding_window)
            q = query[:, :, begin - call.start:end - call.start]
            outputs.append(attend(q, key, value, scale, begin, rule))
        begin = max(begin, end)
    return torch.cat(outputs, dim=2).transpose(1, 2), None  # transformers expects [B,T,H,D]


def attend(query, key, value, scale: float, q_start: int, rule: Visibility, chunk: int = QUERY_CHUNK):
    """query [1,Hq,Q,D] at positions q_start.., key/value [1,Hkv,K,D] at positions 0.. -> [1,Hq,Q,D]."""
    n_q = query.shape[2]
    if rule.window is None and q_start == 0 and n_q == key.shape[2]:
        return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=True)
    outputs = []
    for c0 in range(0, n_q, chunk):
        p0, p1 = q_start + c0, q_start + min(n_q, c0 + chunk)
        k_pos = _visible_keys(rule, p0, p1)
        mask = rule.mask(torch.arange(p0, p1), k_pos)
        outputs.append(F.scaled_dot_product_attention(
            query[:, :, c0:c0 + chunk], key[:, :, k_pos], value[:, :, k_pos], attn_mask=mask, scale=scale,
            enable_gqa=True))
    return torch.cat(outputs, dim=2)


def _visible_keys(rule: Visibility, p0: int, p1: int) -> torch.Tensor:
    """Positions any query in [p0, p1) can see: the sink, then the window of the first query onward."""
    low = 0 if rule.window is None else max(0, p0 - rule.window + 1)
    return torch.cat([torch.arange(min(rule.sink, low)), torch.arange(low, p1)])


def install(model) -> None:
    from ltexport.hybrid.attention_hook import register_attention

    register_attention(HOOK_NAME, streamed_attention)
    model.set_attn_implementation(HOOK_NAME)
