"""`ltexport env`: the machine probe that issue reports and `build --backend auto` share."""

import json

from ltexport.env import BACKENDS, FORMAT, PACKAGES, VERSION, backend_status, probe
from tests.conftest import run_cli

SCHEMA = {
    "format": str, "version": int,
    "platform": {"system": str, "release": str, "machine": str, "cpus": int, "memory_gib": float},
    "python": {"version": str, "implementation": str, "executable": str},
    "cuda": {"driver_loaded": bool, "torch_cuda_build": (str, type(None)), "available": bool, "devices": list},
    "plugin": {"library": (str, type(None)), "built": bool, "loadable": bool, "detail": str},
}


def _check(value, schema, where="env"):
    if isinstance(schema, dict):
        assert isinstance(value, dict) and set(value) == set(schema), (where, sorted(value))
        for key, sub in schema.items():
            _check(value[key], sub, f"{where}.{key}")
    else:
        assert isinstance(value, schema), (where, value)


def test_env_json_has_a_stable_schema():
    result = run_cli(["env", "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert set(info) == set(SCHEMA) | {"packages", "backends"}
    _check({k: v for k, v in info.items() if k in SCHEMA}, SCHEMA)
    assert (info["format"], info["version"]) == (FORMAT, VERSION)
    assert set(info["packages"]) == set(PACKAGES.values())
    assert all(v is None or isinstance(v, str) for v in info["packages"].values())
    assert info["packages"]["onnxruntime"] and info["packages"]["torch"]  # installed here
    assert set(info["backends"]) == set(BACKENDS)
    for status in info["backends"].values():
        assert set(status) == {"usable", "reason"} and isinstance(status["usable"], bool) and status["reason"]


def test_env_reports_what_this_machine_has():
    info = probe(load_plugin=False)
    assert info["backends"]["ort"]["usable"]  # ONNX Runtime on CPU always works
    if not info["cuda"]["available"]:
        assert not info["backends"]["trt"]["usable"]  # TensorRT proper builds and runs on a GPU


def test_env_text_names_every_backend():
    result = run_cli(["env"])
    assert result.exit_code == 0
    for name in BACKENDS:
        assert f"    {name}" in result.stdout
    assert backend_status("ort").reason in result.stdout


def test_env_reports_a_damaged_plugin_library_without_crashing(tmp_path, monkeypatch):
    library = tmp_path / "libltexport_trt_plugin.so"
    library.write_bytes(b"\x7fELF" + bytes(range(256)) * 4)
    monkeypatch.setenv("LTEXPORT_TRT_PLUGIN", str(library))
    before = sorted(tmp_path.iterdir())
    result = run_cli(["env", "--json"])
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    plugin = json.loads(result.stdout)["plugin"]
    assert plugin["built"] and not plugin["loadable"] and plugin["detail"]
    assert sorted(tmp_path.iterdir()) == before
