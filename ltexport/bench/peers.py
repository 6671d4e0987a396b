"""onnxruntime-genai as a peer: its own model builder on the same weights, in two variants.

- genai-full: full attention in every layer;
- genai-windowed: the plan's lazy layers as bounded sliding windows of sink + window tokens and no
  sinks (`layer_types` + `sliding_window` in a copied config, the builder's per-layer hybrid).
The builder reads a plain Hugging Face directory. A GGUF source (SmolLM2) becomes one by copying
its weights into a fresh model built from the same config, without `quantization_config`.
onnxruntime-genai is optional: `pip install onnxruntime-genai onnx_ir onnxscript`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ltexport.errors import LtexportError

INSTALL_HINT = "pip install onnxruntime-genai onnx_ir onnxscript"
PEERS = ("genai-full", "genai-windowed")


def genai_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None


def write_hf_dir(source, out: Path) -> Path:
    """A plain Hugging Face directory with the source's weights (fp32) and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    model = source.load_model("fp32")
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # GGUF-derived: the builder would try to dequantize again
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict(), strict=False)  # tied weights appear once
    fresh.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(str(out))
    if source.kind != "tiny" and source.has_tokenizer():
        source.load_tokenizer().save_pretrained(str(out))
    else:
        _byte_tokenizer(out)  # the builder insists on a tokenizer; the peers are fed token ids anyway
    return out


def _byte_tokenizer(out: Path) -> None:
    """A byte-level Hugging Face tokenizer with 256 ids, for models that ship none (tiny built-ins)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(symbols)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=symbols[1], eos_token=symbols[2]).save_pretrained(str(out))


def windowed_config_dir(hf_dir: Path, plan, out: Path) -> Path:
    """hf_dir's files, with a config whose lazy layers are `sliding_attention` of sink + window."""
    out.mkdir(parents=True, exist_ok=True)
    for item in hf_dir.iterdir():
        if item.name != "config.json" and not (out / item.name).exists():
            (out / item.name).symlink_to(item.resolve())
    config = json.loads((hf_dir / "config.json").read_text())
    config["layer_types"] = ["sliding_attention" if plan.is_lazy(i) else "full_attention" for i in range(plan.num_layers)]
    config["sliding_window"] = plan.sink + plan.window
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out


def build_genai(hf_dir: Path, out: Path, threads: int | None = None, log=print) -> Path:
    """Run onnxruntime-genai's model builder (fp32, CPU) on hf_dir into out."""
    if not genai_available():
        raise LtexportError(f"onnxruntime-genai is not installed; {INSTALL_HINT}")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", hf_dir.name, "-i", str(hf_dir),
           "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(out / "cache")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LtexportError(f"onnxruntime-genai's builder failed on {hf_dir} ({tail[:300]})")
    if threads:
        _set_threads(out / "genai_config.json", threads)
    return out


def _set_threads(config_path: Path, threads: int) -> None:
    config = json.loads(config_path.read_text())
    config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    config_path.write_text(json.dumps(config, indent=1))


def build_peers(source, plan, work: Path, threads: int | None = None, log=print) -> dict[str, Path]:
    """{peer name: genai model directory} for both variants, built under `work`."""
    hf = write_hf_dir(source, work / "hf")
    log("building the onnxruntime-genai peers with its own model builder ...")
    return {"genai-full": build_genai(hf, work / "genai-full", threads, log),
            "genai-windowed": build_genai(windowed_config_dir(hf, plan, work / "hf-windowed"), work / "genai-windowed",
                                          threads, log)}


def genai_windows(model_dir: Path) -> dict[int, int]:
    """{layer: local window} of a genai model's windowed GroupQueryAttention layers."""
    import onnx

    model = onnx.load(str(Path(model_dir) / "model.onnx"), load_external_data=False)
    windows = {}
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention":
            size = next((a.i for a in node.attribute if a.name == "local_window_size"), -1)
            layer = int(node.name.split("layers.")[1].split("/")[0]) if "layers." in node.name else None
            if size > 0 and layer is not None:
                windows[layer] = size
    return windows


class GenaiGraphStep:
    """A genai model's ONNX graph as a step function (ltexport's interface) for `ltexport eval`, run
    by ONNX Runtime the way genai's runtime runs it: one static buffer of max_length slots per cache,
    past and present at once (IOBinding); ORT's windowed GroupQueryAttention requires that. Batch
    rows share one past length (its attention_mask has no other form here)."""

    def __init__(self, model_dir: Path, threads: int | None = None):
        import onnxruntime as ort

        from ltexport.backends.ort.session import make_session

        self._ort = ort
        self.session = make_session(Path(model_dir) / "model.onnx", threads)
        self.cache_inputs = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values")]
        config = json.loads((Path(model_dir) / "genai_config.json").read_text())
        decoder = config["model"]["decoder"]
        self.heads, self.head_dim = decoder["num_key_value_heads"], decoder["head_size"]
        self.capacity = config["search"]["max_length"]

    def empty_caches(self, batch: int) -> list:
        import numpy as np

        return _GenaiCaches([np.zeros((batch, self.heads, self.capacity, self.head_dim), np.float32)
                             for _ in self.cache_inputs], self._ort)

    def __call__(self, input_ids, past_len, caches):
        import numpy as np

        ids = np.asarray(input_ids, dtype=np.int64)
        past = int(np.max(past_len))
        if not isinstance(caches, _GenaiCaches):  # ltexport's flat [k0, v0, k1, ...] (transplanted): full caches
            imported = self.empty_caches(ids.shape[0])
            for name, dst in zip(self.cache_inputs, imported.arrays):  # genai orders all keys, then all values
                _, layer, kind = name.split(".")
                src = caches[2 * int(layer) + (kind == "value")]
                dst[:, :, :src.shape[2]] = src
            caches = imported
        if past + ids.shape[1] > self.capacity:
            raise LtexportError(f"{past + ids.shape[1]} tokens exceed the genai model's max_length {self.capacity}")
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("attention_mask", np.ones((ids.shape[0], past + ids.shape[1]), np.int64))
        for name, value in zip(self.cache_inputs, caches.values):
            io.bind_ortvalue_input(name, value)
            io.bind_ortvalue_output(name.replace("past_key_values", "present"), value)
        io.bind_output("logits", "cpu")
        self.session.run_with_iobinding(io)
        return io.get_outputs()[-1].numpy(), np.asarray(past_len) + ids.shape[1], caches


class _GenaiCaches:
    def __init__(self, arrays, ort):
        self.arrays = arrays
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]

    def __getitem__(self, index):
        return self.arrays[index]
