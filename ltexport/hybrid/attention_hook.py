"""The hybrid's attention, plugged into transformers through its attention-function hook.

transformers' attention modules compute q/k/v, RoPE and the output projection themselves and call
the registered attention function for the core. Under the name `ltexport_hybrid`, that core is:
  - lazy layers: `ltexport::sink_window_attention` on the fixed S+W ring,
  - full layers: causal attention over a growing cache,
when the caller passes a `ltexport_cache` (HybridModel does), and plain SDPA otherwise, so the
original model keeps working unchanged with the hook installed.
"""

from dataclasses import dataclass

import torch

from ltexport.hybrid import sink_window  # noqa: F401  (registers torch.ops.ltexport.*)

HOOK_NAME = "ltexport_hybrid"


@dataclass
class LayerCache:
    """One layer's cache in, its present cache out (set by the hook)."""

    past_key: torch.Tensor
    past_value: torch.Tensor
    past_len: torch.Tensor
    lazy: bool
    sink: int
    window: int
    prefill: str
    present: tuple | None = None


def hybrid_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     sliding_window=None, ltexport_cache: LayerCache | None = None, **kwargs):
    if ltexport_cache is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, sliding_window=sliding_window, **kwargs)
    c = ltexport_cache
    scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
    if c.lazy:
        out, k, v = torch.ops.ltexport.sink_window_attention(
            query, key, value, c.past_key, c.past_value, c.past_len, c.sink, c.window, scale, c.prefill)
    else:
        out, k, v = full_attention(query, key, value, c.past_key, c.past_value, c.past_len, scale, sliding_window)
    c.present = (k, v)
    return out.transpose(1, 2), None  # transformers expects [B,T,H,D]


def full_attention(q, k, v, past_key, past_value, past_len, scale, sliding_window=None):
    """Causal attention over [past cache ; new tokens]; the cache grows by T.

    Cache slot j < P holds position j (valid when j < past_len[b], so batch rows may be ragged);
    new token t holds position past_len[b] + t. Softmax in fp32 like the sink+window op.
    """
    past = past_key.shape[2]
    key = torch.cat([past_key, k], dim=2)                               # [B,Hkv,P+T,D]
    value = torch.cat([past_value, v], dim=2)
    steps = torch.arange(q.shape[2], device=q.device)
    slots = torch.arange(key.shape[2], device=q.device)
    new_index = slots - past                                            # >= 0 for new tokens
    is_new = new_index >= 0
    pl = past_len.view(-1, 1, 1)                                        # [B,1,1]
    # And/Or, not where(): ONNX Runtime's CPU Where has no bool-data kernel.
    valid = (is_new & (new_index <= steps.view(-1, 1))) | (~is_new & (slots < pl))   # [B,T,P+T]
    if sliding_window:
        q_pos = pl + steps.view(-1, 1)
        k_pos = torch.where(is_new, pl + new_index, slots)
        valid = valid & (k_pos > q_pos - sliding_window)
    groups = q.shape[1] // k.shape[1]
    kr = key.repeat_interleave(groups, dim=1)
    vr = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, kr.transpose(-1, -2)).float() * scale     # [B,Hq,T,P+T]
    scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    return torch.matmul(probs, vr), key, value


def register_attention(name: str, function) -> None:
    """Register an attention function with transformers, with SDPA's mask under the same name
    (transformers looks both up by the model's attn_implementation)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)


def install(model) -> None:
    """Switch `model` to the hybrid hook (plain SDPA unless a LayerCache is passed)."""
    register_attention(HOOK_NAME, hybrid_attention)
    model.set_attn_implementation(HOOK_NAME)
