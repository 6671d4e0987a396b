"""Click entry point. Commands are thin: parse, build a config, call the library.

User errors (LtexportError) become one line on stderr and exit code 1, here and only here.
SIGINT, SIGTERM and SIGHUP unwind like Ctrl-C (so staging is removed) and end in one line too,
with the shell's exit code for that signal (128 + its number).
"""

import os
import signal
import sys
import warnings

import click

from ltexport import interrupts
from ltexport.errors import LtexportError


# Third-party chatter (transformers' and torch.onnx's logging, Python warnings from torch/onnxscript)
# would bury the one line that matters; the user's own TRANSFORMERS_VERBOSITY, TORCH_LOGS, -W or
# PYTHONWARNINGS still win.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TORCH_LOGS", "-onnx")


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            with interrupts.handled(), warnings.catch_warnings():
                if not sys.warnoptions:
                    warnings.simplefilter("ignore")
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
    from ltexport.cli import eval_cmd  # noqa: F401
    from ltexport.cli import bench_cmd  # noqa: F401


_register()
