"""One benchmark variant in its own process, so its memory is its own.

`python -m ltexport.bench.worker SPEC.json`; SPEC["mode"]:
- "export": model.onnx of the first plan in SPEC["exports"], each plan's fast graph beside it; print
  one JSON line.
- "serve": load one variant, print {"ready": ...}, then answer one JSON command per stdin line
  ({"op": "point", ...} or {"op": "quit"}) with one JSON line.
Libraries print to stdout (the ONNX exporter does), so the protocol gets a private copy of stdout
and everything else goes to stderr.
"""

import json
import os
import statistics
import sys
import time

from ltexport.bench import memory


def main(spec_path: str) -> None:
    _exit_with_parent()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    spec = json.loads(open(spec_path).read())
    if spec["mode"] == "export":
        proto.write(json.dumps(export_all(spec)) + "\n")
        return
    runner = make_runner(spec)
    proto.write(json.dumps({"ready": True, **runner.info}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        proto.write(json.dumps(measure_point(runner, **command["args"])) + "\n")


def _exit_with_parent() -> None:
    """A killed parent cannot close our stdin while we compute: leave when it is gone."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def export_all(spec: dict) -> dict:
    """model.onnx of the first plan in SPEC["exports"], then each plan lowered beside it
    (SPEC["exports"][name]["ort"]: the fast graphs read that one weight file)."""
    from ltexport.bench.bound import weight_bytes_read
    from ltexport.export.onnx_export import export_onnx
    from ltexport.export.ort_lowering import lower
    from ltexport.hybrid.model import HybridModel
    from ltexport.models.sources import resolve
    from ltexport.plan.schema import load_plan

    start = time.perf_counter()
    model = resolve(spec["model"], trust_remote_code=spec["trust_remote_code"]).load_model("fp32")
    result = {"load_s": time.perf_counter() - start, "weight_bytes": weight_bytes_read(model), "exports": {}}
    portable = None
    for name, item in spec["exports"].items():
        memory.reset_peak()
        start = time.perf_counter()
        hybrid = HybridModel(model, load_plan(item["plan"])).eval()
        if portable is None:
            portable = export_onnx(hybrid, _mkdir(item["out"]))
        lower(hybrid, portable, item["ort"])
        result["exports"][name] = {"export_s": time.perf_counter() - start, "peak_rss_bytes": memory.peak_rss()}
    return result


def _mkdir(path: str):
    from pathlib import Path

    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def make_runner(spec: dict):
    from ltexport.bench import runners

    start = time.perf_counter()
    kinds = {"ort": runners.OrtRunner, "torch": runners.TorchRunner, "hf": runners.HfRunner, "genai": runners.GenaiRunner}
    runner = kinds[spec["kind"]](spec)
    runner.info.update(load_s=time.perf_counter() - start, rss_after_load_bytes=memory.current_rss())
    return runner


def measure_point(runner, context: int, batch: int, decode_steps: int, prefill: bool, prefill_chunk: int) -> dict:
    """Prefill (when asked) and `decode_steps` timed decode steps (none: prefill only). The parent asks
    for the two separately so that its bandwidth probes sit right before and after the decode."""
    exact = memory.reset_peak()
    result = {"context": context, "batch": batch, "prefill_s": None}
    if prefill:
        result["prefill_s"] = runner.prefill(context, prefill_chunk)
    if decode_steps:
        times, cache_bytes = runner.decode(batch, context, decode_steps)
        step_s = statistics.median(times)
        result.update(decode_step_times=times, decode_step_s=step_s, decode_tokens_per_s=batch / step_s,
                      kv_cache_bytes=cache_bytes)
    result.update(peak_rss_bytes=memory.peak_rss(), peak_rss_per_point=exact,
                  load_average_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                  **runner.device_memory())
    return result


if __name__ == "__main__":
    main(sys.argv[1])
