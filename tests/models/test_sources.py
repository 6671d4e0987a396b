import json

import pytest
import torch

from ltexport.errors import LtexportError
from ltexport.models.adapters import ADAPTERS
from ltexport.models.sources import SMOLLM2_FILE, TINY_MODELS, recipe_names, resolve


def test_every_adapter_has_a_tiny_model():
    assert sorted(TINY_MODELS.values()) == sorted(ADAPTERS)


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_models_are_seeded_and_small(name, tiny_models):
    source, model = tiny_models[name]
    spec = source.spec()
    assert spec.architecture == TINY_MODELS[name]
    assert spec.num_layers == 4 and spec.num_kv_heads < spec.num_heads  # GQA
    again = resolve(name).load_model()
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_tiny_mistral_has_sliding_window_and_qwen2_has_qkv_bias(tiny_models):
    assert tiny_models["tiny-mistral"][0].spec().sliding_window == 48
    assert tiny_models["tiny-qwen2"][1].model.layers[0].self_attn.q_proj.bias is not None


def test_smollm2_builtin_reads_config_without_weights():
    source = resolve("smollm2")
    spec = source.spec()
    assert source.gguf_file == SMOLLM2_FILE
    assert (spec.architecture, spec.num_layers, spec.num_kv_heads, spec.head_dim) == ("LlamaForCausalLM", 30, 3, 64)


def test_gguf_file_path_is_a_source():
    builtin = resolve("smollm2")
    source = resolve(str(builtin.path / SMOLLM2_FILE))
    assert source.kind == "gguf" and source.spec() == builtin.spec()


def test_local_hf_directory_round_trips(tmp_path, tiny_models):
    _, model = tiny_models["tiny-qwen2"]
    model.save_pretrained(tmp_path)
    source = resolve(str(tmp_path))
    assert source.kind == "hf-dir"
    loaded = source.load_model()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)


def test_hf_directory_without_safetensors_is_refused(tmp_path, tiny_models):
    _, model = tiny_models["tiny-llama"]
    model.config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(LtexportError, match="never unpickles"):
        resolve(str(tmp_path)).load_model()


def test_unsupported_architecture_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(LtexportError, match="GPT2LMHeadModel is not supported"):
        resolve(str(tmp_path)).spec()


@pytest.mark.parametrize("name", ["mistral", "llama3", "qwen2"])
def test_recipes_resolve_through_the_hf_cache(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert name in recipe_names()
    with pytest.raises(LtexportError, match="huggingface-cli download"):
        resolve(name)


@pytest.mark.parametrize("name, message", [
    ("no-such-model", "unknown model"),
    ("./missing/model.gguf", "does not exist"),
])
def test_bad_model_names(name, message):
    with pytest.raises(LtexportError, match=message):
        resolve(name)


def test_directory_without_config(tmp_path):
    with pytest.raises(LtexportError, match="no config.json"):
        resolve(str(tmp_path))


def _fake_hf_cache(cache, repo_id, model):
    """The hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    model.save_pretrained(root / "snapshots" / commit)


def test_model_found_in_the_local_hf_cache(tmp_path, monkeypatch, tiny_models):
    _fake_hf_cache(tmp_path, "acme/tiny-llama", tiny_models["tiny-llama"][1])
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    source = resolve("acme/tiny-llama")
    assert source.kind == "hf-dir" and source.spec().architecture == "LlamaForCausalLM"
