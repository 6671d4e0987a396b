"""Finding and loading the sink+window plugin library so TensorRT's registry knows the creator."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

from ltexport.backends.trt._tensorrt import TRT, import_tensorrt
from ltexport.errors import LtexportError
from ltexport.export.contract import PLUGIN_LIBRARY, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, build_plugin_path

PLUGIN_ENV = "LTEXPORT_TRT_PLUGIN"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_DEFAULT_LOCATIONS = (_REPO_ROOT / "plugins" / "build" / PLUGIN_LIBRARY,)

_loaded: dict[str, ctypes.CDLL] = {}  # keeps the libraries (and their registered creators) alive


def find_plugin_library(path: str | os.PathLike | None = None) -> Path:
    """The plugin library to build with: `path`, else $LTEXPORT_TRT_PLUGIN, else plugins/build/libltexport_trt_plugin.so.

    Everything that uses a finished build (runner, validate, generate, package) loads the build's own copy
    instead: build_plugin_library(OUT)."""
    candidates = [Path(path)] if path else ([Path(os.environ[PLUGIN_ENV])] if os.environ.get(PLUGIN_ENV) else [])
    candidates = candidates or list(_DEFAULT_LOCATIONS)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise LtexportError(
        f"TensorRT plugin library not found ({', '.join(map(str, candidates))}); build it as described in "
        f"plugins/README.md or set {PLUGIN_ENV}=/path/to/libltexport_trt_plugin.so"
    )


def copy_plugin_to_build(library: Path, out_dir) -> Path:
    """Copy the plugin library into the build as OUT/plugins/libltexport_trt_plugin.so (whatever its source name)."""
    target = build_plugin_path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(library, target)
    return target


def build_plugin_library(out_dir) -> Path:
    """The build's copy of the plugin library, which must exist."""
    library = build_plugin_path(out_dir)
    if not library.is_file():
        raise LtexportError(f"{library} is missing: a TensorRT build keeps the plugin its engine was built with there; "
                            "rebuild it with `ltexport build --backend trt|trt-rtx`")
    return library


def _find_creator(registry):
    for getter in ("get_creator", "get_plugin_creator"):  # TensorRT 10 name first, then the deprecated one
        fn = getattr(registry, getter, None)
        if fn is None:
            continue
        try:
            creator = fn(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        except Exception:  # the deprecated getter refuses V3 creators on some versions
            continue
        if creator is not None:
            return creator
    return None


def load_plugin_library(path: str | os.PathLike | None = None, flavor: str = TRT) -> Path:
    """Load the plugin library into this process and check that TensorRT (of `flavor`) can find the creator.

    Works with every build: libltexport_trt_plugin.so for TensorRT registers itself when loaded (ctypes, like
    polygraphy --plugins); a library that does not (libltexport_trt_plugin_dynamic.so, the TensorRT-RTX build)
    is then handed to IPluginRegistry.load_library, which calls its getCreators.
    """
    trt = import_tensorrt(flavor)
    library = find_plugin_library(path)
    key = str(library)
    registry = trt.get_plugin_registry()
    if key not in _loaded:
        try:
            _loaded[key] = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise LtexportError(
                f"cannot load the TensorRT plugin {library} ({exc}); rebuild it against the installed TensorRT "
                "and CUDA (plugins/README.md)"
            ) from None
        if _find_creator(registry) is None and hasattr(_loaded[key], "getCreators"):
            if not registry.load_library(key):
                raise LtexportError(f"IPluginRegistry.load_library refused {library}; see the TensorRT log above")
    if _find_creator(registry) is None:
        raise LtexportError(
            f"{library} did not register {PLUGIN_NAMESPACE}::{PLUGIN_NAME} version {PLUGIN_VERSION}; "
            "use the library built from plugins/ (libltexport_trt_plugin.so)"
        )
    return library
