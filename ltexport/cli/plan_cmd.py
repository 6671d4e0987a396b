"""`ltexport plan`: identify lazy layers and write plan.json."""

from pathlib import Path

import click

from ltexport.cli import main
from ltexport.errors import LtexportError
from ltexport.models.sources import DEFAULT_MODEL, resolve
from ltexport.plan.identify import PlanConfig, make_plan
from ltexport.plan.schema import PREFILL_MODES, save_plan
from ltexport.plan.summary import format_summary, plot_scores


def parse_layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LtexportError(f"--layers must be comma-separated integers like 3,5,7, got {text!r}") from None


@main.command("plan")
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True,
              help="Built-in name, recipe name, local HF directory or .gguf file.")
@click.option("--calib", "calib_path", type=click.Path(path_type=Path), help="Calibration text file (default: shipped text).")
@click.option("--calib-tokens", type=int, help="Calibration length in tokens (default: the model's recipe).")
@click.option("--lazy-fraction", type=float, help="Fraction of layers to make lazy (default: the model's recipe).")
@click.option("--layers", help="Explicit lazy layers, e.g. 3,5,7 (skips calibration).")
@click.option("--sink", type=int, help="Sink tokens S kept at the start.")
@click.option("--window", type=int, help="Recent-window tokens W.")
@click.option("--last-queries", type=int, default=64, show_default=True, help="Queries the lazy ratio is averaged over.")
@click.option("--prefill", type=click.Choice(PREFILL_MODES), default="dense", show_default=True,
              help="dense = LightTransfer-Test, streaming = LightTransfer-Train.")
@click.option("--context", type=int, default=8192, show_default=True, help="Context for the KV-memory summary.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Also draw per-layer scores to this PNG.")
@click.option("--trust-remote-code", is_flag=True, help="Allow custom code from a model directory.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("plan.json"), show_default=True)
def plan_command(model_name, calib_path, calib_tokens, lazy_fraction, layers, sink, window, last_queries,
                 prefill, context, plot_path, trust_remote_code, output):
    """Measure lazy ratios on calibration text and write plan.json."""
    layer_list = parse_layers(layers)
    if layer_list is not None and lazy_fraction is not None:
        raise LtexportError("pass either --layers or --lazy-fraction, not both")
    source = resolve(model_name, trust_remote_code=trust_remote_code)
    d = source.defaults
    config = PlanConfig(
        sink=d["sink"] if sink is None else sink, window=d["window"] if window is None else window,
        prefill=prefill, layers=layer_list, last_queries=last_queries, calib_path=calib_path,
        lazy_fraction=d["lazy_fraction"] if lazy_fraction is None else lazy_fraction,
        calib_tokens=d["calib_tokens"] if calib_tokens is None else calib_tokens,
    )
    plan = make_plan(source, config, progress=lambda msg: click.echo(msg, err=True))
    save_plan(plan, output)
    if plot_path:
        plot_scores(plan, plot_path)
    click.echo(format_summary(plan, context))
    click.echo(f"wrote {output}")
