"""Build the sink+window kernels from plugins/src and call them through their C API (ctypes) on torch tensors.

Used by the kernel tests and benchmarks/kernel_bench.py; needs a source checkout (plugins/ is not packaged).
Two builds of the same kernel source:

* ``"cuda"``: nvcc for the local GPU's architecture;
* ``"emulation"`` (tests only): g++ with plugins/tests/cpu_emulation.h, which runs the kernels on CPU threads
  so their logic can be tested on machines without a GPU. It says nothing about performance or GPU-only bugs.

Libraries are cached by a hash of the sources and the command line (``$LTEXPORT_KERNEL_BUILD_DIR``, default
a per-user directory under the system temp dir).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ltexport.errors import LtexportError

REPO_ROOT = Path(__file__).resolve().parents[3]
PLUGIN_SRC = REPO_ROOT / "plugins" / "src"
EMULATION_DIR = REPO_ROOT / "plugins" / "tests"
KERNEL_SOURCE = "sink_window_kernels.cu"

DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
PREFILL_CODES = {"dense": 0, "streaming": 1}


class _Params(ctypes.Structure):
    # Mirrors LtSinkWindowParams in plugins/src/sink_window_kernels.h (checked against sizeof at load time).
    _fields_ = [
        ("dtype", ctypes.c_int),
        ("batch", ctypes.c_int),
        ("q_heads", ctypes.c_int),
        ("kv_heads", ctypes.c_int),
        ("seq_len", ctypes.c_int),
        ("head_dim", ctypes.c_int),
        ("sink", ctypes.c_int),
        ("window", ctypes.c_int),
        ("prefill_mode", ctypes.c_int),
        ("scale", ctypes.c_float),
        ("query", ctypes.c_void_p),
        ("key", ctypes.c_void_p),
        ("value", ctypes.c_void_p),
        ("past_key", ctypes.c_void_p),
        ("past_value", ctypes.c_void_p),
        ("past_len", ctypes.c_void_p),
        ("output", ctypes.c_void_p),
        ("present_key", ctypes.c_void_p),
        ("present_value", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_size", ctypes.c_size_t),
    ]


def _sources(emulation: bool) -> list[Path]:
    if not (PLUGIN_SRC / KERNEL_SOURCE).is_file():
        raise LtexportError(
            f"kernel sources not found at {PLUGIN_SRC}; the kernel harness needs a source checkout of ltexport"
        )
    files = sorted(p for p in PLUGIN_SRC.iterdir() if p.suffix in {".cu", ".cuh", ".h"})
    if emulation:
        files.append(EMULATION_DIR / "cpu_emulation.h")
    return files


def cuda_include_dir() -> Path:
    """CUDA headers (cuda_fp16.h, ...) for the emulation build; nvcc finds its own."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    raise LtexportError("CUDA headers (cuda_fp16.h) not found; set CUDA_HOME to the CUDA toolkit")


def default_build_dir() -> Path:
    env = os.environ.get("LTEXPORT_KERNEL_BUILD_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"ltexport-kernels-{os.getuid()}"


def build_kernel_library(target: str = "cuda", *, arch: str | None = None, build_dir: Path | None = None) -> Path:
    """Compile plugins/src/sink_window_kernels.cu into a shared library (cached) and return its path.

    target: "cuda" (arch such as "sm_90"; default: the current torch CUDA device) or "emulation".
    """
    emulation = target == "emulation"
    if target not in {"cuda", "emulation"}:
        raise LtexportError(f"unknown kernel build target {target!r}; use 'cuda' or 'emulation'")
    src = PLUGIN_SRC / KERNEL_SOURCE
    if emulation:
        compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
        if compiler is None:
            raise LtexportError("no C++ compiler found for the emulation build; install g++ >= 11 (C++20)")
        cmd = [compiler, "-std=c++20", "-O1", "-g0", "-fPIC", "-shared", "-pthread", "-x", "c++",
               "-DLT_CPU_EMULATION", f"-I{PLUGIN_SRC}", f"-I{EMULATION_DIR}", f"-I{cuda_include_dir()}",
               "-Wno-unknown-pragmas", str(src)]
        tag = "emu"
    else:
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            raise LtexportError("nvcc not found on PATH; install the CUDA toolkit to build the kernels")
        if arch is None:
            import torch

            major, minor = torch.cuda.get_device_capability()
            arch = f"sm_{major}{minor}"
        num = arch.removeprefix("sm_")
        cmd = [nvcc, "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC",
               f"-gencode=arch=compute_{num},code={arch}", str(src)]
        tag = arch
    digest = hashlib.sha256(" ".join(cmd).encode())
    for path in _sources(emulation):
        digest.update(path.read_bytes())
    out_dir = Path(build_dir) if build_dir else default_build_dir()
    out = out_dir / f"libltsw_{tag}_{digest.hexdigest()[:16]}.so"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    proc = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-20:]
        raise LtexportError(f"kernel build failed ({' '.join(cmd[:2])} ...): " + " | ".join(tail))
    os.replace(tmp, out)
    return out


