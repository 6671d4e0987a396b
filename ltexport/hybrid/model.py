"""The hybrid model with an explicit-cache step (gpt-fast style), the reference for compilation.

One `forward` serves prefill (T > 1) and decode (T = 1). It runs the transformers model's own
decoder layers; only the attention core differs, through transformers' attention hook (see
attention_hook.py): lazy layers use `ltexport::sink_window_attention` on a fixed S+W ring, full
layers causal attention over a growing cache. Exporting transformers' DynamicCache fails in
torch.export, hence the explicit caches passed per layer.
"""

import torch
from torch import nn

from ltexport.hybrid.attention_hook import LayerCache, install
from ltexport.models.skeleton import shared_names
from ltexport.plan.schema import Plan


class HybridModel(nn.Module):
    def __init__(self, hf_model, plan: Plan):
        super().__init__()
        install(hf_model)
        decoder = hf_model.get_decoder()
        self.embed_tokens, self.layers, self.norm = decoder.embed_tokens, decoder.layers, decoder.norm
        self.rotary_emb, self.lm_head = decoder.rotary_emb, hf_model.lm_head
        self.plan = plan
        # hybrid parameter name -> its checkpoint name(s): the exporter streams weights by these
        self.source_names = shared_names(hf_model, self)

    @property
    def sliding_windows(self) -> list[int | None]:
        """The original model's own attention window per layer (Mistral, some Qwen2 layers), else None."""
        config = self.layers[0].self_attn.config
        default = getattr(config, "sliding_window", None) if config.model_type == "mistral" else None
        return [getattr(layer.self_attn, "sliding_window", default) for layer in self.layers]

    def forward(self, input_ids, past_len, *past):
        """input_ids [B,T] int64, past_len [B] int64, past: flat caches (see caches.py).
        Returns logits [B,T,V], present_len [B], then the flat present caches."""
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        positions = past_len.unsqueeze(1) + steps                        # [B,T] absolute positions
        h = self.embed_tokens(input_ids)
        rope = self.rotary_emb(h, positions)
        presents = []
        for i, layer in enumerate(self.layers):
            cache = LayerCache(past[2 * i], past[2 * i + 1], past_len, self.plan.is_lazy(i),
                               self.plan.sink, self.plan.window, self.plan.prefill)
            h = layer(h, attention_mask=None, position_embeddings=rope, ltexport_cache=cache)
            presents += cache.present
        logits = self.lm_head(self.norm(h))
        return (logits, past_len + input_ids.shape[1], *presents)
