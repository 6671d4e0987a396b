"""Weights by checkpoint name, one tensor at a time: safetensors files or an in-memory state dict.

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
