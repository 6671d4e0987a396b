"""Random-weight checkpoints with real model widths (fp16 safetensors + index), written tensor by tensor.

Used by benchmarks/build_7b.py and benchmarks/plan_7b.py (Mistral-7B-Instruct-v0.2's config) and by
the tests (the same widths with 4 layers). The weights measure the toolchain, not a model: each
tensor is a slice of one pool of 2^24 normal values (std = initializer_range) starting at its own
offset and wrapping around, so writing 14.5 GB needs neither 7e9 random draws nor more memory than
one tensor; norms are 1. No tokenizer is written (ltexport then uses UTF-8 bytes as token ids).
"""

import json
import struct
import zlib
from pathlib import Path

# Mistral-7B-Instruct-v0.2's config.json (torch_dtype says what these files hold: float16).
MISTRAL_7B_V02 = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.36.0", "use_cache": True,
    "vocab_size": 32000,
}
SHARD_BYTES = 5 * 10**9  # Hugging Face's default max_shard_size "5GB"
POOL_SIZE = 2**24


def tensor_specs(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every checkpoint tensor, in state-dict order, from a weightless skeleton."""
    import torch
    import transformers

    from ltexport.models.skeleton import empty_model

    cfg = transformers.MistralConfig(**{k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")})
    cfg.architectures = config["architectures"]
    return [(name, tuple(t.shape)) for name, t in empty_model(cfg, torch.float16).state_dict().items()]


def write_checkpoint(directory: Path, config: dict, seed: int = 0) -> int:
    """Sharded fp16 safetensors + index + config.json; returns the bytes of tensor data."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    pool = (torch.randn(POOL_SIZE, generator=generator) * config.get("initializer_range", 0.02)).half()
    shards = _shards(tensor_specs(config))
    weight_map, total = {}, 0
    for index, shard in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        total += _write_shard(directory / file, shard, pool)
        weight_map.update((name, file) for name, _ in shard)
        print(f"  wrote {file}", flush=True)
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return total


def _shards(specs):
    shards, current, size = [], [], 0
    for name, shape in specs:
        nbytes = 2 * _numel(shape)
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    return shards + [current]


def random_tensor(name: str, shape, pool, offset: int):
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.float16)
    n = _numel(shape)
    rolled = torch.cat([pool[offset:], pool[:offset]])
    return rolled.repeat(-(-n // pool.numel()))[:n].reshape(shape)


def _write_shard(path: Path, shard, pool) -> int:
    """safetensors layout: u64 header length, JSON header (offsets into the data), raw data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shard:
        nbytes = 2 * _numel(shape)
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in shard:
            start = zlib.crc32(name.encode()) % pool.numel()
            tensor = random_tensor(name, shape, pool, start).contiguous()
            f.write(memoryview(tensor.view(-1).numpy().view("uint8")))
    return offset


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
