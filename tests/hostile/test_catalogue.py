"""Every case of the hostile-input catalogue: one error line, exit 1, no traceback, nothing created or deleted."""

from collections import Counter

import pytest

from ltexport.cli import main
from tests.conftest import run_cli
from tests.hostile.catalogue import CASES
from tests.hostile.conftest import snapshot, unprivileged

# Commands that take no file, number or text from the user (their hostile environment is tested beside
# them: tests/test_env.py runs `env` on a damaged plugin library).
NO_INPUTS = {"env"}
FAMILIES = {"unwritable", "existing-foreign", "symlinked", "interrupted", "corrupt", "non-finite", "oversize", "non-UTF-8"}


def assert_refused(result, fragments):
    """Exit 1; stderr is exactly one line, `ltexport: error: <problem>; <fix>`, naming every fragment."""
    lines = result.stderr.splitlines()
    assert result.exit_code == 1, (result.exit_code, result.stderr, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("ltexport: error: "), result.stderr
    assert "; " in lines[0] and "Traceback" not in result.stderr + result.stdout, lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_input_is_refused_and_changes_nothing(case, inputs, scratch):
    args = case.setup(inputs)
    before = snapshot(scratch)
    if case.unwritable:
        with unprivileged():
            result = run_cli(args, cwd=inputs.w)
    else:
        result = run_cli(args, cwd=inputs.w)
    assert_refused(result, case.expect)
    assert snapshot(scratch) == before


def test_the_catalogue_covers_every_command_and_family():
    commands = set(main.commands) - NO_INPUTS
    assert {c.command for c in CASES} == commands
    assert {c.family for c in CASES} <= FAMILIES
    per_command = {cmd: {c.family for c in CASES if c.command == cmd} for cmd in commands}
    assert all(len(families) >= 3 for families in per_command.values()), per_command
    assert len({c.id for c in CASES}) == len(CASES)
    print("cases by family:", dict(Counter(c.family for c in CASES)))
