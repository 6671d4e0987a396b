"""`ltexport eval`: quality evidence (passkey retrieval, decode perplexity), original vs hybrids."""

import json
from pathlib import Path

import click

from ltexport.cli import main, trust_remote_code_option
from ltexport.cli.params import Whole
from ltexport.cli.plan_cmd import stream_layers_option
from ltexport.models.sources import DEFAULT_MODEL, resolve
from ltexport.outputs import check_output_dir
from ltexport.plan.identify import PlanConfig
from ltexport.plan.schema import PREFILL_MODES


def _log(message: str) -> None:
    click.echo(message, err=True)


@main.command("eval")
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True)
@click.option("--plan", "plans", multiple=True, type=click.Path(path_type=Path), help="plan.json to evaluate (repeatable).")
@click.option("--lazy-fractions", help="Make plans from one calibration run, e.g. 0,0.25,0.5 (0 = the original).")
@click.option("--build", "builds", multiple=True, type=click.Path(path_type=Path),
              help="An `ltexport build --backend ort` directory, run with ONNX Runtime (repeatable).")
@click.option("--genai", "genai", multiple=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="An onnxruntime-genai model directory (its builder's output), run with ONNX Runtime (repeatable).")
@click.option("--genai-peers", is_flag=True, help="Also build and score onnxruntime-genai's full and windowed models "
              "(the first --plan's lazy layers as sliding windows without sinks); needs onnxruntime-genai.")
@click.option("--contexts", help="Context lengths in tokens [default: 1024,2048,4096 where the model allows].")
@click.option("--depths", default="0.1,0.5,0.9", show_default=True, help="Needle depths (0 = start, 1 = end).")
@click.option("--digits", type=int, default=5, show_default=True, help="Digits of the passkey.")
@click.option("--ppl-tokens", type=int, help="Tokens scored at the end of each context [default: 256 or half the shortest].")
@click.option("--prefill-chunk", type=click.IntRange(min=0), default=1024, show_default=True,
              help="Prompt chunk size (memory); 0 = whole prompt in one call.")
@click.option("--sink", type=int, help="For --lazy-fractions (default: the model's recipe).")
@click.option("--window", type=int, help="For --lazy-fractions (default: the model's recipe).")
@click.option("--prefill", type=click.Choice(PREFILL_MODES), default="dense", show_default=True, help="For --lazy-fractions.")
@click.option("--calib", "calib_path", type=click.Path(path_type=Path), help="For --lazy-fractions.")
@click.option("--calib-tokens", type=int, help="For --lazy-fractions.")
@click.option("--raw", is_flag=True, help="Do not wrap passkey prompts in the tokenizer's chat template.")
@click.option("--seed", type=Whole(min=0), default=0, show_default=True)
@stream_layers_option
@trust_remote_code_option
@click.option("--json", "as_json", is_flag=True, help="Print eval.json to stdout instead of the table.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Directory for eval.json/.md and PNGs.")
def eval_command(model_name, plans, lazy_fractions, builds, genai, genai_peers, contexts, depths, digits, ppl_tokens, prefill_chunk,
                 sink, window, prefill, calib_path, calib_tokens, raw, seed, stream_layers, trust_remote_code, as_json,
                 output):
    """Passkey retrieval and decode perplexity of the original model and each hybrid."""
    from ltexport.evaluate.report import format_markdown, write_outputs
    from ltexport.evaluate.run import MARKER, EvalConfig, evaluate
    from ltexport.evaluate.select import parse_fractions, parse_ints
    from ltexport.staging import staged_dir

    check_output_dir(output, MARKER)
    fractions = parse_fractions(lazy_fractions, "--lazy-fractions") if lazy_fractions else []
    config = EvalConfig(
        model=model_name, trust_remote_code=trust_remote_code, plans=list(plans), lazy_fractions=fractions, builds=list(builds),
        genai=list(genai), genai_peers=genai_peers,
        plan_config=_plan_config(model_name, sink, window, prefill, calib_path, calib_tokens) if fractions else None,
        contexts=parse_ints(contexts, "--contexts") if contexts else None,
        depths=parse_fractions(depths, "--depths"), digits=digits, ppl_tokens=ppl_tokens,
        prefill_chunk=prefill_chunk, chat=False if raw else None, seed=seed, stream_layers=stream_layers, log=_log)
    results, made = evaluate(config)
    with staged_dir(output, MARKER) as stage:
        write_outputs(results, stage, made)
    click.echo(json.dumps(results, indent=1) if as_json else format_markdown(results).split("\nHow to read")[0].rstrip())
    _log(f"wrote {output}/eval.json, eval.md, passkey.png, perplexity.png")


def _plan_config(model_name, sink, window, prefill, calib_path, calib_tokens) -> PlanConfig:
    d = resolve(model_name).defaults  # defaults come from the name alone: nothing is loaded
    return PlanConfig(sink=d["sink"] if sink is None else sink, window=d["window"] if window is None else window,
                      prefill=prefill, calib_path=calib_path,
                      calib_tokens=d["calib_tokens"] if calib_tokens is None else calib_tokens)
