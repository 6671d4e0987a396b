"""The streaming exporter: weights come from the checkpoint tensor by tensor, not from a loaded model."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from safetensors.torch import load_file, save_file

from ltexport.backends.ort.session import OrtStep
from ltexport.build import export_model
from ltexport.export.weight_data import SOURCE_KEY, TRANSPOSE_KEY
from ltexport.hybrid.model import HybridModel
from ltexport.hybrid.step import TorchStep
from ltexport.models.sources import resolve
from ltexport.plan.schema import Plan, save_plan
from tests.conftest import assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[2]


def tiny_plan(source, lazy=(1, 3)):
    return Plan(model=source.spec().plan_header(), sink=2, window=14, lazy_layers=list(lazy))


def sharded_hf_dir(model, directory: Path, dtype=torch.float16) -> Path:
    """A Hugging Face directory with the weights split over two safetensors files and an index."""
    model.config.save_pretrained(directory)
    tensors = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(directory / file), metadata={"format": "pt"})
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def exported_weights(path: Path) -> dict:
    """checkpoint name -> (array as stored in the graph, permutation applied)."""
    found = {}
    for tensor in onnx.load(str(path)).graph.initializer:
        meta = {m.key: m.value for m in tensor.metadata_props}
        if SOURCE_KEY in meta:
            perm = tuple(int(p) for p in meta[TRANSPOSE_KEY].split(",")) if TRANSPOSE_KEY in meta else None
            found[meta[SOURCE_KEY]] = (numpy_helper.to_array(tensor), perm)
    return found


def test_external_data_holds_the_checkpoint_tensors_converted(tmp_path, tiny_models):
    directory = sharded_hf_dir(tiny_models["tiny-qwen2"][1], tmp_path / "ckpt")  # fp16 on disk, qkv biases
    source = resolve(str(directory))
    out = tmp_path / "out"
    out.mkdir()
    path = export_model(source, tiny_plan(source), "fp32", out)
    checkpoint = {}
    for file in directory.glob("*.safetensors"):
        checkpoint.update(load_file(str(file)))
    weights = exported_weights(path)
    assert set(weights) == set(checkpoint)  # every tensor, each once
    for name, (array, perm) in weights.items():
        want = checkpoint[name].float()
        if perm:
            want = want.permute(perm)
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, want.numpy(), err_msg=name)
    assert weights["model.layers.0.mlp.up_proj.weight"][1] == (1, 0)  # Linear weights stored as W^T
    assert weights["model.layers.0.self_attn.q_proj.bias"][1] is None


def test_tied_embeddings_export_once_and_match_pytorch(tmp_path):
    import transformers

    config = transformers.LlamaConfig(**dict(resolve("tiny-llama").config.to_dict(), tie_word_embeddings=True))
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "ckpt")  # writes embed_tokens only
    source = resolve(str(tmp_path / "ckpt"))
    assert "lm_head.weight" not in source.weights().names()
    out = tmp_path / "out"
    out.mkdir()
    path = export_model(source, tiny_plan(source), "fp32", out)
    assert "model.embed_tokens.weight" in exported_weights(path)
    hybrid = HybridModel(source.load_model("fp32"), tiny_plan(source)).eval()
    ids = np.arange(3, 43).reshape(1, -1)
    ort, ref = OrtStep(path), TorchStep(hybrid)
    o_logits, _, _ = ort(ids, np.array([0]), ort.empty_caches(1))
    r_logits, _, _ = ref(ids, np.array([0]), ref.empty_caches(1))
    np.testing.assert_allclose(o_logits, r_logits, atol=1e-4, rtol=1e-4)


@pytest.fixture
def tokenizerless_dir(tmp_path, tiny_models):
    return sharded_hf_dir(tiny_models["tiny-llama"][1], tmp_path / "ckpt", dtype=torch.float32)


def test_validate_layers_2_gives_a_passing_prefix_report(tmp_path, tokenizerless_dir):
    plan = tmp_path / "plan.json"
    save_plan(tiny_plan(resolve(str(tokenizerless_dir))), plan)
    out = tmp_path / "out"
    result = run_cli(["build", "--model", tokenizerless_dir, "--plan", plan, "-o", out, "--backend", "ort",
                      "--validate-layers", "2", "--decode-steps", "4"])
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    scope = report["scope"]
    assert report["status"] == "pass" and report["greedy"]["tokens_match"]
    assert scope["kind"] == "prefix" and scope["layers"] == 2 and scope["model_layers"] == 4
    assert scope["lazy_layers_validated"] == [1] and scope["weights_identical_to_model_onnx"] is True
    assert scope["prompt"].startswith("utf-8 bytes")  # the directory has no tokenizer
    assert "a prefix" in (out / "report.md").read_text()
    prefix = onnx.load(str(out / "validation" / "model.onnx"), load_external_data=False)
    assert len([i for i in prefix.graph.input if i.name.startswith("past_key_values.")]) == 2 * 2
    assert json.loads((out / "build.json").read_text())["validation_layers"] == 2
    assert run_cli(["validate", out]).exit_code == 0
    assert_user_error(run_cli(["generate", out, "--prompt", "x"]), "without a tokenizer")
    _flip_a_byte_of(out, "model.layers.0.mlp.up_proj.weight")
    assert_user_error(run_cli(["validate", out, "--decode-steps", "1"]), "validation of", "failed")
    report = json.loads((out / "report.json").read_text())
    assert report["scope"]["mismatched_weights"] == ["model.layers.0.mlp.up_proj.weight"]


def _flip_a_byte_of(out: Path, name: str) -> None:
    """Damage one weight of OUT/model.onnx.data (not the validated prefix's copy)."""
    tensor = next(t for t in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.initializer if t.name == name)
    offset = int({e.key: e.value for e in tensor.external_data}["offset"])
    with open(out / "model.onnx.data", "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_disk_preflight_refuses_and_leaves_nothing(tmp_path, monkeypatch, tokenizerless_dir):
    import shutil

    plan = tmp_path / "plan.json"
    save_plan(tiny_plan(resolve(str(tokenizerless_dir))), plan)
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 10**6, 10**6))
    result = run_cli(["build", "--model", tokenizerless_dir, "--plan", plan, "-o", tmp_path / "out", "--backend", "ort"])
    assert_user_error(result, "not enough disk space", "GB free")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no OUT, no staging dir


