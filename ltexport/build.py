"""`ltexport build` and `ltexport validate`: export, compile, validate, and stage the output.

OUT holds model.onnx (+ model.onnx.data), plan.json, build.json, tokenizer/, report.json/.md and
Polygraphy JSON; it appears only after validation passed (`keep_failed` keeps a failed stage).
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ltexport.errors import LtexportError
from ltexport.models.sources import ModelSource, resolve
from ltexport.plan.schema import Plan, load_plan, save_plan
from ltexport.staging import staged_dir, write_text_atomic
from ltexport.validate.compare import Tolerance, greedy_passed

BUILD_JSON = "build.json"
DTYPES = ("fp32", "fp16", "bf16")


@dataclass
class BuildConfig:
    model: str
    plan_path: Path
    out: Path
    backend: str = "auto"  # auto | ort | trt
    dtype: str = "fp32"
    decode_steps: int = 32
    atol: float | None = None
    rtol: float | None = None
    keep_failed: Path | None = None
    trust_remote_code: bool = False
    log: object = field(default=print, repr=False)


def choose_backend(requested: str, log) -> str:
    from ltexport.backends import trt

    if requested == "trt" and not trt.is_available():
        raise LtexportError(f"--backend trt needs TensorRT, which is not importable here: {trt.INSTALL_HINT}")
    if requested == "auto":
        if trt.is_available():
            return "trt"
        log("TensorRT is not available; building for ONNX Runtime (CPU fallback)")
        return "ort"
    return requested


def tolerance(defaults: dict, dtype: str, atol: float | None, rtol: float | None) -> Tolerance:
    base = defaults["tolerances"][dtype]
    return Tolerance(atol=base["atol"] if atol is None else atol, rtol=base["rtol"] if rtol is None else rtol)


def build(config: BuildConfig) -> dict:
    if config.dtype not in DTYPES:
        raise LtexportError(f"unknown dtype {config.dtype!r}; use one of {', '.join(DTYPES)}")
    source = resolve(config.model, trust_remote_code=config.trust_remote_code)
    plan = load_plan(config.plan_path)
    plan.check_against(source.spec())
    _check_out(config.out)
    backend = choose_backend(config.backend, config.log)
    if backend == "ort" and config.dtype == "bf16":
        raise LtexportError("ONNX Runtime on CPU has no bfloat16 kernels (Mul, MatMul, ...); use --dtype fp32 or fp16 here, bf16 with --backend trt on a GPU machine")
    tol = tolerance(source.defaults, config.dtype, config.atol, config.rtol)
    timings = {}
    start = time.perf_counter()
    original = source.load_model(config.dtype)
    timings["load"] = time.perf_counter() - start
    with staged_dir(config.out, config.keep_failed) as stage:
        from ltexport.export.onnx_export import export_onnx
        from ltexport.hybrid.model import HybridModel

        config.log(f"exporting ONNX ({len(plan.lazy_layers)}/{plan.num_layers} lazy layers, {config.dtype}) ...")
        start = time.perf_counter()
        hybrid = HybridModel(original, plan).eval()
        export_onnx(hybrid, stage)
        timings["export"] = time.perf_counter() - start
        save_plan(plan, stage / "plan.json")
        _save_tokenizer(source, stage)
        write_text_atomic(stage / BUILD_JSON, json.dumps(_build_info(source, config, backend), indent=1) + "\n")
        if backend == "trt":
            _build_engine(stage, plan, timings, config.log)
        report = run_validation(stage, source, plan, hybrid, original, backend, config.dtype, tol,
                                config.decode_steps, timings, config.log)
        if report["status"] != "pass":
            kept = f"; the failed build is in {config.keep_failed}" if config.keep_failed else "; pass --keep-failed DIR to inspect it"
            raise LtexportError(f"validation failed ({_failed_checks(report)}){kept}")
    return report


def validate_existing(out: Path, backend: str | None = None, decode_steps: int = 32, atol=None, rtol=None, log=print) -> dict:
    """Re-run validation of a finished build (rewrites its report)."""
    info = read_build_info(out)
    source = resolve(info["model"], trust_remote_code=info.get("trust_remote_code", False))
    plan = load_plan(out / "plan.json")
    plan.check_against(source.spec())
    backend = backend or info["backend"]
    if backend == "trt":
        choose_backend("trt", log)
    tol = tolerance(source.defaults, info["dtype"], atol, rtol)
    from ltexport.hybrid.model import HybridModel

    original = source.load_model(info["dtype"])
    hybrid = HybridModel(original, plan).eval()
    return run_validation(out, source, plan, hybrid, original, backend, info["dtype"], tol, decode_steps, {}, log)


def run_validation(out_dir: Path, source: ModelSource, plan: Plan, hybrid, original, backend: str, dtype: str,
                   tol: Tolerance, decode_steps: int, timings: dict, log) -> dict:
    from ltexport.hybrid.step import TorchStep
    from ltexport.validate.compare import compare_backend
    from ltexport.validate.drift import quality_drift
    from ltexport.validate.report import make_report, write_report

    prompt = validation_prompt(source, plan, decode_steps)
    log(f"validating {backend} against the PyTorch reference: {len(prompt)} prompt tokens + {decode_steps} decode steps ...")
    start = time.perf_counter()
    runner, step = _backend_runner(out_dir, backend)
    comparison = compare_backend(runner, TorchStep(hybrid), prompt, decode_steps, tol, backend_step=step)
    timings["validate"] = time.perf_counter() - start
    drift = quality_drift(original, prompt, comparison.reference_tokens, comparison.reference_logits)
    scope = {"prompt_tokens": len(prompt), "decode_steps": decode_steps, "layers": "all"}
    report = make_report(comparison, backend=backend, dtype=dtype, drift=drift, timings=timings, scope=scope)
    write_report(out_dir, report, comparison)
    return report


def validation_prompt(source: ModelSource, plan: Plan, decode_steps: int) -> list[int]:
    """Enough calibration text that the sink+window ring wraps during prefill and again in decode."""
    from ltexport.plan.identify import default_calibration_text

    spec = source.spec()
    length = plan.sink + plan.window + 64
    if spec.max_positions:
        length = min(length, spec.max_positions - decode_steps - 1)
    return source.load_tokenizer().encode(default_calibration_text())[:length]


def _backend_runner(out_dir: Path, backend: str):
    from ltexport.backends.ort.session import OrtStep

    if backend == "trt":
        from ltexport.backends.trt.runner import trt_runner

        return trt_runner(out_dir), None
    from polygraphy.backend.onnxrt import OnnxrtRunner

    step = OrtStep(out_dir / "model.onnx")
    return OnnxrtRunner(lambda: step.session, name="onnxruntime"), step


def _build_engine(stage: Path, plan: Plan, timings: dict, log) -> None:
    from ltexport.backends.trt.engine import build_engine_for_build_dir

    start = time.perf_counter()
    log("building the TensorRT engine ...")
    build_engine_for_build_dir(stage, plan)
    timings["engine"] = time.perf_counter() - start


def _check_out(out: Path) -> None:
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / BUILD_JSON).is_file())):
        raise LtexportError(f"{out} exists and is not an ltexport build; choose another -o or remove it")


def _save_tokenizer(source: ModelSource, stage: Path) -> None:
    if source.kind != "tiny":
        source.load_tokenizer().save_pretrained(str(stage / "tokenizer"))


def _build_info(source: ModelSource, config: BuildConfig, backend: str) -> dict:
    return {"model": config.model, "source": source.describe(), "backend": backend, "dtype": config.dtype,
            "trust_remote_code": config.trust_remote_code, "tokenizer": "byte" if source.kind == "tiny" else "tokenizer"}


def read_build_info(out: Path) -> dict:
    path = Path(out) / BUILD_JSON
    if not path.is_file():
        raise LtexportError(f"{out} is not an ltexport build directory (no {BUILD_JSON}); create one with `ltexport build`")
    return json.loads(path.read_text())


def _failed_checks(report: dict) -> str:
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    if not greedy_passed(report["greedy"]):
        failed.append(f"greedy tokens diverge at step {report['greedy']['first_mismatch']}")
    return ", ".join(failed) or "unknown"
