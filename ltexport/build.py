"""`ltexport build` and `ltexport validate`: export, compile, validate, and stage the output.

OUT holds model.onnx (+ model.onnx.data), plan.json, build.json, tokenizer/, report.json/.md and
Polygraphy JSON; it appears only after validation passed (`keep_failed` keeps a failed stage).
When only a prefix of the layers is validated (ltexport.validate.scope), OUT/validation/ holds the
prefix graph that was compared, its plan and its Polygraphy JSON.
"""

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ltexport.build_info import DTYPES, MARKER, load_build, new_build_info, record_files, write_build_info
from ltexport.errors import LtexportError
from ltexport.export.contract import ORT_MODEL_FILE
from ltexport.models.sources import ModelSource, resolve
from ltexport.outputs import check_output_dir, writable_dir
from ltexport.plan.schema import Plan, load_plan, save_plan
from ltexport.staging import staged_dir
from ltexport.validate.compare import Tolerance, greedy_passed
from ltexport.validate.report import engine_report

ENGINE_BACKENDS = ("trt", "trt-rtx")  # TensorRT proper (builds and validates on a GPU), TensorRT for RTX (builds only)


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
    validate_layers: str = "auto"  # auto | all | N (see ltexport.validate.scope)
    # TensorRT engine ranges (None: sized for validation, see Profiles.for_validation)
    max_batch: int | None = None
    max_prompt: int | None = None
    max_context: int | None = None
    compute_capabilities: str | None = None  # trt-rtx: "80,86,89,120" (default: DEFAULT_COMPUTE_CAPABILITIES)
    plugin: bool = True  # TensorRT: the plugin for the lazy layers, or (False) the graph's function body
    log: object = field(default=print, repr=False)


def choose_backend(requested: str, log) -> str:
    """The backend to build for; `auto` asks the same probe as `ltexport env`."""
    from ltexport.backends import trt
    from ltexport.env import backend_status

    if requested in ENGINE_BACKENDS and not trt.is_available(requested):
        raise LtexportError(f"--backend {requested} needs TensorRT{'-RTX' if requested == 'trt-rtx' else ''}, which is "
                            f"not importable here: {trt.install_hint(requested)}")
    if requested == "auto":
        status = backend_status("trt")
        if status.usable:
            return "trt"
        log(f"building for ONNX Runtime (the CPU fallback): {status.reason} (`ltexport env` lists the backends)")
        return "ort"
    return requested


def tolerance(defaults: dict, dtype: str, atol: float | None, rtol: float | None) -> Tolerance:
    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise LtexportError(f"{name} must be a finite number >= 0, got {value!r}; e.g. {name} 1e-4")
    base = defaults["tolerances"][dtype]
    return Tolerance(atol=base["atol"] if atol is None else atol, rtol=base["rtol"] if rtol is None else rtol)


def build(config: BuildConfig) -> dict:
    if config.dtype not in DTYPES:
        raise LtexportError(f"unknown dtype {config.dtype!r}; use one of {', '.join(DTYPES)}")
    _check_outputs(config.out, config.keep_failed)
    source = resolve(config.model, trust_remote_code=config.trust_remote_code)
    plan = load_plan(config.plan_path)
    plan.check_against(source.spec())
    tol = tolerance(source.defaults, config.dtype, config.atol, config.rtol)
    _check_decode_steps(source.spec(), plan, config.decode_steps)
    backend = choose_backend(config.backend, config.log)
    if backend == "ort" and config.dtype == "bf16":
        raise LtexportError("ONNX Runtime on CPU has no bfloat16 kernels (Mul, MatMul, ...); use --dtype fp32 or fp16 here, bf16 with --backend trt on a GPU machine")
    engine = backend in ENGINE_BACKENDS
    profile = engine_profile(config, plan, source.spec()) if engine else _no_profile(config)
    capabilities = _engine_options(config, backend)
    scope = _preflight(source, plan, config, graphs=2 if backend == "ort" else 1)
    timings = {}
    with staged_dir(config.out, MARKER, config.keep_failed, log=config.log) as stage:
        config.log(f"exporting ONNX ({len(plan.lazy_layers)}/{plan.num_layers} lazy layers, {config.dtype}) ...")
        start = time.perf_counter()
        export_model(source, plan, config.dtype, stage)
        timings["export"] = time.perf_counter() - start
        save_plan(plan, stage / "plan.json")
        _save_tokenizer(source, stage)
        if scope.prefix:
            _export_prefix(source, plan, config.dtype, scope.layers, stage, timings, config.log)
        record = None
        if engine:
            record = _build_engine(stage, plan, profile, timings, config, backend, capabilities)
            if scope.prefix and backend == "trt":  # validation runs the engine: build one for the prefix too
                _build_engine(*_validated_graph(stage, plan, scope), profile, timings, config, backend, capabilities)
        info = _build_info(source, config, backend, scope, profile, record)
        write_build_info(stage, info)
        # TensorRT-RTX builds without a GPU: what is validated is the ONNX graph, on ONNX Runtime.
        report = run_validation(stage, source, plan, "ort" if backend == "trt-rtx" else backend, config.dtype, tol,
                                config.decode_steps, scope, timings, config.log, engine=info.get("engine"))
        if report["status"] != "pass":
            kept = f"; the failed build is in {config.keep_failed}" if config.keep_failed else "; pass --keep-failed DIR to inspect it"
            raise LtexportError(f"validation failed ({_failed_checks(report)}){kept}")
    return report