def test_validate_layers_out_of_range_is_refused(tmp_path, tokenizerless_dir):
    plan = tmp_path / "plan.json"
    save_plan(tiny_plan(resolve(str(tokenizerless_dir))), plan)
    result = run_cli(["build", "--model", tokenizerless_dir, "--plan", plan, "-o", tmp_path / "out",
                      "--validate-layers", "9", "--backend", "ort"])
    assert_user_error(result, "--validate-layers must be auto, all or 1..4")


# Peak from VmHWM, not getrusage: ru_maxrss survives exec, so a child of a big pytest process
# would report its parent's peak. The high-water mark is reset after a warm-up export (imports,
# first trace) so only the measured export counts.
_MEASURE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from ltexport.build import export_model
    from ltexport.models.sources import resolve
    from ltexport.plan.schema import Plan

    def status(key):
        return int(Path("/proc/self/status").read_text().split(key + ":")[1].split()[0]) * 1024

    source = resolve(sys.argv[1])
    plan = Plan(model=source.spec().plan_header(), sink=4, window=60, lazy_layers=[1])
    warm = Plan(model={**plan.model, "num_layers": 2}, sink=4, window=60, lazy_layers=[1])
    export_model(source, warm, "fp32", Path(sys.argv[3]))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        pass  # then the peak may be the warm-up's: growth is overstated, never understated
    before = status("VmRSS")
    export_model(source, plan, "fp32", Path(sys.argv[2]))
    print(json.dumps({"before": before, "peak": status("VmHWM")}))
""")


def test_export_peak_memory_is_bounded_by_a_tensor_not_the_model(tmp_path):
    """~570 MB of fp32 weights (largest tensor 17 MB) exported: the process grows by far less."""
    from ltexport.models.skeleton import empty_model

    import transformers

    config = transformers.LlamaConfig(vocab_size=4096, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
                                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512)
    config.architectures = ["LlamaForCausalLM"]
    ckpt = tmp_path / "ckpt"
    config.save_pretrained(ckpt)
    generator = torch.Generator().manual_seed(0)
    tensors = {k: (torch.randn(v.shape, generator=generator) * 0.02).to(torch.float16)
               for k, v in empty_model(config, torch.float16).state_dict().items()}
    save_file(tensors, str(ckpt / "model.safetensors"))
    model_bytes = sum(t.numel() for t in tensors.values()) * 4  # exported as fp32
    del tensors
    (tmp_path / "out").mkdir()
    (tmp_path / "warm").mkdir()
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(ckpt), str(tmp_path / "out"), str(tmp_path / "warm")],
                          capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    assert (tmp_path / "out" / "model.onnx.data").stat().st_size >= model_bytes
    growth = rss["peak"] - rss["before"]
    assert growth < 0.3 * model_bytes, (growth / 1e6, model_bytes / 1e6)
