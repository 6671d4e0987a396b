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


@pytest.fixture(scope="session")
def tiny_llama_build(tmp_path_factory):
    """(plan.json, build dir) of one `ltexport build --backend ort` of tiny-llama (layers 1,2 lazy), built once
    per session for every test that only reads it (copy it to change it)."""
    tmp = tmp_path_factory.mktemp("tiny-llama-build")
    plan = tmp / "plan.json"
    assert run_cli(["plan", "--model", "tiny-llama", "--layers", "1,2", "-o", plan]).exit_code == 0
    result = run_cli(["build", "--model", "tiny-llama", "--plan", plan, "--backend", "ort", "-o", tmp / "out"])
    assert result.exit_code == 0, result.stderr
    return plan, tmp / "out"


@pytest.fixture(scope="session")
def smollm2_build(tmp_path_factory):
    """SmolLM2 built once per session (tests/test_smollm2.py, the Triton server test): 8 lazy layers,
    and a small window that keeps the validation prompt short (S+W+64 tokens) while the ring still wraps."""
    tmp = tmp_path_factory.mktemp("smollm2")
    assert run_cli(["plan", "--model", "smollm2", "--layers", "11,12,13,14,15,16,17,18", "--window", "124",
                    "-o", tmp / "plan.json"]).exit_code == 0
    result = run_cli(["build", "--model", "smollm2", "--plan", tmp / "plan.json", "-o", tmp / "out",
                      "--backend", "ort", "--decode-steps", "8"])
    assert result.exit_code == 0, result.stderr
    return tmp / "out"


@pytest.fixture(scope="session")
def mistral_width_checkpoint(tmp_path_factory):
    """A random 4-layer checkpoint with Mistral-7B's widths (hidden 4096, vocab 32000, 2.3 GB fp16, no
    tokenizer), written once per session."""
    from benchmarks.random_checkpoint import MISTRAL_7B_V02, write_checkpoint

    path = tmp_path_factory.mktemp("mistral-7b-width") / "model"
    write_checkpoint(path, dict(MISTRAL_7B_V02, num_hidden_layers=4))
    return path


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


@pytest.fixture
def umask_027():
    """Run the test under umask 027: new files 0640, dirs 0750 (unlike both the usual 022 and
    mkstemp/mkdtemp's 0600/0700, so a mode check tells them apart)."""
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def assert_umask_modes(root, umask=0o027):
    """`root` and everything under it have the modes open()/mkdir() give under `umask`."""
    import stat
    from pathlib import Path

    root = Path(root)
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        assert mode == want, f"{path}: {oct(mode)} != {oct(want)}"
