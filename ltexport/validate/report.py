"""report.json / report.md, plus Polygraphy inputs/outputs JSON for `polygraphy run --load-outputs`."""

import json
from pathlib import Path

from ltexport.staging import write_text_atomic
from ltexport.validate.compare import CARRIED, REFERENCE_NAME

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
POLYGRAPHY_INPUTS = "polygraphy_inputs.json"
POLYGRAPHY_OUTPUTS = "polygraphy_outputs.json"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("ltexport", "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "polygraphy", "tensorrt"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def make_report(comparison, *, backend: str, dtype: str, drift: dict, timings: dict, scope: dict,
                fast: dict | None = None) -> dict:
    """fast: the fast ONNX Runtime graph's own section (validate/fast_graph.py); it must pass too."""
    checks = [c.as_dict() for c in comparison.checks]
    from ltexport.validate.compare import greedy_passed

    passed = all(c["passed"] for c in checks) and greedy_passed(comparison.greedy)
    passed = passed and (fast is None or fast["status"] == "pass")
    report = {"status": "pass" if passed else "fail", "backend": backend, "dtype": dtype, "checks": checks,
              "greedy": comparison.greedy, "scope": scope, "quality_drift_vs_original": drift,
              "timings_s": {k: round(v, 3) for k, v in timings.items()}, "versions": versions()}
    if fast is not None:
        report["ort_graph"] = fast
    return report


def report_paths(out_dir: Path, polygraphy_dir: Path | None = None) -> list[Path]:
    """The files write_report writes (the Polygraphy pair only when it has a comparison)."""
    polygraphy_dir = polygraphy_dir or out_dir
    return [out_dir / REPORT_JSON, out_dir / REPORT_MD, polygraphy_dir / POLYGRAPHY_INPUTS, polygraphy_dir / POLYGRAPHY_OUTPUTS]


def engine_report(engine: dict) -> dict:
    """What the report says about an engine that was built but not run (TensorRT-RTX without a GPU):
    `engine` is build.json's record of it."""
    return {
        "builder": engine["builder"], "file": engine["file"], "bytes": engine["bytes"],
        "compute_capabilities": engine["compute_capabilities"], "plugin": engine["plugin"],
        "plugin_layers": len(engine["plugin_layers"]), "executed": False,
        "checked": ["built and serialized by the real builder",
                    "its bindings (names, dtypes, dims, the seq_start shape tensor) equal the ONNX graph's I/O",
                    "its plugin layers are the graph's SinkWindowAttention nodes"],
        "not_checked": "the engine has not run: none of its outputs was compared with anything",
    }


def write_report(out_dir: Path, report: dict, comparison=None, polygraphy_dir: Path | None = None) -> None:
    """polygraphy_dir: beside the graph that was compared (OUT, or OUT/validation for a prefix)."""
    write_text_atomic(out_dir / REPORT_JSON, json.dumps(report, indent=1) + "\n")
    write_text_atomic(out_dir / REPORT_MD, format_markdown(report))
    if comparison is not None and comparison.first_results is not None:
        from polygraphy.comparator import RunResults
        from polygraphy.json import save_json

        polygraphy_dir = polygraphy_dir or out_dir
        # The prefill step only: decode steps would make the file grow with every cached token.
        save_json([comparison.first_feed], str(polygraphy_dir / POLYGRAPHY_INPUTS))
        # The reference's outputs: what `polygraphy run --load-outputs` compares a backend against
        # (the backend's own would double a file that holds every prefill position's logits).
        reference = RunResults([(REFERENCE_NAME, comparison.first_results[REFERENCE_NAME])])
        reference.save(str(polygraphy_dir / POLYGRAPHY_OUTPUTS))


def _scope_lines(scope: dict) -> list[str]:
    prompt = [] if scope.get("prompt", "tokenizer") == "tokenizer" else [f"Prompt token ids: {scope['prompt']}.", ""]
    if scope.get("kind") != "prefix":
        return ["Scope: the whole model (`model.onnx`).", "", *prompt]
    same = scope.get("weights_identical_to_model_onnx")
    return [f"Scope: **a prefix** — the first {scope['layers']} of {scope['model_layers']} layers (+ final norm + lm_head; "
            f"lazy layers among them: {scope['lazy_layers_validated'] or 'none'}), exported from the same checkpoint by the "
            f"same exporter as `{scope['graph']}`, not `model.onnx` itself ({scope['reason']}). Its weights are "
            f"{'byte-identical to' if same else 'NOT identical to'} those tensors in `model.onnx.data`.", "", *prompt]


_BACKEND_NAMES = {"ort": "ONNX Runtime", "trt": "TensorRT", "trt-rtx": "TensorRT-RTX"}


