"""The IPluginV3 glue, compiled against TensorRT headers and run on the host (plugins/tests/plugin_glue_test.cpp):
field validation, negotiation, workspace, aliasing, serialisation and enqueue() on the CPU-emulated kernels.

Needs only headers: set TENSORRT_INCLUDE_DIR to a TensorRT include/ directory (e.g. extracted from a
NVIDIA/TensorRT source checkout). plugins/ci_check.sh runs the same program.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ltexport.backends.trt.kernels import cuda_include_dir
from ltexport.errors import LtexportError

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
TRT_INCLUDE = os.environ.get("TENSORRT_INCLUDE_DIR")

pytestmark = pytest.mark.skipif(
    not (TRT_INCLUDE and Path(TRT_INCLUDE, "NvInferRuntime.h").is_file()),
    reason="set TENSORRT_INCLUDE_DIR to TensorRT headers to compile the plugin glue",
)


def test_plugin_glue_on_host(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    try:
        cuda_inc = cuda_include_dir()
    except LtexportError as exc:
        pytest.skip(str(exc))
    if cxx is None:
        pytest.skip("no C++ compiler")
    cuda_lib = (cuda_inc / ".." / "lib").resolve()
    exe = tmp_path / "plugin_glue_test"
    src, tests = PLUGINS / "src", PLUGINS / "tests"
    cmd = [cxx, "-std=c++20", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-DLT_CPU_EMULATION",
           f"-I{src}", f"-I{tests}", "-isystem", TRT_INCLUDE, "-isystem", str(cuda_inc),
           str(tests / "plugin_glue_test.cpp"), str(src / "sink_window_plugin.cpp"), str(src / "sink_window_fields.cpp"),
           "-x", "c++", str(src / "sink_window_kernels.cu"), "-x", "none", "-pthread",
           f"-L{cuda_lib}", "-lcudart", f"-Wl,-rpath,{cuda_lib}", "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "all checks passed" in run.stdout
