"""`ltexport package` through Click, and examples/triton_client.py against an emulated server."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from triton_synth import HD, KV, SINK, WINDOW, EmulatedTriton, make_build, parse_config

from ltexport.cli import main
from tests.conftest import assert_umask_modes

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "examples" / "triton_client.py"


def run_cli(*args):
    return CliRunner().invoke(main, ["package", *map(str, args)])


def assert_one_line_error(result, fragment):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ltexport: error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_cli_package_and_repackage(tmp_path, umask_027):
    out = make_build(tmp_path / "out")
    first = run_cli(out, "--triton", tmp_path / "repo", "--name", "m", "--version", "2", "--gpu")
    assert first.exit_code == 0, first.output
    assert "wrote" in first.stdout and (tmp_path / "repo" / "m" / "2" / "model.onnx").is_file()
    assert_umask_modes(tmp_path / "repo")  # repo, model dir (staged), files, README
    again = run_cli(out, "--triton", tmp_path / "repo", "--name", "m", "--version", "2", "--gpu")
    assert again.exit_code == 0 and "unchanged" in again.stdout


@pytest.mark.parametrize("name", ["a/b", "..", ".x", ""])
def test_cli_bad_name(tmp_path, name):
    result = run_cli(make_build(tmp_path / "out"), "--triton", tmp_path / "repo", "--name", name)
    assert_one_line_error(result, "invalid model name")
    assert not (tmp_path / "repo").exists()


def test_cli_user_errors(tmp_path):
    trt = make_build(tmp_path / "trt", backend="trt", with_plan_file=False)
    assert_one_line_error(run_cli(trt, "--triton", tmp_path / "repo"), "without model.plan")
    ort_build = make_build(tmp_path / "out")
    assert run_cli(ort_build, "--triton", tmp_path / "repo").exit_code == 0
    other = make_build(tmp_path / "other", dtype="fp16")
    assert_one_line_error(run_cli(other, "--triton", tmp_path / "repo"), "already holds a different model")


def test_cli_usage_errors_are_exit_2(tmp_path):
    assert run_cli(make_build(tmp_path / "out")).exit_code == 2  # --triton missing
    assert run_cli(tmp_path / "out", "--triton", tmp_path / "r", "--version", "0").exit_code == 2


# --- examples/triton_client.py -------------------------------------------------------------------


def load_client():
    pytest.importorskip("tritonclient.grpc")
    spec = importlib.util.spec_from_file_location("triton_client_example", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_client_help_runs_without_a_server():
    pytest.importorskip("tritonclient.grpc")
    proc = subprocess.run([sys.executable, str(CLIENT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--tokenizer" in proc.stdout and "--ids" in proc.stdout
    client = load_client()
    args = client.parse_args(["--ids", "1,2,3", "--max-new-tokens", "4", "--model", "m"])
    assert args.ids == "1,2,3" and args.max_new_tokens == 4 and args.url == "localhost:8001"
    with pytest.raises(SystemExit):
        client.parse_args(["--tokenizer", "/nowhere"])  # --prompt missing


def reference_greedy(model_path, prompt, n):
    sess = ort.InferenceSession(str(model_path))
    names = [o.name for o in sess.get_outputs()]
    feeds = {"past_len": np.zeros(1, np.int64)}
    for i in range(4):
        for kind in ("key", "value"):
            rows = SINK + WINDOW if i in (1, 3) else 0
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, KV, rows, HD), np.float32)
    ids, out = prompt, []
    for _ in range(n):
        res = dict(zip(names, sess.run(None, {**feeds, "input_ids": np.array([ids], np.int64)})))
        out.append(int(np.argmax(res["logits"][0, -1])))
        ids = [out[-1]]
        feeds = {"past_len": res["present_len"],
                 **{f"past_key_values.{i}.{k}": res[f"present.{i}.{k}"] for i in range(4) for k in ("key", "value")}}
    return out


@pytest.fixture
def served(tmp_path):
    pytest.importorskip("tritonclient.grpc")
    out = make_build(tmp_path / "out")
    from ltexport.triton import package_triton

    pkg = package_triton(out, tmp_path / "repo", name="hybrid")
    return out, EmulatedTriton(parse_config(pkg.config), pkg.path / "1" / "model.onnx", fill=3.0)


def test_client_generates_like_the_build(served):
    out, server = served
    client = load_client()
    prompt = [1, 2, 3, 4, 5]
    streamed = []
    got = client.generate(server, "hybrid", prompt, 6, sequence_id=77, on_token=streamed.append)
    assert got == streamed == reference_greedy(out / "model.onnx", prompt, 6)
    flags = [(sid, start, end) for sid, start, end, _ in server.calls]
    assert flags == [(77, True, False)] + [(77, False, False)] * 4 + [(77, False, True)]
    assert [list(sent) for *_, sent in server.calls] == [["input_ids"]] * 6
    assert server.states == {}  # the sequence was ended


def test_client_stops_at_eos_and_closes_the_sequence(served):
    out, server = served
    client = load_client()
    want = reference_greedy(out / "model.onnx", [1, 2], 6)
    got = client.generate(server, "hybrid", [1, 2], 6, sequence_id=5, eos_id=want[1])
    assert got == want[:2]
    assert server.calls[-1][1:3] == (False, True) and server.states == {}


def test_client_single_token_and_chunked_prefill(served):
    _, server = served
    client = load_client()
    assert len(client.generate(server, "hybrid", [1, 2, 3], 1, sequence_id=1)) == 1
    assert [c[1:3] for c in server.calls] == [(True, True)]
    server.calls.clear()
    client.generate(server, "hybrid", [1, 2, 3, 4, 5], 2, sequence_id=2, prefill_chunk=2)
    assert [c[3]["input_ids"].shape[1] for c in server.calls] == [2, 2, 1, 1]
    assert [c[1:3] for c in server.calls] == [(True, False), (False, False), (False, False), (False, True)]