def verdict(report: dict) -> str:
    """One line a person can trust at a glance: the outcome, what was compared, and the worst figure."""
    checks = report["checks"]
    failed = [c for c in checks if not c["passed"]]
    backend = _BACKEND_NAMES.get(report["backend"], report["backend"])
    scope = report.get("scope") or {}
    what = (f"{backend} ({report['dtype']}) vs the PyTorch reference, "
            f"{scope.get('prompt_tokens')} prompt tokens + {scope.get('decode_steps')} decode steps"
            + (f", first {scope['layers']} of {scope['model_layers']} layers" if scope.get("kind") == "prefix" else ""))
    greedy = report.get("greedy") or {}
    if not greedy:
        greedy_text = "no greedy check"
    elif greedy.get("tokens_match"):
        greedy_text = f"greedy tokens match over {greedy['steps']} steps"
    else:
        greedy_text = (f"greedy tokens diverge at step {greedy['first_mismatch']}"
                       + (" (a near-tie in the reference)" if greedy.get("near_tie") else ""))
    if report["status"] == "pass":
        worst = max(checks, key=lambda c: c["max_abs_diff"] / c["atol"] if c["atol"] else 0.0, default=None)
        worst_text = (f"; largest abs diff {worst['max_abs_diff']:.3g} ({worst['name']}, atol {worst['atol']:g})"
                      if worst else "")
        return f"PASS: {what}: all {len(checks)} checks within tolerance{worst_text}; {greedy_text}."
    names = ", ".join(f"{c['name']} {c['max_abs_diff']:.3g}" for c in failed[:3]) + (" ..." if len(failed) > 3 else "")
    failed_text = f"{len(failed)} of {len(checks)} checks exceed tolerance ({names})" if failed else "checks within tolerance"
    return f"FAIL: {what}: {failed_text}; {greedy_text}."


def _fast_lines(fast: dict | None) -> list[str]:
    if not fast:
        return []
    lines = ["", f"## Fast ONNX Runtime graph `{fast['graph']}`: {fast['status'].upper()}", "",
             "Same feeds and tolerances; its greedy decode runs in place through IOBinding.", "",
             "| check | max abs diff | max rel diff (\\|ref\\| > atol) | passed |", "|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['max_abs_diff']:.3g} | {c.get('max_rel_diff_above_atol', 0.0):.3g} | "
              f"{'yes' if c['passed'] else 'NO'} |"
              for c in fast["checks"]]
    g = fast["greedy"]
    return lines + ["", f"Greedy decode: {g['steps']} steps, tokens match: {'yes' if g['tokens_match'] else 'no'}"
                    + ("" if g["tokens_match"] else f" (first mismatch at step {g['first_mismatch']})")]


def format_markdown(report: dict) -> str:
    lines = [f"# ltexport validation: {report['status'].upper()}", "", f"**{verdict(report)}**", "",
             f"backend `{report['backend']}`, dtype `{report['dtype']}`; compared against the PyTorch hybrid "
             f"reference ({report['scope'].get('prompt_tokens')} prompt tokens, {report['scope'].get('decode_steps')} decode steps)", "",
             *_scope_lines(report["scope"]),
             "An element passes when |diff| <= atol or |diff| / |ref| <= rtol. The relative column is taken over the "
             "elements whose reference magnitude exceeds atol (near-zero references are judged by atol; their "
             "relative error means nothing). Decode steps compare the cache rows each step writes with the "
             "tolerances; the rows a step carries over must equal the reference's bit for bit "
             f"(`decode/present ({CARRIED})`).", "",
             "| check | max abs diff | max rel diff (\\|ref\\| > atol) | atol | rtol | passed |", "|---|---|---|---|---|---|"]
    for c in report["checks"]:
        rel = c.get("max_rel_diff_above_atol")
        rel_text = "n/a" if rel is None else f"{rel:.3g}"
        lines.append(f"| {c['name']} | {c['max_abs_diff']:.3g} | {rel_text} | {c['atol']:g} | {c['rtol']:g} | "
                     f"{'yes' if c['passed'] else 'NO'} |")
    g = report["greedy"]
    if g:
        lines += ["", f"Greedy decode: {g['steps']} steps, tokens match: {'yes' if g['tokens_match'] else 'no'}"
                  + ("" if g["tokens_match"] else f" (first mismatch at step {g['first_mismatch']}"
                     + (", a near-tie in the reference's logits)" if g.get("near_tie") else ")"))]
    lines += _fast_lines(report.get("ort_graph"))
    d = report.get("quality_drift_vs_original") or {}
    if d:
        lines += ["", "## Quality cost of the conversion (information, not a gate)", "",
                  f"Hybrid vs the original full-attention model{' (both cut to the validated prefix)' if report['scope'].get('kind') == 'prefix' else ''} over {d['steps']} greedy steps: "
                  f"max logit difference {d['max_abs_logit_diff']:.3g}, top-1 agreement {d['top1_agreement']:.1%}."]
    lines += _engine_lines(report.get("engine"))
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()), ""]
    return "\n".join(lines)


def _engine_lines(engine: dict | None) -> list[str]:
    if not engine:
        return []
    targets = ", ".join(engine["compute_capabilities"] or []) or "the local GPU"
    return ["", "## TensorRT engine: built, NOT run", "",
            f"`{engine['file']}` ({engine['bytes'] / 2**20:.1f} MiB, {engine['builder']}, for {targets}; "
            f"{engine['plugin_layers']} plugin layers{'' if engine['plugin'] else ', built without the plugin'}). "
            "The checks above are of the ONNX graph on ONNX Runtime, not of this engine. Checked for the engine: "
            + "; ".join(engine["checked"]) + ". Not checked: " + engine["not_checked"] + "."]
