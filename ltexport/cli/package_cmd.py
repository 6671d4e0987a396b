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
@click.option("--runtime", type=click.Choice(["backend", "python"]), default="backend", show_default=True,
              help="backend: Triton's onnxruntime/TensorRT backend with the caches as implicit state; "
                   "python: Triton's python backend running ltexport (serve with `ltexport serve`).")
@click.option("--max-sequences", type=click.IntRange(min=1), default=None,
              help="--runtime python: sequences each instance holds at once  [default: 4]")
def package_cmd(build_dir, repo, name, version, gpu, instances, max_sequence_idle_us, runtime, max_sequences):
    """Package build directory BUILD_DIR for Triton Inference Server."""
    from ltexport.triton import package_triton

    pkg = package_triton(build_dir, repo, name=name, version=version, gpu=gpu, instances=instances,
                         max_sequence_idle_us=max_sequence_idle_us, runtime=runtime, max_sequences=max_sequences)
    verb = "wrote" if pkg.changed else "unchanged (already packaged):"
    click.echo(f"{verb} {pkg.path}")
    for note in pkg.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"serve: see {pkg.path / 'README.md'}")
