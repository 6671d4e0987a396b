"""`ltexport build` and `ltexport validate`."""

from pathlib import Path

import click

from ltexport.build import BuildConfig, build, validate_existing
from ltexport.build_info import DTYPES
from ltexport.cli import main, trust_remote_code_option
from ltexport.cli.params import Finite
from ltexport.errors import LtexportError
from ltexport.models.sources import DEFAULT_MODEL
from ltexport.validate.report import verdict

_BACKENDS = click.Choice(["auto", "ort", "trt", "trt-rtx"])


def _log(message: str) -> None:
    click.echo(message, err=True)


def _finish(report: dict, out: Path) -> None:
    click.echo(verdict(report))
    click.echo(f"details: {out / 'report.md'}")
    if report["status"] != "pass":
        raise LtexportError(f"validation of {out} failed; see {out / 'report.md'}")


@main.command("build")
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True)
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), required=True, help="plan.json from `ltexport plan`.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Build directory to create.")
@click.option("--backend", type=_BACKENDS, default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="fp32", show_default=True)
@click.option("--decode-steps", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--atol", type=Finite(min=0), help="Override the recipe's absolute tolerance.")
@click.option("--rtol", type=Finite(min=0), help="Override the recipe's relative tolerance.")
@click.option("--keep-failed", type=click.Path(path_type=Path), help="Keep a build that fails validation here.")
@trust_remote_code_option
@click.option("--validate-layers", default="auto", show_default=True, metavar="auto|all|N",
              help="Validate the whole model, or a prefix of N layers exported the same way (auto: the whole "
                   "model when it fits comfortably in memory).")
@click.option("--max-batch", type=click.IntRange(min=1), help="TensorRT engine: largest batch (default 1).")
@click.option("--max-prompt", type=click.IntRange(min=1),
              help="TensorRT engine: longest prompt in one call (default max(2048, sink + window + 64)).")
@click.option("--max-context", type=click.IntRange(min=1),
              help="TensorRT engine: longest context, prompt plus generated tokens (default max(4096, max prompt + 1024)).")
@click.option("--compute-capability", "compute_capability", metavar="80,86,89,120",
              help="trt-rtx: the GPUs to build for, ahead of time (default 80,86,89,120; TensorRT-RTX knows 75, 80, "
                   "86, 89, 120, 121).")
@click.option("--plugin/--no-plugin", default=True, show_default=True,
              help="TensorRT: run the lazy layers as the ltexport plugin, or build them from the graph's function "
                   "body (a plugin-free engine).")
def build_command(model_name, plan_path, output, backend, dtype, decode_steps, atol, rtol, keep_failed, trust_remote_code,
                  validate_layers, max_batch, max_prompt, max_context, compute_capability, plugin):
    """Export the hybrid to ONNX, compile it for the backend and validate it.

    trt-rtx builds a TensorRT-RTX engine without a GPU and validates the ONNX graph on ONNX Runtime: the engine
    is built and checked against the graph's I/O, not run."""
    config = BuildConfig(model=model_name, plan_path=plan_path, out=output, backend=backend, dtype=dtype,
                         decode_steps=decode_steps, atol=atol, rtol=rtol, keep_failed=keep_failed,
                         trust_remote_code=trust_remote_code, validate_layers=validate_layers, max_batch=max_batch,
                         max_prompt=max_prompt, max_context=max_context, compute_capabilities=compute_capability,
                         plugin=plugin, log=_log)
    report = build(config)
    _finish(report, output)
    click.echo(f"wrote {output}")


@main.command("validate")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["ort", "trt", "trt-rtx"]),
              help="Default: the backend it was built for (an engine's validation runs it: GPU only).")
@click.option("--decode-steps", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--atol", type=Finite(min=0))
@click.option("--rtol", type=Finite(min=0))
@trust_remote_code_option
def validate_command(out, backend, decode_steps, atol, rtol, trust_remote_code):
    """Re-run validation of an existing build against the PyTorch reference."""
    report = validate_existing(out, backend=backend, decode_steps=decode_steps, atol=atol, rtol=rtol, log=_log,
                               trust_remote_code=trust_remote_code)
    _finish(report, out)
