"""`ltexport package OUT --triton REPO`: a Triton model repository entry for a build directory."""

from pathlib import Path

import click

from ltexport.cli import main


@main.command("package")
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--triton", "repo", required=True, type=click.Path(path_type=Path),
              help="Triton model repository to write REPO/NAME into (created if missing).")
@click.option("--name", default="ltexport", show_default=True, help="Triton model name (directory under REPO).")
@click.option("--version", "version", default=1, show_default=True, type=click.IntRange(min=1),
              help="Model version directory.")
@click.option("--gpu", is_flag=True, help="KIND_GPU instances for onnxruntime builds (TensorRT builds always are).")
@click.option("--instances", default=1, show_default=True, type=click.IntRange(min=1),
              help="Model instances = sequences served at once.")
@click.option("--max-sequence-idle-us", default=10_000_000, show_default=True, type=click.IntRange(min=1),
              help="Microseconds without a request after which Triton ends a sequence and frees its slot.")
def package_cmd(build_dir, repo, name, version, gpu, instances, max_sequence_idle_us):
    """Package build directory BUILD_DIR for Triton Inference Server."""
    from ltexport.triton import package_triton

    pkg = package_triton(build_dir, repo, name=name, version=version, gpu=gpu, instances=instances,
                         max_sequence_idle_us=max_sequence_idle_us)
    verb = "wrote" if pkg.changed else "unchanged (already packaged):"
    click.echo(f"{verb} {pkg.path}")
    for note in pkg.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"serve: see {pkg.path / 'README.md'}")
