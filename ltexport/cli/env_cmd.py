"""`ltexport env`: what this machine can do (paste it into issue reports)."""

import json

import click

from ltexport.cli import main
from ltexport.env import format_text, probe


@main.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the probe as JSON (stable schema).")
def env_command(as_json):
    """Print platform, library versions, CUDA/GPU, the TensorRT plugin and the usable --backend values."""
    info = probe()
    click.echo(json.dumps(info, indent=1) if as_json else format_text(info))
