"""`ltexport generate OUT --prompt ...`: stream text from a build."""

from pathlib import Path

import click

from ltexport.cli import main, trust_remote_code_option
from ltexport.cli.params import Finite, Whole
from ltexport.generation import Sampling
from ltexport.runtime import generate_text


@main.command("generate")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--prompt", required=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=Finite(min=0), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=Finite(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=Whole(min=0), default=0, show_default=True)
@click.option("--raw", is_flag=True, help="Do not apply the tokenizer's chat template.")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt", "trt-rtx"]), default="auto", show_default=True,
              help="auto: the TensorRT engine of a TensorRT build where TensorRT imports, else ONNX Runtime.")
@trust_remote_code_option
def generate_command(out, prompt, max_new_tokens, temperature, top_p, seed, raw, backend, trust_remote_code):
    """Generate text from a build (ONNX Runtime or its TensorRT engine), streaming to stdout."""
    sampling = Sampling(temperature=temperature, top_p=top_p, seed=seed)
    for piece in generate_text(out, prompt, max_new_tokens, sampling, chat=not raw, backend=backend,
                               trust_remote_code=trust_remote_code, log=lambda msg: click.echo(msg, err=True)):
        click.echo(piece, nl=False)
    click.echo("")
