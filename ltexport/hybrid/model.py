"""The hybrid model with an explicit-cache step (gpt-fast style), the reference for compilation.

One `forward` serves prefill (T > 1) and decode (T = 1). It reuses the transformers model's own
modules (embeddings, norms, projections, RoPE, MLP) and replaces only the attention core: lazy
layers call `ltexport::sink_window_attention` on a fixed S+W ring, full layers keep causal
attention over a growing cache. Exporting transformers' DynamicCache fails in torch.export, hence
the explicit caches.
"""

import torch
from torch import nn

from ltexport.hybrid import sink_window  # noqa: F401  (registers torch.ops.ltexport.*)
from ltexport.plan.schema import Plan


class HybridModel(nn.Module):
    def __init__(self, hf_model, plan: Plan):
        super().__init__()
        decoder = hf_model.get_decoder()
        self.embed_tokens, self.layers, self.norm = decoder.embed_tokens, decoder.layers, decoder.norm
        self.rotary_emb, self.lm_head = decoder.rotary_emb, hf_model.lm_head
        self.plan = plan
        self.sliding_windows = [_sliding_window(hf_model.config, layer.self_attn) for layer in self.layers]

    def forward(self, input_ids, past_len, *past):
        """input_ids [B,T] int64, past_len [B] int64, past: flat caches (see caches.py).
        Returns logits [B,T,V], present_len [B], then the flat present caches."""
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        positions = past_len.unsqueeze(1) + steps                        # [B,T] absolute positions
        h = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(h, positions)
        presents = []
        for i, layer in enumerate(self.layers):
            attn, key, value = self._attention(i, layer.self_attn, layer.input_layernorm(h), cos, sin,
                                               past_len, past[2 * i], past[2 * i + 1])
            presents += [key, value]
            h = h + attn
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        logits = self.lm_head(self.norm(h))
        return (logits, past_len + input_ids.shape[1], *presents)

    def _attention(self, i, attn, x, cos, sin, past_len, past_key, past_value):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        batch, steps, _ = x.shape
        shape = (batch, steps, -1, attn.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)                  # [B,Hq,T,D]
        k = attn.k_proj(x).view(shape).transpose(1, 2)                  # [B,Hkv,T,D]
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if self.plan.is_lazy(i):
            out, key, value = torch.ops.ltexport.sink_window_attention(
                q, k, v, past_key, past_value, past_len,
                self.plan.sink, self.plan.window, float(attn.scaling), self.plan.prefill)
        else:
            out, key, value = full_attention(q, k, v, past_key, past_value, past_len, attn.scaling,
                                             self.sliding_windows[i])
        out = out.transpose(1, 2).reshape(batch, steps, -1)
        return attn.o_proj(out), key, value


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


def _sliding_window(config, attn) -> int | None:
    # Mistral applies config.sliding_window in every layer; Qwen2 per layer (attn.sliding_window).
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(config, "sliding_window", None) if config.model_type == "mistral" else None
