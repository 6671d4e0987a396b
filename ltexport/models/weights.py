"""Weights by checkpoint name, one tensor at a time: safetensors files, a .gguf file, or an in-memory state dict.

The exporter and the reference loader ask for one tensor, convert it, write or assign it and drop
it, so their peak memory is one tensor (plus its converted copy), not the model.
"""

import json
from pathlib import Path

from ltexport.errors import LtexportError

INDEX_FILE = "model.safetensors.index.json"


class StateDictWeights:
    """Tensors already in memory (tiny built-ins, dequantized GGUF): small models only."""

    def __init__(self, tensors: dict):
        self._tensors = tensors

    def names(self) -> set[str]:
        return set(self._tensors)

    def get(self, name: str):
        return self._tensors[name]


class SafetensorsWeights:
    """A Hugging Face directory: one `model.safetensors`, or shards listed in the index json."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._files = _tensor_files(self.directory)

    def names(self) -> set[str]:
        return set(self._files)

    def get(self, name: str):
        from safetensors import safe_open

        # A handle per tensor is cheap (it parses a small header) and guarantees no file mapping
        # outlives the tensor, whatever safe_open does inside (0.8 copies out: RSS stays flat).
        with safe_open(str(self._files[name]), framework="pt") as handle:
            return handle.get_tensor(name)


class GGUFWeights:
    """A .gguf file, dequantized one tensor at a time under Hugging Face names.

    The name table is gguf's and the q/k un-permutation transformers' own (what `from_pretrained`
    with `gguf_file` applies to the whole file). The file stays memory-mapped (its header alone
    takes seconds to parse); the pages a tensor touched are released after it, so they do not
    pile up in RSS.
    """

    def __init__(self, path: Path, config):
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, read_field

        self._reader = GGUFReader(str(path))
        arch = read_field(self._reader, "general.architecture")[0]
        heads = {"num_attention_heads": config.num_attention_heads,
                 "num_key_value_heads": getattr(config, "num_key_value_heads", None) or config.num_attention_heads}
        self._processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=heads)
        hf_names = _gguf_to_hf_names(arch, config)
        self._tensors = {hf_names[t.name]: t for t in self._reader.tensors if t.name in hf_names}

    def names(self) -> set[str]:
        return set(self._tensors)

    def get(self, name: str):
        import numpy as np
        import torch
        from gguf import dequantize

        tensor = self._tensors[name]
        data = dequantize(tensor.data, tensor.tensor_type)
        data = self._processor.process(weights=data, name=tensor.name).weights
        out = torch.from_numpy(np.array(data, copy=True))
        self._release_pages()
        return out

    def _release_pages(self) -> None:
        import mmap

        mapping = getattr(self._reader.data, "_mmap", None)
        if mapping is not None and hasattr(mapping, "madvise"):
            mapping.madvise(mmap.MADV_DONTNEED)  # clean file pages: re-read from the page cache if touched again


def _gguf_to_hf_names(arch: str, config) -> dict[str, str]:
    """gguf tensor name -> Hugging Face name, from gguf's name table (the top level of transformers'
    get_gguf_hf_weights_map, which also recurses into every submodule: seconds for nothing here)."""
    import torch
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    from ltexport.models.skeleton import empty_model

    arch_key = next((k for k, v in MODEL_ARCH_NAMES.items() if v == arch), None)
    if arch_key is None:
        raise LtexportError(f"gguf architecture {arch!r} is unknown to the installed gguf package; upgrade gguf")
    table = get_tensor_name_map(arch_key, config.num_hidden_layers)
    names = {}
    for hf_name in empty_model(config, torch.float32).state_dict():
        base, suffix = hf_name.rsplit(".", 1)
        gguf_base = table.get_name(base)
        if gguf_base is not None:
            names[f"{gguf_base}.{suffix}"] = hf_name
    return names


def _tensor_files(directory: Path) -> dict[str, Path]:
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LtexportError(f"{index} is not a safetensors index (no weight_map); re-download the model") from None
        files = {name: directory / file for name, file in weight_map.items()}
        missing = sorted({str(f) for f in files.values() if not f.is_file()})
        if missing:
            raise LtexportError(f"{missing[0]} (listed in {INDEX_FILE}) is missing; re-download the model")
        return files
    shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        raise LtexportError(f"{directory} has no *.safetensors weights; ltexport never unpickles .bin files: convert them to safetensors")
    from safetensors import safe_open

    files = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            files.update((name, shard) for name in handle.keys())
    return files