def engine_profile(config: BuildConfig, plan: Plan, spec):
    """The engine's shape ranges: the user's, which must cover the validation run, else sized for it."""
    from ltexport.backends.trt.profiles import Profiles

    default = Profiles.for_validation(plan.sink, plan.window, max_batch=config.max_batch or 1)
    max_prompt = config.max_prompt or default.max_prompt
    max_context = config.max_context or max(default.max_context, max_prompt + 1024)
    prompt = _prompt_length(spec, plan, config.decode_steps)
    if max_prompt < prompt:
        raise LtexportError(f"--max-prompt {max_prompt} is below the validation prompt ({prompt} tokens, "
                            f"sink + window + 64); use --max-prompt {prompt} or more")
    if max_context < prompt + config.decode_steps:
        raise LtexportError(f"--max-context {max_context} is below what validation decodes to ({prompt} prompt tokens "
                            f"+ {config.decode_steps} steps); use --max-context {prompt + config.decode_steps} or more")
    if max_context < max_prompt:
        raise LtexportError(f"--max-context {max_context} is below --max-prompt {max_prompt}; raise --max-context")
    return Profiles(max_batch=default.max_batch, max_prompt=max_prompt, max_context=max_context)


def _no_profile(config: BuildConfig) -> None:
    if any(v is not None for v in (config.max_batch, config.max_prompt, config.max_context)):
        config.log("note: --max-batch/--max-prompt/--max-context size TensorRT engines; ONNX Runtime ignores them")
    return None


def _engine_options(config: BuildConfig, backend: str):
    """The TensorRT-RTX compute capabilities (checked before anything is exported), or None."""
    from ltexport.backends import trt

    if backend not in ENGINE_BACKENDS:
        if config.compute_capabilities:
            raise LtexportError("--compute-capability is for --backend trt-rtx; drop it or choose that backend")
        if not config.plugin:
            config.log("note: --no-plugin selects how TensorRT builds the lazy layers; ONNX Runtime always runs the "
                       "graph's function body")
        return None
    return trt.compute_capabilities_for(config.compute_capabilities, backend)


def export_model(source: ModelSource, plan: Plan, dtype: str, out_dir: Path) -> Path:
    """Trace a weightless skeleton of the plan's layers (all, or a prefix), stream the checkpoint
    into out_dir/model.onnx.data."""
    from ltexport.export.onnx_export import export_onnx
    from ltexport.export.ort_lowering import lower_for_build
    from ltexport.hybrid.model import HybridModel

    hybrid = HybridModel(source.skeleton(dtype, plan.num_layers), plan).eval()
    path = export_onnx(hybrid, out_dir, source.weights())
    lower_for_build(source, plan, dtype, out_dir)  # + model.ort.onnx, ONNX Runtime's fast graph
    return path


