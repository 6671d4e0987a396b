"""One short adapter per supported architecture; anything else is refused by name.

An adapter reads a transformers config into a ModelSpec and knows the tiny random config used to
test it. All three families share LLaMA's module layout (q/k/v/o_proj, RMSNorm, SwiGLU, RoPE);
they differ in qkv bias (Qwen2) and the original model's sliding window (Mistral).
"""

from dataclasses import dataclass
from typing import Callable

from ltexport.errors import LtexportError
from ltexport.models.spec import ModelSpec

# transformers' model_type -> architecture, for configs without `architectures` (GGUF).
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@dataclass(frozen=True)
class Adapter:
    architecture: str
    config_class: str  # transformers class name
    sliding_window: Callable[[object], int | None]
    tiny_overrides: dict


def _no_window(config) -> int | None:
    return None


def _mistral_window(config) -> int | None:
    return getattr(config, "sliding_window", None)


def _qwen2_window(config) -> int | None:
    return config.sliding_window if getattr(config, "use_sliding_window", False) else None


_TINY_COMMON = dict(
    vocab_size=256, hidden_size=96, intermediate_size=192, num_hidden_layers=4,
    num_attention_heads=6, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)

ADAPTERS = {
    a.architecture: a
    for a in (
        Adapter("LlamaForCausalLM", "LlamaConfig", _no_window, dict(_TINY_COMMON, rope_theta=10000.0)),
        Adapter("MistralForCausalLM", "MistralConfig", _mistral_window, dict(_TINY_COMMON, sliding_window=48)),
        Adapter("Qwen2ForCausalLM", "Qwen2Config", _qwen2_window, dict(_TINY_COMMON, num_attention_heads=4, head_dim=24)),
    )
}


def architecture_of(config) -> str:
    archs = getattr(config, "architectures", None) or []
    if archs:
        return archs[0]
    return _MODEL_TYPES.get(getattr(config, "model_type", ""), f"<model_type {config.model_type!r}>")


def adapter_for(config) -> Adapter:
    arch = architecture_of(config)
    if arch not in ADAPTERS:
        raise LtexportError(
            f"architecture {arch} is not supported; supported: {', '.join(sorted(ADAPTERS))}"
        )
    return ADAPTERS[arch]


def spec_from_config(config) -> ModelSpec:
    adapter = adapter_for(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelSpec(
        architecture=adapter.architecture,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        max_positions=getattr(config, "max_position_embeddings", 0) or 0,
        sliding_window=adapter.sliding_window(config),
    )
