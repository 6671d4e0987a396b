"""Against a real tritonserver, started by ltexport's launcher (ltexport.triton.server, `ltexport serve`).

The server: $LTEXPORT_TRITONSERVER_HOME, /opt/tritonserver (NGC containers), or the nvidia-pytriton
wheel that scripts/setup.sh installs (tritonserver 2.51 with only the python backend). Under CI=1 a
missing server fails these tests instead of skipping them.

One server for the module serves two models:
- `hybrid`: a real tiny-llama build packaged with `--runtime python` (ltexport's step code inside
  Triton's python backend): examples/triton_client.py against it gives `ltexport generate --raw`'s
  tokens; interleaved sequences, END, unknown sequences, idle timeout, and the cache metrics.
- `probe`: the implicit-state config of `ltexport package` (onnxruntime flavour) with its backend
  swapped for a python probe, which records what Triton's sequence batcher hands the first requests
  (state shapes and data, control values): what the emulation in triton_synth.EmulatedTriton assumes.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from triton_synth import HD, KV, SINK, WINDOW, make_build, parse_config

from ltexport.build_info import read_build_info
from ltexport.errors import LtexportError
from ltexport.generation import iter_tokens
from ltexport.models.tokenizers import ByteTokenizer
from ltexport.runtime import open_step
from ltexport.triton import package_triton
from ltexport.triton.server import INSTALL_HINT, TritonServer, find_triton
from tests.conftest import run_cli

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

HERE = Path(__file__).resolve().parent
CLIENT = HERE.parents[1] / "examples" / "triton_client.py"
IDLE_S = 2.0
EOS = ByteTokenizer.eos_token_id


def triton_or_skip():
    install = find_triton()
    if install is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI=1 and no tritonserver: scripts/setup.sh should have installed it; {INSTALL_HINT}")
        pytest.skip(f"no tritonserver; {INSTALL_HINT}")
    return install


def load_client():
    spec = importlib.util.spec_from_file_location("triton_client_example", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_ids(out, prompt_ids, n):
    """The tokens `ltexport generate --raw` produces: its step (runtime.open_step) and decode loop."""
    with open_step(out, read_build_info(out), "auto", 0) as step:
        return list(iter_tokens(step, step.empty_caches(1), prompt_ids, n, eos_id=EOS))


PROBE = '''
import json, os
import numpy as np
import triton_python_backend_utils as pb_utils
from ltexport.triton.python_model import quiet_numpy_capsule_warning

class TritonPythonModel:
    def initialize(self, args):
        quiet_numpy_capsule_warning()
        cfg = json.loads(args["model_config"])
        self.inputs = [s["input_name"] for s in cfg["sequence_batching"]["state"]]
        self.inputs += [c["name"] for c in cfg["sequence_batching"]["control_input"]] + ["input_ids"]
        self.vocab = cfg["output"][0]["dims"][-1]

    def execute(self, requests):
        responses = []
        for r in requests:
            rec = {}
            for name in self.inputs:
                t = pb_utils.get_input_tensor_by_name(r, name)
                a = None if t is None else np.from_dlpack(t)  # as_numpy() is wrong with NumPy 2 in this stub
                rec[name] = None if a is None else {"shape": list(a.shape), "dtype": str(a.dtype),
                                                    "all_zero": bool(a.size and not np.any(a)),
                                                    "values": a.reshape(-1)[:4].tolist()}
            with open(os.environ["LTEXPORT_PROBE_LOG"], "a") as f:
                f.write(json.dumps(rec) + "\\n")
            seq = rec["input_ids"]["shape"][1]
            logits = np.zeros((1, seq, self.vocab), np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("logits", logits)]))
        return responses
'''


def add_probe(repo, tmp_path):
    """REPO/probe: the implicit-state config of a synthetic build, served by PROBE in the python backend."""
    pkg = package_triton(make_build(tmp_path / "synth"), tmp_path / "probe_repo", name="probe")
    text = pkg.config.read_text()
    assert 'backend: "onnxruntime"' in text
    (repo / "probe" / "1").mkdir(parents=True)
    (repo / "probe" / "config.pbtxt").write_text(text.replace('backend: "onnxruntime"', 'backend: "python"')
                                                 .replace('default_model_filename: "model.onnx"\n', ""))
    (repo / "probe" / "1" / "model.py").write_text(PROBE)
    return pkg.config


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    triton_or_skip()
    d = tmp_path_factory.mktemp("tiny")
    assert run_cli(["plan", "--model", "tiny-llama", "--layers", "1,3", "--window", "14", "-o", d / "plan.json"]).exit_code == 0
    result = run_cli(["build", "--model", "tiny-llama", "--plan", d / "plan.json", "-o", d / "out", "--backend", "ort",
                      "--decode-steps", "4"])
    assert result.exit_code == 0, result.stderr
    return d / "out"


@pytest.fixture(scope="module")
def served(tiny_build, tmp_path_factory):
    """(server, probe config path, probe log); the server is stopped, its process group checked empty, at the end."""
    install = triton_or_skip()
    tmp = tmp_path_factory.mktemp("served")
    repo = tmp / "repo"
    # two instances: each sequence must stay on the instance that holds its caches
    package_triton(tiny_build, repo, name="hybrid", runtime="python", max_sequence_idle_us=int(IDLE_S * 1e6),
                   instances=2)
    probe_config = add_probe(repo, tmp)
    probe_log = tmp / "probe.jsonl"
    server = TritonServer(repo, log=tmp / "server.log", env={"LTEXPORT_PROBE_LOG": str(probe_log)}, install=install)
    server.start()
    try:
        server.wait_ready()
        yield server, probe_config, probe_log
    finally:
        server.stop()
    assert server.leftover_processes() == [], "tritonserver or a python stub outlived stop()"
    assert "Traceback" not in (tmp / "server.log").read_text()


def grpc(server):
    return grpcclient.InferenceServerClient(server.grpc_url)


def held(server, model="hybrid"):
    """(sequences, cache bytes) the model's instances report through Triton's metrics endpoint."""
    text = server.metrics()

    def total(metric):
        return sum(float(v) for v in re.findall(rf'^{metric}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.M))
    return total("ltexport_sequences_held"), total("ltexport_sequence_cache_bytes")


def freed_idle(server):
    m = re.search(r'^ltexport_sequences_freed_total{[^}]*reason="idle"[^}]*} (\S+)$', server.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def send(client, ids, sequence_id, start=False, end=False):
    x = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
    x.set_data_from_numpy(np.array([ids], np.int64))
    return client.infer("hybrid", [x], sequence_id=sequence_id, sequence_start=start, sequence_end=end)


def test_client_streams_the_tokens_of_ltexport_generate(served, tiny_build):
    server, *_ = served
    prompt = "Hello"
    ids = ByteTokenizer().encode(prompt)  # what `generate --raw` feeds the model
    proc = subprocess.run([sys.executable, str(CLIENT), "--url", server.grpc_url, "--model", "hybrid",
                           "--ids", ",".join(map(str, ids)), "--max-new-tokens", "12", "--eos-id", str(EOS)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    streamed = [int(t) for t in proc.stdout.split()]
    assert "tokens/s" in proc.stderr or len(streamed) == 1
    got = streamed[:-1] if streamed and streamed[-1] == EOS else streamed  # generate stops before EOS
    assert got and got == generate_ids(tiny_build, ids, 12)
    # and the text the CLI prints is that of the same tokens
    cli = run_cli(["generate", tiny_build, "--prompt", prompt, "--raw", "--max-new-tokens", "12"])
    assert cli.exit_code == 0, cli.stderr
    text = ByteTokenizer().decode(got)
    printed = cli.stdout[:-1]  # its final newline
    assert text == printed or (text.endswith("\ufffd") and text.startswith(printed))  # held back: a partial char
    assert held(server) == (0, 0)


def test_two_interleaved_sequences_get_their_own_continuations(served, tiny_build):
    server, *_ = served
    client, example = grpc(server), load_client()
    prompts = {101: [1, 72, 105], 102: [1, 87, 111, 114, 108, 100]}
    seqs = {sid: example.Sequence(client, "hybrid", sid) for sid in prompts}
    tokens = {sid: [seqs[sid].send(p)] for sid, p in prompts.items()}
    assert held(server)[0] == 2 and held(server)[1] > 0
    for _ in range(7):
        for sid in prompts:  # alternate: each request continues its own sequence
            tokens[sid].append(seqs[sid].send([tokens[sid][-1]]))
    for sid in prompts:
        seqs[sid].close(tokens[sid][-1])
    for sid, prompt in prompts.items():
        want = generate_ids(tiny_build, prompt, 8)
        assert tokens[sid][:len(want)] == want
    assert tokens[101] != tokens[102]
    assert held(server) == (0, 0), "the instance still holds caches of ended sequences"


def test_requests_after_end_or_for_unknown_sequences_are_refused(served):
    server, *_ = served
    client = grpc(server)
    send(client, [1, 2, 3], 201, start=True)
    send(client, [4], 201, end=True)
    for sequence_id in (201, 202):  # ended, never started
        with pytest.raises(InferenceServerException, match="START"):
            send(client, [5], sequence_id)
    with pytest.raises(InferenceServerException, match="batch-size must be <= 1"):
        x = grpcclient.InferInput("input_ids", [2, 1], "INT64")
        x.set_data_from_numpy(np.ones((2, 1), np.int64))
        client.infer("hybrid", [x], sequence_id=203, sequence_start=True, sequence_end=True)
    with pytest.raises(InferenceServerException, match=r"token ids must lie in \[0, 256\)"):
        send(client, [1, 999], 204, start=True, end=True)
    assert held(server) == (0, 0)


def test_an_idle_sequence_is_freed(served):
    server, *_ = served
    client = grpc(server)
    before = freed_idle(server)
    send(client, [1, 2, 3], 301, start=True)
    assert held(server)[0] == 1
    deadline = time.monotonic() + IDLE_S + 5
    while held(server)[0] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert held(server) == (0, 0) and freed_idle(server) == before + 1
    with pytest.raises(InferenceServerException, match="START"):
        send(client, [4], 301)  # Triton dropped the sequence too


def test_triton_core_accepts_the_implicit_state_config(served):
    server, probe_config, probe_log = served
    client = grpc(server)
    for k, ids in enumerate([[1, 2, 3], [4]]):
        x = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
        x.set_data_from_numpy(np.array([ids], np.int64))
        client.infer("probe", [x], sequence_id=21, sequence_start=k == 0, sequence_end=k == 1)

    first, second = [json.loads(line) for line in probe_log.read_text().splitlines()]
    cfg = parse_config(probe_config)
    for st in cfg.sequence_batching.state:
        got = first[st.input_name]
        assert got["shape"] == [1 if d == -1 else d for d in st.dims], st.input_name
        assert got["all_zero"], st.input_name
    assert first["past_key_values.0.key"]["shape"] == [1, KV, 1, HD]  # growing: one zero row
    assert first["past_key_values.1.key"]["shape"] == [1, KV, SINK + WINDOW, HD]
    assert first["seq_start"]["values"] == [1] and second["seq_start"]["values"] == [0]
    assert first["input_ids"]["shape"] == [1, 3] and second["input_ids"]["shape"] == [1, 1]


def test_a_model_that_fails_to_load_is_reported(tmp_path):
    install = triton_or_skip()
    (tmp_path / "repo" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "broken" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\n')
    (tmp_path / "repo" / "broken" / "1" / "model.py").write_text("raise RuntimeError('cannot load')\n")
    server = TritonServer(tmp_path / "repo", log=tmp_path / "server.log", install=install)
    with pytest.raises(LtexportError, match="tritonserver exited with status 1 before it was ready"):
        with server:
            pass
    assert server.leftover_processes() == []


def test_serves_the_implicit_state_repository(tmp_path):
    """Needs Triton's onnxruntime backend (NGC containers); the pytriton wheel has only the python backend."""
    install = triton_or_skip()
    if "onnxruntime" not in install.backends:
        pytest.skip("this tritonserver has no onnxruntime backend (the nvidia-pytriton wheel has only python)")
    from test_triton_cli_and_client import reference_greedy

    out = make_build(tmp_path / "out")
    package_triton(out, tmp_path / "repo", name="hybrid")
    example = load_client()
    with TritonServer(tmp_path / "repo", log=tmp_path / "server.log", install=install) as server:
        client = grpc(server)
        got = example.generate(client, "hybrid", [1, 2, 3, 4], 5, sequence_id=11)
        assert got == reference_greedy(out / "model.onnx", [1, 2, 3, 4], 5)
        # a second sequence on the same instance starts from fresh state
        assert example.generate(client, "hybrid", [1, 2, 3, 4], 5, sequence_id=12) == got


