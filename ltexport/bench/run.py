"""`ltexport bench`: decode speed, prefill latency, KV-cache bytes and peak RSS of three variants,
measured in one run on one machine:
- hybrid: the plan as given;
- no-lazy: the same model and engine with no lazy layers (what the hybrid is compared with);
- transformers: the original model under transformers' own `generate`.
Each variant lives in its own worker process (worker.py); points run round-robin across variants,
so all variants see the same machine load at roughly the same time.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from ltexport.bench import peers as peer_models
from ltexport.bench.bound import PROBE_BYTES, BandwidthProbe, bound_fraction, step_bytes
from ltexport.errors import LtexportError
from ltexport.outputs import Marker
from ltexport.plan.schema import load_plan, save_plan
from ltexport.plan.summary import kv_cache_bytes
from ltexport.progress import progress

FORMAT = "ltexport-bench"
MARKER = Marker("bench.json", FORMAT, "an ltexport bench output")  # what lets a later bench replace its -o
BACKENDS = ("ort", "torch")
DEFAULT_CONTEXTS = (1024, 2048, 4096, 8192)
DEFAULT_BATCHES = (1, 4, 8)
VARIANTS = ("hybrid", "no-lazy", "transformers")


@dataclass
class BenchConfig:
    model: str
    plan_path: Path
    backend: str = "ort"
    contexts: list[int] | None = None      # batch 1, with prefill
    batches: list[int] = field(default_factory=lambda: list(DEFAULT_BATCHES))
    batch_context: int | None = None       # context of the batch sweep (None: largest context <= 4096)
    decode_steps: int = 16
    prefill_chunk: int = 1024
    repeats: int = 1
    transformers: bool = True
    peers: bool = True                     # onnxruntime-genai's full and windowed models, when installed (ort)
    threads: int | None = None
    trust_remote_code: bool = False  # passed to transformers here and in the worker processes
    show_progress: bool = True
    log: object = field(default=print, repr=False)


def check_config(config: BenchConfig, spec) -> tuple[list[int], int]:
    if config.backend not in BACKENDS:
        raise LtexportError(f"unknown backend {config.backend!r}; use one of {', '.join(BACKENDS)}")
    margin = config.decode_steps + 2
    limit = spec.max_positions - margin if spec.max_positions else None
    contexts = config.contexts or default_contexts(limit)
    if limit is not None and max(contexts) > limit:
        raise LtexportError(f"context {max(contexts)} + {margin} decode tokens exceeds the model's "
                            f"{spec.max_positions} positions; lower --contexts")
    batch_context = config.batch_context or max([c for c in contexts if c <= 4096] or [min(contexts)])
    if limit is not None and batch_context > limit:
        raise LtexportError(f"--batch-context {batch_context} exceeds the model's positions; lower it")
    for name, value in (("--decode-steps", config.decode_steps), ("--prefill-chunk", config.prefill_chunk),
                        ("--repeats", config.repeats)):
        if value < 1:
            raise LtexportError(f"{name} must be >= 1, got {value}")
    return contexts, batch_context


def check_memory(config: BenchConfig, source, plans: dict, todo: list[dict]) -> None:
    """Refuse, before exporting anything, a sweep whose workers cannot all fit in memory at once."""
    from ltexport.preflight import FP32, bench_memory, parameter_count, require_bench_memory

    def caches(plan, batch_one: bool = False, copies: int = 1) -> float:  # fp32 caches of the largest point
        sizes = [p["batch"] * kv_cache_bytes(plan, p["context"] + config.decode_steps + 2, FP32, bool(plan.lazy_layers))
                 for p in todo if p["batch"] == 1 or not batch_one]
        return copies * max(sizes, default=0)

    extra = {name: caches(p) for name, p in plans.items()}
    if _wants_peers(config) and peer_models.genai_available():
        extra.update({f"genai-{kind}": caches(plans["no-lazy"], batch_one=True) for kind in ("full", "windowed")})
    if config.transformers:
        extra["transformers"] = caches(plans["no-lazy"], copies=2)  # DynamicCache grows by concatenation
    require_bench_memory(bench_memory(FP32 * parameter_count(source), extra, PROBE_BYTES))


def default_contexts(limit: int | None) -> list[int]:
    """DEFAULT_CONTEXTS; one beyond the model's positions becomes the longest that fits (8192 -> 8174
    for an 8K model decoding 16 tokens), so the longest context the model supports is measured."""
    if limit is None:
        return list(DEFAULT_CONTEXTS)
    fit = [c for c in DEFAULT_CONTEXTS if c <= limit]
    if any(c > limit for c in DEFAULT_CONTEXTS) and limit > max(fit, default=0):
        fit.append(limit)
    return fit


def points(contexts: list[int], batches: list[int], batch_context: int) -> list[dict]:
    """Context sweep at batch 1 (with prefill), then the batch sweep at one context; smallest first."""
    chosen = {(c, 1): True for c in contexts}
    for b in batches:
        chosen.setdefault((batch_context, b), False)
    return [{"context": c, "batch": b, "prefill": chosen[(c, b)]} for c, b in sorted(chosen, key=lambda p: (p[1], p[0]))]


class Worker:
    """A variant's process; JSON lines over its stdin/stdout, stderr to a log file."""

    def __init__(self, name: str, spec: dict, tmp: Path, batch_one: bool = False):
        self.name = name
        self.batch_one = batch_one  # serves batch-1 points only (the onnxruntime-genai peers)
        spec_path = tmp / f"{name}.spec.json"
        spec_path.write_text(json.dumps(spec))
        self.log_path = tmp / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "ltexport.bench.worker", str(spec_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log_path, "w"),
                                     text=True, env=_child_env())

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = [x for x in self.log_path.read_text().splitlines() if x.strip()][-1:] or ["no output"]
            raise LtexportError(f"bench worker '{self.name}' stopped (exit {self.proc.returncode}: {tail[0][:300]}); "
                                "lower --contexts/--batches if it ran out of memory")
        return json.loads(line)

    def ask(self, args: dict) -> dict:
        self.proc.stdin.write(json.dumps({"op": "point", "args": args}) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def _child_env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def bench(config: BenchConfig) -> dict:
    from ltexport.models.sources import resolve

    source = resolve(config.model, trust_remote_code=config.trust_remote_code)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    spec = source.spec()
    plan = load_plan(config.plan_path)
    plan.check_against(spec)
    if not plan.lazy_layers:
        raise LtexportError(f"{config.plan_path} has no lazy layers: nothing to compare; use a plan from `ltexport plan`")
    contexts, batch_context = check_config(config, spec)
    plans = {"hybrid": plan, "no-lazy": replace(plan, lazy_layers=[], scores=None, metadata={})}
    todo = points(contexts, config.batches, batch_context)
    check_memory(config, source, plans, todo)
    with tempfile.TemporaryDirectory(prefix="ltexport-bench-") as tmp:
        tmp = Path(tmp)
        for name, p in plans.items():
            save_plan(p, tmp / f"{name}.plan.json")
        exports = _export(config, tmp) if config.backend == "ort" else {}
        genai = _build_peers(config, source, plan, tmp)
        workers = _start_workers(config, tmp, spec.vocab_size, genai)
        try:
            ready = {w.name: w.read() for w in workers}
            probe = BandwidthProbe(config.threads)
            measured = _measure(config, workers, todo, probe)
        finally:
            for w in workers:
                w.close()
    bandwidth = probe.summary()
    config.log(f"memory read bandwidth: median {bandwidth['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s over "
               f"{bandwidth['bandwidth_probes']} probes ({bandwidth['bandwidth_min_bytes_per_s'] / 1e9:.1f} to "
               f"{bandwidth['bandwidth_max_bytes_per_s'] / 1e9:.1f}), one before and after every timed decode run")
    weight_bytes = next((r["weight_bytes"] for r in ready.values() if "weight_bytes" in r), exports.get("weight_bytes"))
    results = _assemble(config, source, plans, contexts, batch_context, exports, ready, measured, weight_bytes, bandwidth)
    results["machine"]["load_average_at_start"] = load_before
    return results


def _wants_peers(config: BenchConfig) -> bool:
    """onnxruntime-genai's models run beside the ONNX Runtime variants only."""
    return config.backend == "ort" and config.peers


def _build_peers(config: BenchConfig, source, plan, tmp: Path) -> dict:
    if not _wants_peers(config):
        return {}
    if not peer_models.genai_available():
        config.log(f"note: onnxruntime-genai is not installed, so it is not measured ({peer_models.INSTALL_HINT})")
        return {}
    return peer_models.build_peers(source, plan, tmp / "genai", config.threads, config.log)


def _export(config: BenchConfig, tmp: Path) -> dict:
    config.log(f"exporting the hybrid to ONNX and lowering it and the no-lazy model to fast graphs in {tmp} ...")
    spec = {"mode": "export", "model": config.model, "trust_remote_code": config.trust_remote_code,
            "exports": {n: {"plan": str(tmp / f"{n}.plan.json"), "out": str(tmp / "onnx"), "ort": str(_fast_graph(tmp, n))}
                        for n in ("hybrid", "no-lazy")}}
    worker = Worker("export", spec, tmp)
    try:
        return worker.read()
    finally:
        worker.proc.wait()


def _fast_graph(tmp: Path, name: str) -> Path:
    return tmp / "onnx" / f"{name}.ort.onnx"


def _start_workers(config: BenchConfig, tmp: Path, vocab: int, genai: dict) -> list[Worker]:
    common = {"mode": "serve", "model": config.model, "trust_remote_code": config.trust_remote_code,
              "vocab_size": vocab, "threads": config.threads}
    workers = []
    for name in ("hybrid", "no-lazy"):
        if config.backend == "ort":
            spec = {**common, "kind": "ort", "onnx": str(_fast_graph(tmp, name))}
        else:
            spec = {**common, "kind": "torch", "plan": str(tmp / f"{name}.plan.json")}
        workers.append(Worker(name, spec, tmp))
    for name, model_dir in genai.items():
        workers.append(Worker(name, {**common, "kind": "genai", "dir": str(model_dir)}, tmp, batch_one=True))
    if config.transformers:
        workers.append(Worker("transformers", {**common, "kind": "hf"}, tmp))
    config.log(f"loading {len(workers)} variants in worker processes ...")
    return workers


def _measure(config: BenchConfig, workers: list[Worker], todo: list[dict], probe: BandwidthProbe) -> list[dict]:
    bar = progress(len(todo) * len(workers) * config.repeats, "bench", config.show_progress)
    rows = []
    for point in todo:
        serving = [w for w in workers if point["batch"] == 1 or not w.batch_one]
        runs = {w.name: [] for w in serving}
        for rep in range(config.repeats):
            for w in serving:  # round-robin: every variant sees the same load
                bar.set_postfix_str(f"{w.name} ctx {point['context']} batch {point['batch']}")
                runs[w.name].append(_run(config, w, point, point["prefill"] and rep == 0, probe))  # prefill once
                bar.update(1)
        rows += [_median(name, r) for name, r in runs.items()]
    bar.close()
    return rows


def _run(config: BenchConfig, worker: Worker, point: dict, prefill: bool, probe: BandwidthProbe) -> dict:
    """One variant's run at a point: its prefill (when asked), then its decode between two bandwidth
    probes, so the run's share of the bytes bound uses the bandwidth of its own moment."""
    args = {**point, "decode_steps": config.decode_steps, "prefill_chunk": config.prefill_chunk}
    prefilled = worker.ask({**args, "prefill": True, "decode_steps": 0}) if prefill else None
    before = probe()
    run = worker.ask({**args, "prefill": False})
    run["bandwidth_bytes_per_s"] = (before + probe()) / 2
    if prefilled:
        run["prefill_s"] = prefilled["prefill_s"]
        run["peak_rss_bytes"] = max(run["peak_rss_bytes"], prefilled["peak_rss_bytes"])
    return run


def _median(variant: str, runs: list[dict]) -> dict:
    row = dict(runs[0], variant=variant, repeats=len(runs))
    times = [t for r in runs for t in r["decode_step_times"]]
    row["decode_step_times"] = [round(t, 6) for t in times]
    row["decode_step_s"] = statistics.median(times)  # over every timed step of every run
    row["decode_tokens_per_s"] = row["batch"] / row["decode_step_s"]
    row["decode_tokens_per_s_mean"] = row["batch"] * len(times) / sum(times)
    row["decode_tokens_per_s_runs"] = [round(r["decode_tokens_per_s"], 3) for r in runs]
    row["runs"] = [{"decode_step_s": r["decode_step_s"], "bandwidth_bytes_per_s": r["bandwidth_bytes_per_s"]} for r in runs]
    row["bandwidth_bytes_per_s"] = statistics.median(r["bandwidth_bytes_per_s"] for r in runs)
    row["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
    loads = [r["load_average_1min"] for r in runs if r.get("load_average_1min") is not None]
    row["load_average_1min"] = max(loads) if loads else None
    return row


# The bytes each variant must read per step are those of the hybrid plan or of full attention.
_READS_LIKE_HYBRID = ("hybrid", "genai-windowed")


def _assemble(config, source, plans, contexts, batch_context, exports, ready, rows, weight_bytes, bandwidth) -> dict:
    element = 4  # fp32 everywhere in the benchmark
    for row in rows:
        plan = plans["hybrid"] if row["variant"] in _READS_LIKE_HYBRID else plans["no-lazy"]
        row["bound_bytes_per_step"] = step_bytes(weight_bytes, plan, row["context"], row["batch"], element)
        # the share of the bandwidth each run's necessary reads reach, against that run's own probes
        for run in row["runs"]:
            run["bound_fraction"] = bound_fraction(row["bound_bytes_per_step"], run["decode_step_s"], run["bandwidth_bytes_per_s"])
        row["bound_fraction"] = statistics.median(run["bound_fraction"] for run in row["runs"])
    variants = {name: {**info, **(exports.get("exports", {}).get(name, {}))} for name, info in ready.items()}
    hybrid = plans["hybrid"]
    return {
        "format": FORMAT, "version": 1, "model": config.model, "source": source.describe(), "backend": config.backend,
        "plan": {"path": str(config.plan_path), "lazy_layers": hybrid.lazy_layers, "num_layers": hybrid.num_layers,
                 "sink": hybrid.sink, "window": hybrid.window, "prefill": hybrid.prefill},
        "settings": {"contexts": contexts, "batches": config.batches, "batch_context": batch_context,
                     "decode_steps": config.decode_steps, "prefill_chunk": config.prefill_chunk,
                     "repeats": config.repeats, "dtype": "fp32", "threads": config.threads},
        "machine": {**_machine(), **bandwidth}, "weight_bytes": weight_bytes,
        "export": {k: v for k, v in exports.items() if k != "exports"} if exports else None,
        "variants": variants, "points": rows, "speedups": speedups(rows),
    }


def speedups(rows: list[dict]) -> list[dict]:
    """Per (context, batch): the hybrid's measured decode speedups and the bound's prediction."""
    by_key = {(r["variant"], r["context"], r["batch"]): r for r in rows}
    out = []
    for r in rows:
        if r["variant"] != "hybrid":
            continue
        base = by_key.get(("no-lazy", r["context"], r["batch"]))
        hf = by_key.get(("transformers", r["context"], r["batch"]))
        win, full = (by_key.get((v, r["context"], r["batch"])) for v in ("genai-windowed", "genai-full"))
        out.append({
            "context": r["context"], "batch": r["batch"],
            "vs_no_lazy": r["decode_tokens_per_s"] / base["decode_tokens_per_s"] if base else None,
            "vs_transformers": r["decode_tokens_per_s"] / hf["decode_tokens_per_s"] if hf else None,
            "vs_genai_windowed": r["decode_tokens_per_s"] / win["decode_tokens_per_s"] if win else None,
            "no_lazy_vs_genai_full": base["decode_tokens_per_s"] / full["decode_tokens_per_s"] if base and full else None,
            "prefill_vs_genai_windowed": win["prefill_s"] / r["prefill_s"] if win and r.get("prefill_s") and win.get("prefill_s") else None,
            "bound": base["bound_bytes_per_step"] / r["bound_bytes_per_step"] if base else None,
            "kv_ratio": r["kv_cache_bytes"] / base["kv_cache_bytes"] if base else None,
        })
    return out


def _machine() -> dict:
    import onnxruntime
    import torch

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
