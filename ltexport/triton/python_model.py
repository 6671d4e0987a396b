"""The Triton python-backend model of `ltexport package --runtime python` (its model.py imports this).

Runs inside Triton's python backend stub, which must run in a Python environment where ltexport is
installed (`ltexport serve` starts tritonserver that way). Each model instance opens the build in
its version directory with ltexport's own step code (`ltexport.runtime.open_step`: ONNX Runtime,
or the build's TensorRT engine where TensorRT imports) and keeps every live sequence's caches,
keyed by correlation id (ltexport.triton.sequences).

Tensors cross the stub by DLPack, not `as_numpy()` / `Tensor(name, ndarray)`: the stub of Triton
2.51 (nvidia-pytriton 0.7) is built against NumPy 1.x and with NumPy 2 those return wrong data
(seen: garbage input ids, empty outputs). DLPack involves no NumPy ABI.

Metrics (Triton's metrics endpoint, labels model/version/instance): ltexport_sequences_held,
ltexport_sequence_cache_bytes, ltexport_sequences_freed_total{reason=end|idle}.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ltexport.backends.trt import PLUGIN_ENV
from ltexport.build_info import read_build_info
from ltexport.export.contract import INPUT_IDS, LOGITS, PLUGIN_LIBRARY
from ltexport.runtime import open_step
from ltexport.triton.config import BACKEND_PARAMETER
from ltexport.triton.sequences import SequenceCaches, SequenceError

_CONTROL_KINDS = ("CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_CORRID")


def control_names(config: dict) -> dict:
    """{control kind: input name} from the model configuration's sequence_batching.control_input."""
    names = {c["kind"]: ctl["name"] for ctl in config["sequence_batching"].get("control_input", [])
             for c in ctl["control"]}
    missing = [k for k in _CONTROL_KINDS if k not in names]
    if missing:
        raise RuntimeError(f"config.pbtxt lacks the sequence controls {missing}; package the build again")
    return names


def idle_timeout_s(config: dict) -> float:
    # Triton's own default when the field is absent: 1 s.
    return int(config["sequence_batching"].get("max_sequence_idle_microseconds", 1_000_000)) / 1e6


class _Sweeper(threading.Thread):
    """Calls sweep() every `interval` seconds until stopped."""

    def __init__(self, interval: float, sweep):
        super().__init__(name="ltexport-idle-sweep", daemon=True)
        self.interval, self.sweep, self._stopped = interval, sweep, threading.Event()

    def run(self):
        while not self._stopped.wait(self.interval):
            self.sweep()

    def stop(self):
        self._stopped.set()
        self.join(timeout=5)


class _Metrics:
    """The instance's cache gauges; a no-op where the server runs without metrics.

    Each update is a message to the server process, so between sequence starts and ends (which
    always update) the gauges are refreshed at most once per `interval_s`.
    """

    def __init__(self, pb, labels: dict, interval_s: float = 1.0):
        self.interval_s, self._last = interval_s, float("-inf")
        try:
            gauge, counter = pb.MetricFamily.GAUGE, pb.MetricFamily.COUNTER
            # the families must outlive their metrics
            self.families = [pb.MetricFamily("ltexport_sequences_held", "Sequences whose caches the instance holds",
                                             gauge),
                             pb.MetricFamily("ltexport_sequence_cache_bytes", "Bytes of KV caches the instance holds",
                                             gauge),
                             pb.MetricFamily("ltexport_sequences_freed_total", "Sequences whose caches were freed",
                                             counter)]
            self.held, self.bytes = (f.Metric(labels) for f in self.families[:2])
            self.freed = {r: self.families[2].Metric({**labels, "reason": r}) for r in ("end", "idle")}
        except Exception:  # noqa: BLE001 - metrics disabled (--allow-metrics=false) or unsupported
            self.held = None

    def update(self, caches: SequenceCaches, ended: int = 0, idled: int = 0, force: bool = True):
        now = time.monotonic()
        if self.held is None or not (force or now - self._last >= self.interval_s):
            return
        self._last = now
        self.held.set(caches.held)
        self.bytes.set(caches.held_bytes)
        if ended:
            self.freed["end"].increment(ended)
        if idled:
            self.freed["idle"].increment(idled)


