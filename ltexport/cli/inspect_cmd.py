"""`ltexport inspect plan.json|OUT`: print a plan's summary (and a build's report)."""

from pathlib import Path

import click

from ltexport.cli import main
from ltexport.export.contract import ENGINE_RECORD_FILE
from ltexport.plan.schema import load_plan
from ltexport.plan.summary import format_summary, plot_scores


@main.command("inspect")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--context", type=int, default=8192, show_default=True, help="Context for the KV-memory summary.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Draw per-layer scores to this PNG.")
def inspect_command(target, context, plot_path):
    """Summarise a plan file or a build directory (its report, and the TensorRT engine's layers, bindings and
    profiles)."""
    plan_path = target / "plan.json" if target.is_dir() else target
    plan = load_plan(plan_path)
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
        plot_scores(plan, plot_path)
        click.echo(f"wrote {plot_path}")
