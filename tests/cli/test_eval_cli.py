"""`ltexport eval` and `ltexport plan --auto` on tiny models: outputs, ORT vs PyTorch, user errors."""

import json

import pytest

from ltexport.plan.schema import load_plan
from tests.conftest import assert_user_error, run_cli

FAST = ["--contexts", "450,600", "--depths", "0.5", "--ppl-tokens", "24"]


@pytest.fixture(scope="module")
def fraction_eval(tmp_path_factory):
    """The in-memory eval of tiny-llama at fractions 0 and 0.5: (eval.json, output directory)."""
    out = tmp_path_factory.mktemp("eval") / "ev"
    result = run_cli(["eval", "--model", "tiny-llama", "--lazy-fractions", "0,0.5", *FAST, "--json", "-o", out])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), out


def test_eval_lazy_fractions_writes_tables_plots_and_plans(fraction_eval):
    doc, out = fraction_eval
    assert doc["settings"]["layer_streamed"] is False and doc["settings"]["passkey_scoring"] == "greedy"
    assert doc["format"] == "ltexport-eval" and [v["name"] for v in doc["variants"]] == ["original", "lazy-0.5"]
    original, hybrid = doc["variants"]
    assert hybrid["lazy_layers"] == load_plan(out / "plan-0.5.json").lazy_layers and len(hybrid["lazy_layers"]) == 2
    assert {c["context"] for c in hybrid["passkey"]["cells"]} == {450, 600}
    assert set(hybrid["perplexity"]) == {"450", "600"} and hybrid["perplexity"]["450"]["tokens"] == 23
    assert set(hybrid["drops"]) >= {"passkey_points", "ppl_percent"} and "drops" not in original
    for name in ("passkey.png", "perplexity.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "| lazy-0.5 | 2 (50%) |" in (out / "eval.md").read_text()


def test_layer_streamed_eval_gives_the_in_memory_results(fraction_eval, tmp_path, monkeypatch):
    """Chosen by itself when the model does not fit (one notice line), and equal to the in-memory eval."""
    monkeypatch.setattr("ltexport.preflight.available_memory", lambda: 1.0e9)  # in memory: > 60% of 1 GB
    result = run_cli(["eval", "--model", "tiny-llama", "--lazy-fractions", "0,0.5", *FAST, "--json", "-o", tmp_path / "ev"])
    assert result.exit_code == 0, result.stderr
    assert sum("evaluating: the whole model needs" in line for line in result.stderr.splitlines()) == 1
    doc, want = json.loads(result.stdout), fraction_eval[0]
    assert doc["settings"]["layer_streamed"] is True and doc["settings"]["passkey_scoring"] == "teacher-forced"
    assert [v["lazy_layers"] for v in doc["variants"]] == [v["lazy_layers"] for v in want["variants"]]
    for got, ref in zip(doc["variants"], want["variants"]):
        assert got["backend"] == "torch-streamed"
        for context, scores in ref["perplexity"].items():
            assert got["perplexity"][context]["ppl"] == pytest.approx(scores["ppl"], rel=1e-4)
            assert got["perplexity"][context]["tokens"] == scores["tokens"]
        assert [c["correct"] for c in got["passkey"]["cells"]] == [c["correct"] for c in ref["passkey"]["cells"]]
        assert [c["key"] for c in got["passkey"]["cells"]] == [c["key"] for c in ref["passkey"]["cells"]]


@pytest.fixture
def tiny_build(tiny_llama_build):
    return tiny_llama_build


def test_onnx_build_gives_the_pytorch_reference_results(tiny_build, tmp_path):
    plan, build = tiny_build
    result = run_cli(["eval", "--model", "tiny-llama", "--plan", plan, "--build", build, *FAST, "--json", "-o", tmp_path / "e"])
    assert result.exit_code == 0, result.stderr
    _, torch_v, ort_v = json.loads(result.stdout)["variants"]
    assert (torch_v["backend"], ort_v["backend"]) == ("torch", "ort")
    assert [c["output"] for c in ort_v["passkey"]["cells"]] == [c["output"] for c in torch_v["passkey"]["cells"]]
    for context in ("450", "600"):
        assert ort_v["perplexity"][context]["ppl"] == pytest.approx(torch_v["perplexity"][context]["ppl"], rel=1e-4)


def test_auto_plan_records_its_evidence_and_streams_to_the_same_choice(tmp_path):
    args = ["plan", "--model", "tiny-llama", "--auto", "--max-drop", "1000", "--candidates", "0.25,0.5",
            "--eval-contexts", "450"]
    out = tmp_path / "auto.json"
    result = run_cli([*args, "-o", out, "--eval-output", tmp_path / "evidence"])
    assert result.exit_code == 0, result.stderr
    plan = load_plan(out)
    auto = plan.metadata["auto"]
    assert auto["chosen_fraction"] == 0.5 and len(plan.lazy_layers) == 2
    assert [c["lazy_fraction"] for c in auto["candidates"]] == [0.25, 0.5]
    assert all(c["within"] for c in auto["candidates"]) and "rule" in auto
    assert "(chosen)" in result.stdout and (tmp_path / "evidence" / "eval.json").is_file()
    streamed = run_cli([*args, "--stream-layers", "-o", tmp_path / "streamed.json"])
    assert streamed.exit_code == 0, streamed.stderr
    other = load_plan(tmp_path / "streamed.json")
    assert other.lazy_layers == plan.lazy_layers and other.scores == pytest.approx(plan.scores, abs=1e-5)
    ppl = [[c["ppl"]["450"] for c in p.metadata["auto"]["candidates"]] for p in (plan, other)]
    assert ppl[1] == pytest.approx(ppl[0], rel=1e-4)
    assert other.metadata["auto"]["settings"]["layer_streamed"] is True


@pytest.mark.parametrize("args, fragments", [
    (["--build", "nowhere", "--stream-layers"], ["cannot be evaluated layer by layer"]),
    (["--contexts", "450"], ["nothing to compare", "--lazy-fractions"]),
    (["--lazy-fractions", "0"], ["nothing to compare"]),
    (["--lazy-fractions", "0.5", "--contexts", "a,b"], ["--contexts must be comma-separated integers"]),
    (["--lazy-fractions", "0.5", "--contexts", "2000"], ["exceeds the model's 1024 positions"]),
    (["--lazy-fractions", "0.5", "--contexts", "300"], ["too short"]),
    (["--lazy-fractions", "0.5", "--contexts", "450", "--ppl-tokens", "400"], ["--ppl-tokens must be between"]),
    (["--lazy-fractions", "0.5", "--depths", "0.5,1.5"], ["--depths values must be in"]),
    (["--lazy-fractions", "1.5"], ["--lazy-fractions values must be in"]),
    (["--lazy-fractions", "0.5", "--contexts", "450", "--window", "1000"], ["no context exceeds sink + window"]),
    (["--plan", "missing.json"], ["plan file missing.json does not exist"]),
    (["--build", "nowhere"], ["not an ltexport build directory"]),
])
def test_bad_eval_arguments(tmp_path, args, fragments):
    result = run_cli(["eval", "--model", "tiny-llama", *args, "-o", tmp_path / "out"], cwd=tmp_path)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_eval_plan_for_another_model(tmp_path):
    plan = tmp_path / "p.json"
    assert run_cli(["plan", "--model", "tiny-qwen2", "--layers", "1", "-o", plan]).exit_code == 0
    assert_user_error(run_cli(["eval", "--model", "tiny-llama", "--plan", plan, "-o", tmp_path / "o"]), "run `ltexport plan`")


def test_eval_refuses_to_replace_an_unrelated_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run_cli(["eval", "--model", "tiny-llama", "--lazy-fractions", "0.5", "-o", tmp_path])
    assert_user_error(result, "not an ltexport eval output")
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args, fragment", [
    (["--max-drop", "5"], "--max-drop only applies with --auto"),
    (["--auto"], "--auto needs --max-drop"),
    (["--auto", "--max-drop", "5", "--lazy-fraction", "0.5"], "--auto chooses the lazy fraction itself"),
    (["--auto", "--max-drop", "-1"], "--max-drop must be >= 0"),
    (["--auto", "--max-drop", "5", "--candidates", "0,0.5"], "--candidates values must be in"),
])
def test_bad_auto_arguments(tmp_path, args, fragment):
    result = run_cli(["plan", "--model", "tiny-llama", *args, "-o", tmp_path / "p.json"])
    assert_user_error(result, fragment)
    assert not (tmp_path / "p.json").exists()


def test_auto_with_no_candidate_within_is_a_user_error():
    from ltexport.errors import LtexportError
    from ltexport.evaluate.auto import choose_plan

    variant = {"requested_fraction": 0.25, "lazy_layers": [1], "passkey": {"accuracy": 0.0}, "perplexity": {},
               "drops": {"passkey_points": 50.0, "ppl_percent": 1.0}}
    results = {"variants": [{"passkey": {"accuracy": 0.5}, "perplexity": {}}, variant]}
    with pytest.raises(LtexportError, match="no candidate keeps the drop within 5: the smallest, 0.25, drops passkey"):
        choose_plan(results, [], 5)
