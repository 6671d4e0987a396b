"""`ltexport inspect plan.json|OUT`: print a plan's summary (and a build's report)."""

from pathlib import Path

import click

from ltexport.build_info import load_build
from ltexport.cli import main
from ltexport.cli.params import Whole
from ltexport.outputs import check_output_file, is_png
from ltexport.export.contract import ENGINE_RECORD_FILE
from ltexport.plan.schema import load_plan
from ltexport.plan.summary import format_summary, scores_png
from ltexport.staging import write_bytes_atomic


@main.command("inspect")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--context", type=Whole(min=1), default=8192, show_default=True, help="Context for the KV-memory summary.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Draw per-layer scores to this PNG.")
def inspect_command(target, context, plot_path):
    """Summarise a plan file or a build directory."""
    if plot_path is not None:
        check_output_file(plot_path, "--plot", is_png, "a PNG image.png")
    if target.is_dir():
        load_build(target)  # a build is summarised only once it is known to be complete
    plan = load_plan(target / "plan.json" if target.is_dir() else target)
    png = scores_png(plan) if plot_path else None  # a plan without scores is refused before printing
    click.echo(format_summary(plan, context))
    report = target / "report.md"
    if target.is_dir() and report.is_file():
        click.echo("")
        click.echo(report.read_text().rstrip())
    if target.is_dir() and (target / ENGINE_RECORD_FILE).is_file():
        from ltexport.backends.trt.record import read_record, format_record

        click.echo("")
        click.echo(format_record(read_record(target / ENGINE_RECORD_FILE)))
    if plot_path:
        write_bytes_atomic(plot_path, png)
        click.echo(f"wrote {plot_path}")