@dataclass
class AttentionResult:
    output: "object"
    present_key: "object"
    present_value: "object"


class SinkWindowKernels:
    """The kernels of one built library, callable on torch tensors (CUDA tensors, or CPU for the emulation)."""

    def __init__(self, library: Path, device: str):
        self.library = Path(library)
        self.device = device
        self._lib = ctypes.CDLL(str(self.library))
        self._lib.lt_sink_window_params_size.restype = ctypes.c_int
        self._lib.lt_sink_window_check.restype = ctypes.c_char_p
        self._lib.lt_sink_window_check.argtypes = [ctypes.POINTER(_Params)]
        self._lib.lt_sink_window_workspace_size.restype = ctypes.c_size_t
        self._lib.lt_sink_window_workspace_size.argtypes = [ctypes.c_int] * 7
        self._lib.lt_sink_window_attention.restype = ctypes.c_int
        self._lib.lt_sink_window_attention.argtypes = [ctypes.POINTER(_Params), ctypes.c_void_p]
        if self._lib.lt_sink_window_params_size() != ctypes.sizeof(_Params):
            raise LtexportError(f"{self.library}: LtSinkWindowParams layout differs from the Python mirror")

    def workspace_size(self, dtype: str, batch: int, q_heads: int, kv_heads: int, sink: int, window: int,
                       head_dim: int) -> int:
        return int(self._lib.lt_sink_window_workspace_size(
            DTYPE_CODES[dtype], batch, q_heads, kv_heads, sink, window, head_dim))

    def attention(self, query, key, value, past_key, past_value, past_len, *, sink: int, window: int,
                  scale: float, prefill: str = "dense", in_place: bool = False) -> AttentionResult:
        """Run the op. in_place=True updates past_key/past_value themselves (the aliased-I/O path)."""
        import torch

        dtype = str(query.dtype).removeprefix("torch.")
        if dtype not in DTYPE_CODES:
            raise LtexportError(f"unsupported dtype {query.dtype}; use float32, float16 or bfloat16")
        if prefill not in PREFILL_CODES:
            raise LtexportError(f"prefill must be 'dense' or 'streaming', not {prefill!r}")
        tensors = (query, key, value, past_key, past_value)
        for t in tensors:
            if t.dtype != query.dtype or t.device != query.device or not t.is_contiguous() or t.dim() != 4:
                raise LtexportError("query/key/value/past_* must be contiguous 4-D tensors of one dtype and device")
        if past_len.dtype != torch.int64 or past_len.device != query.device or not past_len.is_contiguous():
            raise LtexportError("past_len must be a contiguous int64 tensor on the same device as query")
        b, hq, t, d = query.shape
        hkv = key.shape[1]
        if key.shape != (b, hkv, t, d) or value.shape != key.shape or past_key.shape != (b, hkv, sink + window, d) \
                or past_value.shape != past_key.shape or past_len.shape != (b,):
            raise LtexportError("inconsistent shapes for the sink+window op")
        output = torch.empty_like(query)
        present_key = past_key if in_place else torch.empty_like(past_key)
        present_value = past_value if in_place else torch.empty_like(past_value)
        ws_bytes = self.workspace_size(dtype, b, hq, hkv, sink, window, d) if t == 1 else 0
        workspace = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=query.device)
        params = _Params(
            DTYPE_CODES[dtype], b, hq, hkv, t, d, sink, window, PREFILL_CODES[prefill], float(scale),
            query.data_ptr(), key.data_ptr(), value.data_ptr(), past_key.data_ptr(), past_value.data_ptr(),
            past_len.data_ptr(), output.data_ptr(), present_key.data_ptr(), present_value.data_ptr(),
            workspace.data_ptr(), ws_bytes,
        )
        problem = self._lib.lt_sink_window_check(ctypes.byref(params))
        if problem:
            raise LtexportError(f"sink+window kernel rejected its arguments: {problem.decode()}")
        stream = torch.cuda.current_stream(query.device).cuda_stream if query.is_cuda else None
        status = self._lib.lt_sink_window_attention(ctypes.byref(params), stream)
        if status != 0:
            raise LtexportError(f"sink+window kernel failed with cudaError_t {status}")
        return AttentionResult(output, present_key, present_value)


def load_kernels(device: str = "cuda", *, build_dir: Path | None = None) -> SinkWindowKernels:
    """Build (or reuse) and load the kernels: device "cuda[:N]" runs them on the GPU, "cpu" in the emulation."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise LtexportError("no CUDA GPU visible to torch; the CUDA kernels cannot run here")
        major, minor = torch.cuda.get_device_capability(device)
        path = build_kernel_library("cuda", arch=f"sm_{major}{minor}", build_dir=build_dir)
    elif str(device) == "cpu":
        path = build_kernel_library("emulation", build_dir=build_dir)
    else:
        raise LtexportError(f"unknown device {device!r}; use 'cuda' or 'cpu' (emulation)")
    return SinkWindowKernels(path, str(device))
