"""SIGINT, SIGTERM and SIGHUP while a real `ltexport` process exports or validates tiny-llama: one
error line, the signal's exit code, and nothing left behind (no staging, no temp file, the build
being validated byte-identical). The processes run concurrently to keep the suite short."""

import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.hostile.conftest import snapshot

# Signals the test runner may ignore (nohup, `cmd &`) are put back to their defaults in the child.
LAUNCH = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "signal.signal(signal.SIGHUP, signal.SIG_DFL); sys.argv[0] = 'ltexport'; "
          "from ltexport.cli import main; main()")
BUILD = ["build", "--model", "tiny-llama", "--plan", "plan.json", "--backend", "ort", "--decode-steps", "2", "-o", "out"]
CASES = {
    "build-SIGINT-during-export": (BUILD, "exporting ONNX", signal.SIGINT),
    "build-SIGTERM-during-export": (BUILD, "exporting ONNX", signal.SIGTERM),
    "build-SIGHUP-during-export": (BUILD, "exporting ONNX", signal.SIGHUP),
    "build-SIGTERM-during-validation": (BUILD, "validating", signal.SIGTERM),
    "validate-SIGINT-during-validation": (["validate", "b", "--decode-steps", "2"], "validating", signal.SIGINT),
    "validate-SIGTERM-during-validation": (["validate", "b", "--decode-steps", "2"], "validating", signal.SIGTERM),
}


class Run:
    """One interrupted process: signalled once `wait_for` appears on its stderr."""

    def __init__(self, cwd: Path, args, wait_for: str, signum: int):
        self.cwd, self.wait_for, self.signum = cwd, wait_for, signum
        self.before = snapshot(cwd)
        self.process = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], cwd=cwd, text=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines, self.stage_seen = [], None
        self.thread = threading.Thread(target=self._watch)
        self.thread.start()

    def _watch(self):
        signalled = False
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if not signalled and self.wait_for in line:
                self.stage_seen = sorted(p.name for p in self.cwd.iterdir() if p.name.startswith(".out.staging-"))
                self.process.send_signal(self.signum)
                signalled = True
        self.process.wait()

    def result(self, timeout=600):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.process.kill()
            pytest.fail(f"{self.cwd.name} did not finish: {self.lines[-5:]}")
        return self


@pytest.fixture(scope="module")
def runs(tiny_llama_build, tmp_path_factory):
    plan, build = tiny_llama_build
    started = {}
    for name, (args, wait_for, signum) in CASES.items():
        cwd = tmp_path_factory.mktemp(name)
        shutil.copy(plan, cwd / "plan.json")
        if args[0] == "validate":
            shutil.copytree(build, cwd / "b")
        started[name] = Run(cwd, args, wait_for, signum)
    return started


@pytest.mark.parametrize("name", CASES)
def test_a_signal_leaves_nothing_behind(runs, name):
    run = runs[name].result()
    args, _, signum = CASES[name]
    assert run.process.returncode == 128 + signum, run.lines
    errors = [line for line in run.lines if line.startswith("ltexport: error:")]
    assert errors == [run.lines[-1]] and f"interrupted by {signal.Signals(signum).name}" in errors[0], run.lines
    assert not any("Traceback" in line for line in run.lines), run.lines
    if args[0] == "build":  # the stage existed, named after its owner, when the signal was sent
        assert run.stage_seen and run.stage_seen[0].startswith(f".out.staging-{run.process.pid}-"), run.stage_seen
    assert snapshot(run.cwd) == run.before
