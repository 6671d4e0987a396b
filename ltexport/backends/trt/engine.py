"""Build a TensorRT engine from the exported ONNX graph, with the sink+window plugin for the lazy layers
(or, without it, from the graph's function body), in a child process (build_worker.py).

The engine goes to OUT/model.plan and what the builder saw to OUT/model.plan.json (record.py). Nothing here
runs the engine: building needs no GPU with TensorRT-RTX (ahead of time for the compute capabilities given);
running it always needs one (runner.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ltexport.backends.trt._tensorrt import TRT, TRT_RTX, import_tensorrt
from ltexport.backends.trt.plugin import copy_plugin_to_build, find_plugin_library
from ltexport.backends.trt.graph import with_sequence_start
from ltexport.backends.trt.profiles import Profiles
from ltexport.backends.trt.record import check_against_graph, plugin_cache_layers
from ltexport.errors import LtexportError
from ltexport.export.contract import ENGINE_FILE, MODEL_FILE

ENGINE_SUFFIX = ".engine"
TIMING_CACHE_SUFFIX = ".timing.cache"
# What `--compute-capability` defaults to for TensorRT-RTX: Ampere (A100 class and RTX 30), Ada (RTX 40), Blackwell (RTX 50).
DEFAULT_COMPUTE_CAPABILITIES = ("SM80", "SM86", "SM89", "SM120")


def compute_capabilities_for(values, flavor: str) -> list[str] | None:
    """["SM80", ...] from "80,86" / [80, 86] / None (the default); TensorRT proper builds for its own GPU only."""
    if flavor != TRT_RTX:
        if values:
            raise LtexportError("--compute-capability is for --backend trt-rtx; TensorRT proper builds for the GPU "
                                "it runs on")
        return None
    if not values:
        return list(DEFAULT_COMPUTE_CAPABILITIES)
    trt = import_tensorrt(flavor)
    known = [name for name in trt.ComputeCapability.__members__ if name.startswith("SM")]
    items = values.split(",") if isinstance(values, str) else list(values)
    names = []
    for item in items:
        name = "SM" + str(item).strip().upper().removeprefix("SM").replace(".", "")
        if name not in known:
            raise LtexportError(f"unknown compute capability {item!r}; TensorRT-RTX {trt.__version__} builds for "
                                f"{', '.join(n[2:] for n in known)}")
        if name not in names:
            names.append(name)
    return names


def _rtx_library_env(tmp: Path) -> dict:
    """The child's environment for TensorRT-RTX: its ONNX parser resolves INetworkDefinition::addPluginV3 with
    dlopen("libtensorrt_rtx.so") and dlsym("getPrivateApi_INTERNAL"), but the wheel ships only libtensorrt_rtx.so.1,
    so that dlopen fails and an exception inside a noexcept path ends the process (std::terminate) at the first
    plugin node (seen with gdb, TensorRT-RTX 1.7.1). A symlink under the unversioned name on LD_LIBRARY_PATH
    (read only at process start, hence the child) lets it find the library already loaded."""
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    libs = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    env = dict(os.environ)
    if libs is not None and (libs / "libtensorrt_rtx.so.1").is_file():
        (tmp / "libtensorrt_rtx.so").symlink_to(libs / "libtensorrt_rtx.so.1")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(tmp), env.get("LD_LIBRARY_PATH")) if p)
    return env


def _run_worker(request: dict, flavor: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="ltexport-trt-") as tmp:
        tmp = Path(tmp)
        request = dict(request, result=str(tmp / "result.json"))
        (tmp / "request.json").write_text(json.dumps(request))
        env = _rtx_library_env(tmp) if flavor == TRT_RTX else None
        proc = subprocess.run([sys.executable, "-m", "ltexport.backends.trt.build_worker", str(tmp / "request.json")],
                              env=env, stdin=subprocess.DEVNULL)
        result_path = tmp / "result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result is not None and not result["ok"]:
        raise LtexportError(result["error"])
    if proc.returncode != 0 or result is None:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        raise LtexportError(f"TensorRT's builder ended the build process ({how}) while building {request['onnx']}; "
                            "see the TensorRT log above")
    return result["record"]


def build_engine(onnx_path, engine_path=None, *, flavor: str = TRT, plugin_library=None, plugin: bool = True,
                 profile: Profiles | None = None, compute_capabilities=None, timing_cache_path=None,
                 sequence_start: bool = False) -> dict:
    """Build a strongly typed engine for `onnx_path` and write it (default: next to the ONNX, `.engine`) and its
    record (`<engine>.json`: OUT/model.plan.json for a build). Returns the record (record.py).

    flavor: "trt" (TensorRT proper, for the local GPU) or "trt-rtx" (TensorRT for RTX, no GPU needed to build).
    plugin_library: the plugin .so (default: find_plugin_library()); plugin=False builds without it, the lazy
    layers then being the graph's function body. profile: the shape ranges, turned into a prefill and a decode
    optimization profile. compute_capabilities: TensorRT-RTX's targets ("80,86" or a list; default
    DEFAULT_COMPUTE_CAPABILITIES). timing_cache_path: read if present, written after the build (default: next
    to the engine; TensorRT proper only). sequence_start: add Triton's `seq_start` control input first (an
    engine cannot be changed later; see ltexport/export/sequence_start.py).
    """
    import_tensorrt(flavor)  # TensorRT's absence is the first thing to report
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise LtexportError(f"{onnx_path} does not exist; export the model first (ltexport build)")
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(ENGINE_SUFFIX)
    timing_cache_path = Path(timing_cache_path) if timing_cache_path else engine_path.with_suffix(TIMING_CACHE_SUFFIX)
    request = {
        "flavor": flavor, "onnx": str(onnx_path.resolve()), "engine": str(engine_path.resolve()),
        "record": str(engine_path.resolve()) + ".json",
        "plugin": str(find_plugin_library(plugin_library)) if plugin else None,
        "profile": dataclasses.asdict(profile or Profiles()),
        "compute_capabilities": compute_capabilities_for(compute_capabilities, flavor),
        "timing_cache": str(timing_cache_path.resolve()), "sequence_start": sequence_start,
    }
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    return _run_worker(request, flavor)


def build_engine_for_build_dir(out_dir, plan, *, flavor: str = TRT, plugin_library=None, plugin: bool = True,
                               profile: Profiles | None = None, compute_capabilities=None) -> dict:
    """`ltexport build --backend trt|trt-rtx`: OUT/model.onnx -> OUT/model.plan (with `seq_start`, so the engine is
    servable by Triton) + OUT/model.plan.json, built with the build's own copy of the plugin,
    OUT/plugins/libltexport_trt_plugin.so. profile default: ranges sized for the validation run.

    Checks that the engine's bindings are the graph's I/O (+ seq_start) and that its plugin layers read the
    caches of the plan's lazy layers."""
    import onnx

    import_tensorrt(flavor)
    out_dir = Path(out_dir)
    library = copy_plugin_to_build(find_plugin_library(plugin_library), out_dir) if plugin else None
    profile = profile or Profiles.for_validation(plan.sink, plan.window)
    record = build_engine(out_dir / MODEL_FILE, out_dir / ENGINE_FILE, flavor=flavor, plugin_library=library,
                          plugin=plugin, profile=profile, compute_capabilities=compute_capabilities, sequence_start=True)
    graph = with_sequence_start(onnx.load(str(out_dir / MODEL_FILE), load_external_data=False))
    check_against_graph(record, graph, f"{MODEL_FILE}'s inputs and outputs (+ seq_start)")
    if plugin and plugin_cache_layers(record) != sorted(plan.lazy_layers):
        raise LtexportError(f"the engine's plugin layers read the caches of layers {plugin_cache_layers(record)}, "
                            f"not the plan's lazy layers {sorted(plan.lazy_layers)}; rebuild the plugin")
    return record