@pytest.mark.slow
def test_smollm2_served_over_grpc(smollm2_build, tmp_path):
    """The real SmolLM2 build: the client's text and token ids equal `ltexport generate --raw`'s."""
    from ltexport.runtime import encode_prompt, load_build_tokenizer

    install = triton_or_skip()
    out, prompt, n = smollm2_build, "The capital of France is", 16
    package_triton(out, tmp_path / "repo", name="smollm2", runtime="python")
    tokenizer = load_build_tokenizer(out, read_build_info(out))
    ids = encode_prompt(tokenizer, prompt, chat=False)
    with open_step(out, read_build_info(out), "ort", 0) as step:
        want = list(iter_tokens(step, step.empty_caches(1), ids, n, eos_id=tokenizer.eos_token_id))
    cli = run_cli(["generate", out, "--prompt", prompt, "--raw", "--max-new-tokens", n])
    assert cli.exit_code == 0, cli.stderr
    with TritonServer(tmp_path / "repo", log=tmp_path / "server.log", install=install) as server:
        proc = subprocess.run([sys.executable, str(CLIENT), "--url", server.grpc_url, "--model", "smollm2",
                               "--max-new-tokens", str(n), "--tokenizer", str(out / "tokenizer"), "--prompt", prompt,
                               "--show-ids"], capture_output=True, text=True, timeout=300)
        assert held(server, "smollm2") == (0, 0)
    assert proc.returncode == 0, proc.stderr
    got = [int(t) for t in re.search(r"^ids: (.*)$", proc.stderr, re.M).group(1).split()]
    assert (got[:-1] if got[-1] == tokenizer.eos_token_id else got) == want
    assert proc.stdout == prompt + cli.stdout  # the prompt, then the same continuation
    assert "Paris" in proc.stdout


def test_serve_check_and_bad_repository(tmp_path):
    triton_or_skip()
    check = run_cli(["serve", "--check"])
    assert check.exit_code == 0 and "tritonserver:" in check.stdout and "python" in check.stdout
    from tests.conftest import assert_user_error

    assert_user_error(run_cli(["serve", tmp_path / "nowhere"]), "model repository", "does not exist")
