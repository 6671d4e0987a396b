import os
import warnings

import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ltexport.models.sources import TINY_MODELS, resolve  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models():
    """name -> (source, original model): loaded once per session."""
    return {name: (resolve(name), resolve(name).load_model()) for name in TINY_MODELS}


def run_cli(args, cwd=None):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from ltexport.cli import main

    runner = CliRunner()
    if cwd is not None:
        old = os.getcwd()
        os.chdir(cwd)
    try:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        if cwd is not None:
            os.chdir(old)


def assert_user_error(result, *fragments):
    """Exit code 1, exactly one stderr line mentioning every fragment, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    errors = [line for line in lines if line.startswith("ltexport: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
