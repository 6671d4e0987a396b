"""The LightTransfer lazy ratio (arXiv 2410.13846, Eq. 1), measured through transformers' attention hook.

For each layer: the attention mass that the last Q queries put on the first S keys plus the W most
recent keys (j > p - W, the keys streaming attention would keep), averaged over batch, heads
(GQA expanded) and queries. Each layer is reduced to one number inside the hook, so memory stays
O(heads x Q x context) however many layers there are.
"""

from contextvars import ContextVar

import torch

HOOK_NAME = "ltexport_lazy_ratio"
_collector: ContextVar[dict | None] = ContextVar("ltexport_lazy_ratio", default=None)


def lazy_ratio(query, key, scaling: float, *, sink: int, window: int, last_queries: int,
               sliding_window: int | None = None) -> float:
    """query [B,Hq,L,D], key [B,Hkv,L,D] (RoPE applied) of one layer, no cache, no padding."""
    length = query.shape[2]
    nq = min(last_queries, length)
    groups = query.shape[1] // key.shape[1]
    q = query[:, :, -nq:].float()                                   # [B,Hq,Q,D]
    k = key.float().repeat_interleave(groups, dim=1)                # [B,Hq,L,D]
    scores = (q @ k.transpose(-1, -2)) * scaling                    # [B,Hq,Q,L]
    pos_q = torch.arange(length - nq, length).unsqueeze(1)          # [Q,1]
    pos_k = torch.arange(length).unsqueeze(0)                       # [1,L]
    visible = pos_k <= pos_q
    if sliding_window:  # the original model's own window (Mistral): mass outside it does not exist
        visible &= pos_k > pos_q - sliding_window
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    kept = (pos_k < sink) | (pos_k > pos_q - window)
    return (probs * kept).sum(-1).mean().item()


def _hook(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state = _collector.get()
    if state is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        state["scores"][module.layer_idx] = lazy_ratio(
            query, key, scale, sink=state["sink"], window=state["window"],
            last_queries=state["last_queries"], sliding_window=kwargs.get("sliding_window"),
        )
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


@torch.inference_mode()
def measure_lazy_ratios(model, input_ids, *, sink: int, window: int, last_queries: int) -> list[float]:
    """One forward pass over `input_ids` [1, L]; returns one lazy ratio per layer."""
    from ltexport.hybrid.attention_hook import register_attention

    register_attention(HOOK_NAME, _hook)
    previous = model.config._attn_implementation
    state = {"scores": [None] * model.config.num_hidden_layers, "sink": sink, "window": window,
             "last_queries": last_queries}
    token = _collector.set(state)
    model.set_attn_implementation(HOOK_NAME)
    try:
        # The decoder alone: the LM head over every calibration token would cost vocab x L floats.
        model.get_decoder()(input_ids=input_ids, use_cache=False)
    finally:
        _collector.reset(token)
        model.set_attn_implementation(previous)
    return state["scores"]
