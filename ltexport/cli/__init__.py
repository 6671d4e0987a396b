"""Click entry point. Commands are thin: parse, build a config, call the library.

User errors (LtexportError) become one line on stderr and exit code 1, here and only here.
"""

import sys

import click

from ltexport.errors import LtexportError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LtexportError as exc:
            click.echo(f"ltexport: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="ltexport")
def main():
    """Compile long-context LLMs into LightTransfer hybrids."""


# Every command that loads a model, its config or its tokenizer takes this flag and passes it down.
trust_remote_code_option = click.option(
    "--trust-remote-code", is_flag=True,
    help="Let transformers run Python code shipped with the model (auto_map in its config); off by default.")


def _register():
    # Each module defines one command and adds it to `main`.
    from ltexport.cli import plan_cmd  # noqa: F401
    from ltexport.cli import inspect_cmd  # noqa: F401
    from ltexport.cli import build_cmd  # noqa: F401
    from ltexport.cli import generate_cmd  # noqa: F401
    from ltexport.cli import package_cmd  # noqa: F401
    from ltexport.cli import serve_cmd  # noqa: F401
    from ltexport.cli import eval_cmd  # noqa: F401
    from ltexport.cli import bench_cmd  # noqa: F401


_register()