def _preflight(source: ModelSource, plan: Plan, config: BuildConfig, graphs: int):
    """Choose what to validate from the memory it needs (`graphs`: ONNX Runtime graphs compared at
    once); refuse when the output will not fit on disk."""
    from ltexport import preflight
    from ltexport.validate.scope import choose_scope

    spec = source.spec()
    tokens = _prompt_length(spec, plan, config.decode_steps)
    count = functools.cache(lambda layers=None: preflight.parameter_count(source, layers))

    def need(layers):
        return preflight.validation_memory(count(layers), config.dtype, tokens, spec.vocab_size, spec.num_heads, graphs)

    scope = choose_scope(config.validate_layers, plan, need, preflight.available_memory())
    config.log(f"validation scope: {'the first %d layers' % scope.layers if scope.prefix else 'the whole model'} ({scope.reason})")
    needed = preflight.weight_bytes(count(), config.dtype)
    what = f"the {config.dtype} model"
    if scope.prefix:
        needed += preflight.weight_bytes(count(scope.layers), config.dtype)
        what += f" plus its {scope.layers}-layer validation prefix"
    preflight.check_disk(config.out, needed, what)
    return scope


def _export_prefix(source, plan, dtype, layers, stage, timings, log) -> None:
    from ltexport.validate.scope import VALIDATION_DIR, prefix_plan

    log(f"exporting the {layers}-layer validation prefix through the same exporter ...")
    start = time.perf_counter()
    vdir = stage / VALIDATION_DIR
    vdir.mkdir()
    vplan = prefix_plan(plan, layers)
    export_model(source, vplan, dtype, vdir)
    save_plan(vplan, vdir / "plan.json")
    timings["export_prefix"] = time.perf_counter() - start


def _validated_graph(out_dir: Path, plan: Plan, scope) -> tuple[Path, Plan]:
    """The directory and plan of the graph that validation runs: OUT itself, or OUT/validation."""
    from ltexport.validate.scope import VALIDATION_DIR

    if not scope.prefix:
        return out_dir, plan
    return out_dir / VALIDATION_DIR, load_plan(out_dir / VALIDATION_DIR / "plan.json")


def validate_existing(out: Path, backend: str | None = None, decode_steps: int = 32, atol=None, rtol=None, log=print,
                      trust_remote_code: bool = False) -> dict:
    """Re-run validation of a finished build (rewrites its report), in the scope it was built with.

    The model is loaded as the build loaded it; a build made with trust_remote_code needs the
    caller's consent again (`trust_remote_code=True`) before the model's own code runs here.
    Validating an engine runs it, which needs a GPU (one line says so where there is none)."""
    from ltexport.validate.report import report_paths
    from ltexport.validate.scope import VALIDATION_DIR, Scope

    out = Path(out)
    info = load_build(out)
    backend = backend or info["backend"]
    if backend in ENGINE_BACKENDS:
        from ltexport.backends import trt

        choose_backend(backend, log)
        trt.require_gpu(backend)
    if not writable_dir(out) or (info.get("validation_layers") and not writable_dir(out / VALIDATION_DIR)):
        raise LtexportError(f"{out} is read-only: validation rewrites its report; fix its permissions or copy the build")
    built_trusting = bool(info.get("trust_remote_code", False))
    if built_trusting and not trust_remote_code:
        raise LtexportError(f"{out} was built with --trust-remote-code: validating it runs the code shipped with "
                            f"{info['model']}; pass --trust-remote-code if you trust it")
    source = resolve(info["model"], trust_remote_code=built_trusting)
    plan = load_plan(out / "plan.json")
    plan.check_against(source.spec())
    tol = tolerance(source.defaults, info["dtype"], atol, rtol)
    _check_decode_steps(source.spec(), plan, decode_steps)
    previous = _previous_scope(out).get("reason")
    scope = Scope(info.get("validation_layers"), f"as built: {previous}" if previous else "as built")
    engine = info.get("engine") if info["backend"] == "trt-rtx" else None
    report = run_validation(out, source, plan, backend, info["dtype"], tol, decode_steps, scope, {}, log, engine)
    record_files(out, report_paths(out, _validated_graph(out, plan, scope)[0]))
    return report


