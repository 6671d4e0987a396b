"""Click entry point. Commands are thin: parse, build a config, call the library.

User errors (LtexportError) become one line on stderr and exit code 1, here and only here.
SIGINT, SIGTERM and SIGHUP unwind like Ctrl-C (so staging is removed) and end in one line too,
with the shell's exit code for that signal (128 + its number).
"""

import signal
import sys

import click

from ltexport import console, interrupts
from ltexport.errors import LtexportError


_VERBOSE = "ltexport.verbose"


def _set_verbosity(ctx, param, value):
    if value:  # given to the group or to the command: ctx.meta is shared by both
        ctx.meta[_VERBOSE] = True


def _verbose_option():
    return click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, is_eager=True, callback=_set_verbosity,
                        help="Also show other libraries' warnings, logs and progress bars.")


class _Command(click.Command):
    """Every command takes -v/--verbose (as the group does), so it may follow the command name."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(_verbose_option())

    def invoke(self, ctx):
        # Before the command imports torch or transformers: they read some switches at import.
        console.configure(verbose=True if ctx.meta.get(_VERBOSE) else None)
        return super().invoke(ctx)


class _Group(click.Group):
    command_class = _Command

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(_verbose_option())

    def invoke(self, ctx):
        try:
            with interrupts.handled():
                result = super().invoke(ctx)
                interrupts.check()
                return result
        except LtexportError as exc:
            click.echo(f"ltexport: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            click.echo(f"ltexport: error: interrupted by {signal.Signals(signum).name}; "
                       "nothing was left half-written (run the command again)", err=True)
            sys.exit(128 + signum)


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
    from ltexport.cli import env_cmd  # noqa: F401


_register()
