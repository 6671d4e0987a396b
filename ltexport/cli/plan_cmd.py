"""`ltexport plan`: identify lazy layers and write plan.json."""

from pathlib import Path

import click

from ltexport.cli import main, trust_remote_code_option
from ltexport.cli.params import Finite, Whole
from ltexport.errors import LtexportError
from ltexport.models.sources import DEFAULT_MODEL, resolve
from ltexport.outputs import check_output_file, is_png
from ltexport.plan.identify import PlanConfig, make_plan
from ltexport.plan.schema import PREFILL_MODES, is_plan_file, plan_text
from ltexport.plan.summary import format_summary, scores_png
from ltexport.staging import write_files_atomic

# plan and eval: run the model one decoder layer at a time (default: only when it does not fit in memory).
stream_layers_option = click.option(
    "--stream-layers/--no-stream-layers", default=None,
    help="Run the model one decoder layer at a time, its weights read per layer (a 7B model in a few GB) "
         "[default: only when the fp32 model does not fit in memory].")


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
@click.option("--context", type=Whole(min=1), default=8192, show_default=True, help="Context for the KV-memory summary.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Also draw per-layer scores to this PNG.")
@stream_layers_option
@trust_remote_code_option
@click.option("--auto", is_flag=True, help="Choose the lazy fraction by evaluation (ltexport eval) within --max-drop.")
@click.option("--max-drop", type=Finite(min=0), help="--auto: allowed passkey drop (points) and perplexity drop (%).")
@click.option("--candidates", help="--auto: lazy fractions to try [default: 0.125,0.25,...,0.75].")
@click.option("--eval-contexts", help="--auto: eval contexts [default: as ltexport eval].")
@click.option("--eval-output", type=click.Path(path_type=Path), help="--auto: also write the eval tables and plots here.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("plan.json"), show_default=True)
def plan_command(model_name, calib_path, calib_tokens, lazy_fraction, layers, sink, window, last_queries,
                 prefill, context, plot_path, stream_layers, trust_remote_code, auto, max_drop, candidates,
                 eval_contexts, eval_output, output):
    """Measure lazy ratios on calibration text and write plan.json."""
    layer_list = parse_layers(layers)
    if layer_list is not None and lazy_fraction is not None:
        raise LtexportError("pass either --layers or --lazy-fraction, not both")
    _check_auto(auto, max_drop, layer_list, lazy_fraction, candidates, eval_contexts, eval_output)
    check_output_file(output, "-o", is_plan_file, "an ltexport plan.json")
    if plot_path is not None:
        if layer_list is not None:
            raise LtexportError("--plot draws measured lazy ratios, which --layers skips; drop --plot or --layers")
        check_output_file(plot_path, "--plot", is_png, "a PNG image.png")
    source = resolve(model_name, trust_remote_code=trust_remote_code)
    d = source.defaults
    config = PlanConfig(
        sink=d["sink"] if sink is None else sink, window=d["window"] if window is None else window,
        prefill=prefill, layers=layer_list, last_queries=last_queries, calib_path=calib_path,
        lazy_fraction=d["lazy_fraction"] if lazy_fraction is None else lazy_fraction,
        calib_tokens=d["calib_tokens"] if calib_tokens is None else calib_tokens, stream_layers=stream_layers,
    )
    if auto:
        plan = _auto(model_name, trust_remote_code, config, max_drop, candidates, eval_contexts, eval_output)
    else:
        plan = make_plan(source, config, progress=lambda msg: click.echo(msg, err=True))
    files = {output: plan_text(plan).encode()}
    if plot_path:
        files[plot_path] = scores_png(plan)
    write_files_atomic(files)  # both or neither
    click.echo(format_summary(plan, context))
    if auto:
        from ltexport.evaluate.report import format_auto

        click.echo(format_auto(plan.metadata["auto"]))
    click.echo(f"wrote {output}")


def _check_auto(auto, max_drop, layers, lazy_fraction, candidates, eval_contexts, eval_output) -> None:
    extras = [n for n, v in (("--max-drop", max_drop), ("--candidates", candidates),
                             ("--eval-contexts", eval_contexts), ("--eval-output", eval_output)) if v is not None]
    if not auto and extras:
        raise LtexportError(f"{extras[0]} only applies with --auto")
    if auto and (layers is not None or lazy_fraction is not None):
        raise LtexportError("--auto chooses the lazy fraction itself; drop --layers/--lazy-fraction")
    if auto and max_drop is None:
        raise LtexportError("--auto needs --max-drop, e.g. --max-drop 5 (passkey points and perplexity percent)")


def _auto(model_name, trust_remote_code, config, max_drop, candidates, eval_contexts, eval_output):
    from ltexport.evaluate.auto import DEFAULT_CANDIDATES, auto_plan
    from ltexport.evaluate.report import write_outputs
    from ltexport.evaluate.run import MARKER, EvalConfig
    from ltexport.outputs import check_output_dir
    from ltexport.evaluate.select import parse_fractions, parse_ints
    from ltexport.staging import staged_dir

    if eval_output is not None:
        check_output_dir(eval_output, MARKER, "--eval-output")
    fractions = parse_fractions(candidates, "--candidates", allow_zero=False) if candidates else list(DEFAULT_CANDIDATES)
    eval_config = EvalConfig(model=model_name, trust_remote_code=trust_remote_code, lazy_fractions=fractions, plan_config=config,
                             contexts=parse_ints(eval_contexts, "--eval-contexts") if eval_contexts else None,
                             stream_layers=config.stream_layers, log=lambda msg: click.echo(msg, err=True))

    def save_evidence(results):
        if eval_output is not None:
            with staged_dir(eval_output, MARKER) as stage:
                write_outputs(results, stage)

    return auto_plan(eval_config, max_drop, on_results=save_evidence)