def run_validation(out_dir: Path, source: ModelSource, plan: Plan, backend: str, dtype: str, tol: Tolerance,
                   decode_steps: int, scope, timings: dict, log, engine: dict | None = None) -> dict:
    """engine: build.json's record of an engine built but not run here (TensorRT-RTX), stated in the report."""
    from ltexport.hybrid.model import HybridModel
    from ltexport.hybrid.step import TorchStep
    from ltexport.validate.compare import Candidate, compare_backends
    from ltexport.validate.drift import quality_drift
    from ltexport.validate.fast_graph import fast_candidate, fast_section, has_fast_graph
    from ltexport.validate.report import make_report, write_report

    graph_dir, graph_plan = _validated_graph(out_dir, plan, scope)
    scope_info = _scope_info(out_dir, graph_dir, plan, graph_plan, scope)
    prompt, prompt_kind = validation_prompt(source, plan, decode_steps, with_kind=True)
    log(f"validating {backend} against the PyTorch reference: {len(prompt)} prompt tokens + {decode_steps} decode steps"
        + (f", first {scope.layers} of {plan.num_layers} layers" if scope.prefix else "") + " ...")
    start = time.perf_counter()
    original = source.load_model(dtype, scope.layers)  # a prefix loads only its layers' weights
    timings["load_reference"] = time.perf_counter() - start
    start = time.perf_counter()
    candidates = [Candidate(_backend_runner(graph_dir, backend))]
    if backend == "ort" and has_fast_graph(graph_dir):  # the fast graph against the same reference pass
        log(f"  ... and the fast ONNX Runtime graph ({ORT_MODEL_FILE}) the same way")
        candidates.append(fast_candidate(graph_dir))
    reference = TorchStep(HybridModel(original, graph_plan).eval())
    comparison, *others = compare_backends(candidates, reference, prompt, decode_steps, tol)
    fast = others[0] if others else None
    timings["validate"] = time.perf_counter() - start
    drift = quality_drift(original, prompt, comparison.reference_tokens, comparison.reference_logits)
    scope_info.update(prompt_tokens=len(prompt), prompt=prompt_kind, decode_steps=decode_steps)
    report = make_report(comparison, backend=backend, dtype=dtype, drift=drift, timings=timings, scope=scope_info,
                         fast=fast and fast_section(fast, str(graph_dir.relative_to(out_dir) / ORT_MODEL_FILE)))
    if engine and not engine.get("executed", True):
        report["engine"] = engine_report(engine)
    if scope_info.get("weights_identical_to_model_onnx") is False:
        report["status"] = "fail"
    write_report(out_dir, report, comparison, polygraphy_dir=graph_dir)
    return report


def _previous_scope(out: Path) -> dict:
    try:
        return json.loads((out / "report.json").read_text()).get("scope") or {}
    except (OSError, ValueError):
        return {}


def _scope_info(out_dir: Path, graph_dir: Path, plan: Plan, graph_plan: Plan, scope) -> dict:
    info = {"kind": "prefix" if scope.prefix else "full", "layers": scope.layers if scope.prefix else "all",
            "model_layers": plan.num_layers, "lazy_layers_validated": graph_plan.lazy_layers,
            "graph": str(graph_dir.relative_to(out_dir) / "model.onnx"), "reason": scope.reason}
    if scope.prefix:
        from ltexport.validate.scope import mismatched_weights

        bad = mismatched_weights(graph_dir / "model.onnx", out_dir / "model.onnx")
        info["weights_identical_to_model_onnx"] = not bad
        if bad:
            info["mismatched_weights"] = bad[:10]
    return info


def validation_prompt(source: ModelSource, plan: Plan, decode_steps: int, with_kind: bool = False):
    """Enough calibration text that the sink+window ring wraps during prefill and again in decode.

    A model directory without a tokenizer (e.g. a random-weight benchmark checkpoint) gets the
    text's UTF-8 bytes as token ids: valid ids for any vocabulary of 256 or more.
    """
    from ltexport.models.tokenizers import ByteTokenizer
    from ltexport.plan.identify import default_calibration_text

    length = _prompt_length(source.spec(), plan, decode_steps)
    has_tokenizer = source.has_tokenizer()
    tokenizer = source.load_tokenizer() if has_tokenizer else ByteTokenizer()
    ids = tokenizer.encode(default_calibration_text())[:length]
    kind = "tokenizer" if has_tokenizer else "utf-8 bytes (no tokenizer in the model directory)"
    return (ids, kind) if with_kind else ids


def _prompt_length(spec, plan: Plan, decode_steps: int) -> int:
    length = plan.sink + plan.window + 64
    if spec.max_positions:
        length = min(length, spec.max_positions - decode_steps - 1)
    return length


