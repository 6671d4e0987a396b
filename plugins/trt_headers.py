"""Print the TensorRT include directory the kernel-lens wheel ships (TensorRT 10.14.1's public headers).

Located without importing kernel_lens (its package imports triton, which ltexport does not install).
Used by build_trt_rtx.sh and .ci/run; exits 1 with the install hint when the wheel is missing.
"""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.find_spec("kernel_lens")
include = Path(spec.submodule_search_locations[0], "include", "tensorrt") if spec and spec.submodule_search_locations else None
if include is None or not (include / "NvInferRuntime.h").is_file():
    sys.exit("trt_headers: no TensorRT headers; pip install --no-deps 'kernel-lens==2.0.1' (see scripts/setup.sh)")
print(include)