def quiet_numpy_capsule_warning() -> None:
    """Drop one harmless message: the stub renames a consumed DLPack capsule "used_dlpack" (not the
    standard "used_dltensor"), so NumPy's capsule destructor reports a ValueError for every output
    tensor made by `Tensor.from_dlpack(name, ndarray)`; the stub frees the tensor itself."""
    previous = sys.unraisablehook

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, ValueError) and "PyCapsule_GetPointer called with incorrect name" in str(exc):
            return
        previous(unraisable)

    sys.unraisablehook = hook


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb  # exists only inside Triton's python backend stub

        self.pb = pb
        config = json.loads(args["model_config"])
        self.controls = control_names(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        plugin = version_dir / PLUGIN_LIBRARY
        if plugin.is_file():
            os.environ.setdefault(PLUGIN_ENV, str(plugin))  # the TensorRT engine's plugin, packaged beside it
        params = config.get("parameters", {})
        backend = params.get(BACKEND_PARAMETER, {}).get("string_value", "auto")
        quiet_numpy_capsule_warning()

        self._stack = ExitStack()
        step = self._stack.enter_context(open_step(version_dir, read_build_info(version_dir), backend, 0))
        vocab = int(config["output"][0]["dims"][-1])
        self.caches = SequenceCaches(step, idle_timeout_s(config), vocab)
        self.name = f"{args['model_name']} instance {args['model_instance_name']}"
        self.metrics = _Metrics(pb, {"model": args["model_name"], "version": args["model_version"],
                                     "instance": args["model_instance_name"]})
        self.metrics.update(self.caches)
        self.sweeper = _Sweeper(min(1.0, max(0.01, self.caches.idle_timeout_s / 4)), self._sweep)
        self.sweeper.start()
        pb.Logger.log_info(f"ltexport: {self.name} serves {version_dir} with {type(step).__name__}; idle sequences "
                           f"are freed after {self.caches.idle_timeout_s:g} s")

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def finalize(self):
        self.sweeper.stop()
        self.caches.clear()
        self._stack.close()

    def _respond(self, request):
        pb = self.pb
        try:
            corrid = int(self._input(request, self.controls["CONTROL_SEQUENCE_CORRID"]).item())
            start = bool(self._input(request, self.controls["CONTROL_SEQUENCE_START"]).item())
            end = bool(self._input(request, self.controls["CONTROL_SEQUENCE_END"]).item())
            logits = self.caches.run(corrid, self._input(request, INPUT_IDS), start, end)
        except SequenceError as exc:
            return pb.InferenceResponse(error=pb.TritonError(str(exc)))
        except Exception as exc:  # noqa: BLE001 - an internal bug: keep the traceback in the server log
            pb.Logger.log_error(f"ltexport: {self.name}: {traceback.format_exc()}")
            return pb.InferenceResponse(error=pb.TritonError(f"internal error in the ltexport model: {exc!r}"))
        if end:
            pb.Logger.log_info(f"ltexport: {self.name}: sequence {corrid} ended, caches freed; {self.caches.held} held")
        self.metrics.update(self.caches, ended=int(end), force=start or end)
        return pb.InferenceResponse([pb.Tensor.from_dlpack(LOGITS, np.ascontiguousarray(logits))])

    def _input(self, request, name) -> np.ndarray:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise SequenceError(f"the request has no '{name}' input; send input_ids with a sequence id")
        return np.from_dlpack(tensor).copy()  # the request's memory is released after execute()

    def _sweep(self):
        freed = self.caches.sweep()
        if freed:
            self.pb.Logger.log_info(f"ltexport: {self.name}: sequences {freed} idle for more than "
                                    f"{self.caches.idle_timeout_s:g} s, caches freed; {self.caches.held} held")
            self.metrics.update(self.caches, idled=len(freed))
