"""Against a real tritonserver, where one is installed (skipped otherwise).

Where the server comes from:
- LTEXPORT_TRITONSERVER_HOME (or /opt/tritonserver, as in NGC's tritonserver containers): a
  directory with bin/tritonserver and backends/<name>/.
- the `nvidia-pytriton` wheel (PyPI), installed or unpacked at LTEXPORT_PYTRITON_DIR: it ships a
  real tritonserver with only the python backend (no onnxruntime backend).

test_serves_the_repository needs the onnxruntime backend: it serves the packaged repository and runs
examples/triton_client.py's generate() against it. test_triton_core_accepts_the_config needs only the
python backend: it loads the generated config.pbtxt with `backend: "python"` and a probe model that
records what Triton's sequence batcher hands the first requests (state shapes and data, control
values), which is what the emulation in triton_synth.EmulatedTriton assumes.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from triton_synth import HD, KV, SINK, WINDOW, make_build, parse_config

from ltexport.triton import package_triton

grpcclient = pytest.importorskip("tritonclient.grpc")

HERE = Path(__file__).resolve().parent
CLIENT = HERE.parents[1] / "examples" / "triton_client.py"


def find_triton():
    """(tritonserver binary, {backend name: backend dir}, extra env) or None."""
    for home in filter(None, [os.environ.get("LTEXPORT_TRITONSERVER_HOME"), "/opt/tritonserver"]):
        home = Path(home)
        if (home / "bin" / "tritonserver").is_file():
            backends = {p.name: p for p in (home / "backends").glob("*") if p.is_dir()}
            return home / "bin" / "tritonserver", backends, {}
    roots = [os.environ.get("LTEXPORT_PYTRITON_DIR")]
    spec = importlib.util.find_spec("pytriton")
    if spec and spec.submodule_search_locations:
        roots.append(str(Path(list(spec.submodule_search_locations)[0]).parent))
    for root in filter(None, roots):
        dist = Path(root) / "pytriton" / "tritonserver"
        stub = dist / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
        if (dist / "bin" / "tritonserver").is_file() and stub.is_file():
            libs = Path(root) / "nvidia_pytriton.libs"
            env = {"LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
            return dist / "bin" / "tritonserver", {"python": dist / "backends" / "python", "_stub": stub}, env
    return None


TRITON = find_triton()
needs_triton = pytest.mark.skipif(TRITON is None, reason="no tritonserver (set LTEXPORT_TRITONSERVER_HOME or LTEXPORT_PYTRITON_DIR)")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Server:
    def __init__(self, repo, backend_dir, log, env):
        binary, _, extra = TRITON
        self.grpc, http, metrics = _free_ports(3)
        self.log = log
        full_env = {**os.environ, **extra, **env}
        self.proc = subprocess.Popen(
            [str(binary), f"--model-repository={repo}", f"--backend-directory={backend_dir}",
             f"--grpc-port={self.grpc}", f"--http-port={http}", f"--metrics-port={metrics}",
             "--allow-metrics=false", "--exit-timeout-secs=5"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc}")

    def wait_ready(self, model, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.client.is_model_ready(model):
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.3)
        pytest.fail(f"model {model} did not get ready; server log:\n{Path(self.log).read_text()[-4000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: server + python stub
                self.proc.wait(timeout=5)


@needs_triton
def test_serves_the_repository(tmp_path):
    _, backends, _ = TRITON
    if "onnxruntime" not in backends:
        pytest.skip("this tritonserver has no onnxruntime backend")
    from test_triton_cli_and_client import load_client, reference_greedy

    out = make_build(tmp_path / "out")
    pkg = package_triton(out, tmp_path / "repo", name="hybrid")
    server = Server(tmp_path / "repo", backends["onnxruntime"].parent, tmp_path / "server.log", {})
    try:
        server.wait_ready("hybrid")
        client = load_client()
        got = client.generate(server.client, "hybrid", [1, 2, 3, 4], 5, sequence_id=11)
        assert got == reference_greedy(out / "model.onnx", [1, 2, 3, 4], 5)
        # a second sequence on the same instance starts from fresh state
        assert client.generate(server.client, "hybrid", [1, 2, 3, 4], 5, sequence_id=12) == got
    finally:
        server.stop()
    assert pkg.changed


PROBE = '''
import json, os
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
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
                a = None if t is None else t.as_numpy()
                rec[name] = None if a is None else {"shape": list(a.shape), "dtype": str(a.dtype),
                                                    "all_zero": bool(a.size and not np.any(a)),
                                                    "values": a.reshape(-1)[:4].tolist()}
            with open(os.environ["LTEXPORT_PROBE_LOG"], "a") as f:
                f.write(json.dumps(rec) + "\\n")
            seq = rec["input_ids"]["shape"][1]
            logits = np.zeros((1, seq, self.vocab), np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", logits)]))
        return responses
'''


@needs_triton
def test_triton_core_accepts_the_config(tmp_path):
    _, backends, _ = TRITON
    if "python" not in backends:
        pytest.skip("this tritonserver has no python backend")
    pkg = package_triton(make_build(tmp_path / "out"), tmp_path / "build_repo", name="hybrid")
    text = pkg.config.read_text()
    assert 'backend: "onnxruntime"' in text

    # the same config, run by a probe model in the python backend
    repo = tmp_path / "repo"
    (repo / "hybrid" / "1").mkdir(parents=True)
    (repo / "hybrid" / "config.pbtxt").write_text(text.replace('backend: "onnxruntime"', 'backend: "python"')
                                                  .replace('default_model_filename: "model.onnx"\n', ""))
    (repo / "hybrid" / "1" / "model.py").write_text(PROBE)
    backend_dir = tmp_path / "backends"
    (backend_dir / "python").mkdir(parents=True)
    for f in backends["python"].iterdir():
        os.symlink(f, backend_dir / "python" / f.name)
    if "_stub" in backends and not (backend_dir / "python" / "triton_python_backend_stub").exists():
        os.symlink(backends["_stub"], backend_dir / "python" / "triton_python_backend_stub")
    log = tmp_path / "probe.jsonl"
    env = {"LTEXPORT_PROBE_LOG": str(log), "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    server = Server(repo, backend_dir, tmp_path / "server.log", env)
    try:
        server.wait_ready("hybrid")
        for k, ids in enumerate([[1, 2, 3], [4]]):
            x = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
            x.set_data_from_numpy(np.array([ids], np.int64))
            server.client.infer("hybrid", [x], sequence_id=21, sequence_start=k == 0, sequence_end=k == 1)
    finally:
        server.stop()

    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    cfg = parse_config(pkg.config)
    for st in cfg.sequence_batching.state:
        got = first[st.input_name]
        assert got["shape"] == [1 if d == -1 else d for d in st.dims], st.input_name
        assert got["all_zero"], st.input_name
    assert first["past_key_values.0.key"]["shape"] == [1, KV, 1, HD]  # growing: one zero row
    assert first["past_key_values.1.key"]["shape"] == [1, KV, SINK + WINDOW, HD]
    assert first["seq_start"]["values"] == [1] and second["seq_start"]["values"] == [0]
    assert first["input_ids"]["shape"] == [1, 3] and second["input_ids"]["shape"] == [1, 1]