def _backend_runner(out_dir: Path, backend: str):
    if backend in ENGINE_BACKENDS:
        from ltexport.backends.trt.runner import trt_runner

        return trt_runner(out_dir, flavor=backend)
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from ltexport.backends.ort.session import make_session

    return OnnxrtRunner(lambda: make_session(out_dir / "model.onnx"), name="onnxruntime")


def _build_engine(stage: Path, plan: Plan, profile, timings: dict, config: BuildConfig, flavor: str, capabilities):
    """Build OUT/model.plan (checked against the graph and the plan); returns the builder's record."""
    from ltexport.backends import trt

    start = time.perf_counter()
    name = "TensorRT-RTX" if flavor == "trt-rtx" else "TensorRT"
    targets = f", for {', '.join(capabilities)}" if capabilities else ""
    config.log(f"building the {name} engine{' without the plugin' if not config.plugin else ''} (batch <= "
               f"{profile.max_batch}, prompt <= {profile.max_prompt}, context <= {profile.max_context}{targets}) ...")
    record = trt.build_engine_for_build_dir(stage, plan, flavor=flavor, plugin=config.plugin, profile=profile,
                                            compute_capabilities=capabilities)
    timings["engine"] = time.perf_counter() - start
    config.log(f"{name} engine built: {record['bytes'] / 2**20:.1f} MiB, {len(record['layers'])} layers, "
               f"{len(record['plugin_layers'])} plugin layers; its bindings match the ONNX graph"
               + ("; it has not been run (running it needs a GPU)" if flavor == "trt-rtx" else ""))
    return record


def _check_outputs(out: Path, keep_failed: Path | None) -> None:
    """-o and --keep-failed under the safety rule (ltexport.outputs), before any work."""
    out = check_output_dir(out, MARKER, "-o")
    if keep_failed is not None:
        keep = check_output_dir(keep_failed, MARKER, "--keep-failed")
        if keep == out or out in keep.parents or keep in out.parents:
            raise LtexportError("--keep-failed must be a directory apart from -o (not the same, inside it or around it); "
                                "choose another --keep-failed")


def _check_decode_steps(spec, plan: Plan, decode_steps: int) -> None:
    if _prompt_length(spec, plan, decode_steps) < 1:
        raise LtexportError(f"--decode-steps {decode_steps} leaves no room for a prompt in the model's "
                            f"{spec.max_positions} positions; use --decode-steps {max(1, spec.max_positions - 2)} or fewer")


def _save_tokenizer(source: ModelSource, stage: Path) -> None:
    if source.kind != "tiny" and source.has_tokenizer():
        source.load_tokenizer().save_pretrained(str(stage / "tokenizer"))


def _tokenizer_kind(source: ModelSource) -> str:
    if source.kind == "tiny":
        return "byte"
    return "tokenizer" if source.has_tokenizer() else "none"


def _build_info(source: ModelSource, config: BuildConfig, backend: str, scope, profile=None, record=None) -> dict:
    info = new_build_info(model=config.model, source=source.describe(), backend=backend, dtype=config.dtype,
                          trust_remote_code=config.trust_remote_code, tokenizer=_tokenizer_kind(source),
                          validation_layers=scope.layers, max_positions=source.spec().max_positions or None)
    if profile is not None:
        info["engine"] = {"max_batch": profile.max_batch, "max_prompt": profile.max_prompt,
                          "max_context": profile.max_context}
    if record is not None:
        from ltexport.backends.trt.record import engine_build_info

        info["engine"].update(engine_build_info(record))
        info["engine"]["executed"] = backend == "trt"  # validation runs a TensorRT engine, never a TensorRT-RTX one
    return info


def _failed_checks(report: dict) -> str:
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    if not greedy_passed(report["greedy"]):
        failed.append(f"greedy tokens diverge at step {report['greedy']['first_mismatch']}")
    if report.get("scope", {}).get("weights_identical_to_model_onnx") is False:
        failed.append("the validated prefix's weights differ from model.onnx's")
    fast = report.get("ort_graph") or {}
    if fast.get("status") == "fail":
        failed.append(f"{fast['graph']}: " + ", ".join([c["name"] for c in fast["checks"] if not c["passed"]]
                                                       + ([] if greedy_passed(fast["greedy"]) else ["greedy tokens"])))
    return ", ".join(failed) or "unknown"
