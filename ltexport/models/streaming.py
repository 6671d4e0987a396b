"""A model run one piece at a time: each module's fp32 weights are read just before it runs and freed after.

`LayerStream` holds a skeleton (meta parameters, real buffers such as RoPE's inv_freq) and the
checkpoint's weight source. `loaded(part)` fills one part (the embedding, one decoder layer, the
final norm, the LM head) from the checkpoint in fp32 and returns it to meta afterwards, so a forward
pass that keeps only its hidden states needs one layer of weights at a time, not the model.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ltexport.models.skeleton import load_weights, parameter_count, shared_names, unload_weights


@dataclass(frozen=True)
class ModelSizes:
    """Parameter counts from the skeleton (shapes only) and the widths activations scale with."""

    total: int
    layer: int          # the largest decoder layer
    embedding: int
    head: int           # the LM head (the embedding again when tied)
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    num_layers: int

    @property
    def largest_part(self) -> int:
        """Parameters of the largest part a stream holds at once."""
        return max(self.layer, self.embedding, self.head)


def model_sizes(skeleton, config) -> ModelSizes:
    decoder = skeleton.get_decoder()
    attn = decoder.layers[0].self_attn
    return ModelSizes(
        total=parameter_count(skeleton), layer=max(parameter_count(layer) for layer in decoder.layers),
        embedding=decoder.embed_tokens.weight.numel(), head=skeleton.lm_head.weight.numel(),
        hidden=config.hidden_size, intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size),
        heads=config.num_attention_heads, kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=attn.head_dim, vocab=config.vocab_size, num_layers=len(decoder.layers),
    )


class LayerStream:
    """A source's skeleton and weights, one part loaded at a time (see the module doc)."""

    def __init__(self, source):
        self.skeleton = source.skeleton("fp32")
        self.weights = source.weights()
        self.where = str(source.path or source.name)
        self._names = shared_names(self.skeleton, self.skeleton)
        self._module_names = {id(m): name for name, m in self.skeleton.named_modules()}
        self.decoder = self.skeleton.get_decoder()
        self._spare = None  # the last decoder layer's fp32 tensors, refilled by the next layer

    @property
    def num_layers(self) -> int:
        return len(self.decoder.layers)

    def _load(self, module, into) -> None:
        prefix = self._module_names[id(module)]
        load_weights(module, self.weights, torch.float32, self.where, prefix=prefix, names=self._names, into=into)

    @contextmanager
    def loaded(self, module):
        """`module` (a part of the skeleton) with its fp32 weights, back to meta on exit."""
        self._spare = None  # a layer's leftover tensors go before any other part is loaded
        self._load(module, into={})
        try:
            yield module
        finally:
            unload_weights(module)

    @contextmanager
    def layer(self, index: int):
        """Decoder layer `index` with its fp32 weights, copied into the previous layer's tensors (same
        shapes: no new pages to fault in), which are kept for the next layer until another part loads."""
        module = self.decoder.layers[index]
        spare, self._spare = self._spare, None
        self._load(module, into=spare or {})
        del spare
        try:
            yield module
        finally:
            self._spare = unload_weights(module)

    @torch.inference_mode()
    def embed(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Hidden states [1, T, hidden] of each token sequence (the embedding is loaded once)."""
        with self.loaded(self.decoder.embed_tokens) as embedding:
            return [embedding(torch.tensor([ids])) for ids in sequences]

    @torch.inference_mode()
    def rope(self, hidden: torch.Tensor, start: int = 0):
        """RoPE's (cos, sin) for positions start .. start + T - 1 (from real buffers: nothing to load)."""
        positions = torch.arange(start, start + hidden.shape[1]).unsqueeze(0)
        return self.decoder.rotary_emb(hidden, positions)

    @contextmanager
    def head(self):
        """hidden [.., hidden] -> logits [.., vocab] through the final norm and the LM head."""
        with self.loaded(self.decoder.norm) as norm, self.loaded(self.skeleton.lm_head) as lm_head:
            yield lambda hidden: lm_head(norm(hidden))
