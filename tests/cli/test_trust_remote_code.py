"""--trust-remote-code reaches transformers in every command that loads a model.

The model is tiny-llama's weights in a directory whose config.json names its own config class
(`auto_map` -> custom_llama.CustomLlamaConfig, a model_type transformers does not know), as Hub
models with custom code do: without the flag transformers refuses to run that code; with it the
config is the custom class. Nothing here is mocked.
"""

import json

import pytest
import transformers.dynamic_module_utils

from ltexport.errors import LtexportError
from ltexport.models.sources import resolve
from ltexport.plan.schema import Plan, save_plan
from tests.conftest import assert_user_error, run_cli

CUSTOM_CODE = '''from transformers import LlamaConfig


class CustomLlamaConfig(LlamaConfig):
    model_type = "ltexport-custom-llama"
    custom_code_ran = True
'''
SMALL = ["--sink", "2", "--window", "14", "--calib-tokens", "256"]  # a directory gets 7B-sized defaults
FAST_EVAL = ["--contexts", "450", "--depths", "0.5", "--ppl-tokens", "24"]


def _byte_tokenizer(path):
    """A byte-level BPE tokenizer without merges: 256 ids, like the tiny models' vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(path)


@pytest.fixture(scope="module")
def remote_model(tmp_path_factory, tiny_models):
    """The model directory; transformers copies its code into a private modules cache."""
    tmp = tmp_path_factory.mktemp("remote")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_MODULES_CACHE", str(tmp / "modules"))  # bench's worker processes read this
        mp.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp / "modules"))
        model_dir = tmp / "custom-llama"
        tiny_models["tiny-llama"][1].save_pretrained(model_dir)
        (model_dir / "custom_llama.py").write_text(CUSTOM_CODE)
        config = json.loads((model_dir / "config.json").read_text())
        config.update(model_type="ltexport-custom-llama", auto_map={"AutoConfig": "custom_llama.CustomLlamaConfig"})
        (model_dir / "config.json").write_text(json.dumps(config))
        _byte_tokenizer(model_dir)
        yield model_dir


@pytest.fixture(scope="module")
def remote_plan(remote_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    spec = resolve(str(remote_model), trust_remote_code=True).spec()
    save_plan(Plan(model=spec.plan_header(), sink=2, window=14, lazy_layers=[1, 2]), path)
    return path


def test_the_source_loads_the_models_own_config_class_only_when_trusted(remote_model):
    with pytest.raises(LtexportError, match="contains custom code.*pass --trust-remote-code"):
        resolve(str(remote_model)).spec()
    source = resolve(str(remote_model), trust_remote_code=True)
    assert type(source.config).__name__ == "CustomLlamaConfig" and source.config.custom_code_ran
    assert source.spec().architecture == "LlamaForCausalLM"
    assert source.describe()["trust_remote_code"] is True


@pytest.mark.parametrize("command", [
    ["plan", "--layers", "1,2"],
    ["plan", "--lazy-fraction", "0.5"],
    ["plan", "--auto", "--max-drop", "5"],
    ["eval", "--lazy-fractions", "0.5"],
    ["build", "--plan", "{plan}"],
    ["bench", "--plan", "{plan}"],
])
def test_without_the_flag_every_command_refuses_the_models_code(remote_model, remote_plan, tmp_path, command):
    args = [str(remote_plan) if a == "{plan}" else a for a in command]
    result = run_cli([*args, "--model", remote_model, "-o", tmp_path / "out"])
    assert_user_error(result, "contains custom code", "pass --trust-remote-code")
    assert not (tmp_path / "out").exists()


def test_plan_auto_passes_the_flag_to_its_evaluation(remote_model, tmp_path):
    out, evidence = tmp_path / "auto.json", tmp_path / "evidence"
    result = run_cli(["plan", "--model", remote_model, "--trust-remote-code", "--auto", "--max-drop", "1000", *SMALL,
                      "--candidates", "0.5", "--eval-contexts", "450", "-o", out, "--eval-output", evidence])
    assert result.exit_code == 0, result.stderr
    source = json.loads((evidence / "eval.json").read_text())["source"]
    assert source["trust_remote_code"] is True and source["path"] == str(remote_model)
    assert json.loads(out.read_text())["metadata"]["auto"]["chosen_fraction"] == 0.5


def test_eval_passes_the_flag(remote_model, remote_plan, tmp_path):
    result = run_cli(["eval", "--model", remote_model, "--trust-remote-code", "--plan", remote_plan,
                      "--lazy-fractions", "0.5", *SMALL, *FAST_EVAL, "--json", "-o", tmp_path / "ev"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"]["trust_remote_code"] is True
    assert [v["name"] for v in doc["variants"]] == ["original", "plan", "lazy-0.5"]


def test_build_records_the_flag_and_validate_asks_for_it_again(remote_model, remote_plan, tmp_path):
    out = tmp_path / "out"
    result = run_cli(["build", "--model", remote_model, "--trust-remote-code", "--plan", remote_plan, "-o", out,
                      "--backend", "ort", "--decode-steps", "2"])
    assert result.exit_code == 0, result.stderr
    info = json.loads((out / "build.json").read_text())
    assert info["trust_remote_code"] is True and info["source"]["trust_remote_code"] is True
    assert_user_error(run_cli(["validate", out]), "was built with --trust-remote-code", "pass --trust-remote-code")
    validated = run_cli(["validate", out, "--trust-remote-code", "--decode-steps", "2"])
    assert validated.exit_code == 0, validated.stderr
    generated = run_cli(["generate", out, "--prompt", "hi", "--max-new-tokens", "3"])  # its tokenizer has no code
    assert generated.exit_code == 0, generated.stderr


def test_bench_passes_the_flag_to_its_workers(remote_model, remote_plan, tmp_path):
    result = run_cli(["bench", "--model", remote_model, "--trust-remote-code", "--plan", remote_plan,
                      "--backend", "torch", "--contexts", "32", "--batches", "1", "--decode-steps", "2",
                      "--json", "-o", tmp_path / "b"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"]["trust_remote_code"] is True
    assert {p["variant"] for p in doc["points"]} == {"hybrid", "no-lazy", "transformers"}
