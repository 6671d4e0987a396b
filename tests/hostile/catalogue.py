"""The hostile-input catalogue: bad or edge inputs a realistic user gives each command.

Each case sets files up in the working directory `w` (through tests.hostile.conftest.Inputs) and
returns the command line; the command must refuse with one `ltexport: error:` line naming the
problem, exit 1, no traceback, and leave the tree byte-identical. Families: unwritable,
existing-foreign, symlinked, interrupted, corrupt, non-finite, oversize, non-UTF-8 (interrupted
also has the signal tests in test_signals.py and the sweep tests in tests/test_staging.py).
"""

import json
import os
import struct
from dataclasses import dataclass
from typing import Callable

from tests.hostile.conftest import read_only

BUILD = ["build", "--model", "tiny-llama", "--plan", "good.json", "--backend", "ort"]
PLAN = ["plan", "--model", "tiny-llama"]
EVAL = ["eval", "--model", "tiny-llama", "--contexts", "64", "--depths", "0.5"]
BENCH = ["bench", "--model", "tiny-llama", "--plan", "good.json", "--contexts", "64", "--batches", "1"]
GENERATE = ["generate", "b", "--prompt", "hi"]


@dataclass(frozen=True)
class Case:
    command: str
    family: str
    name: str
    setup: Callable  # (Inputs) -> command line
    expect: tuple    # fragments of the error line
    unwritable: bool = False  # run with the permissions of an unprivileged user

    @property
    def id(self) -> str:
        return f"{self.command}-{self.family}-{self.name}"


def _user_dir(i, name, *files):
    (i.w / name).mkdir()
    for f in files:
        i.file(f"{name}/{f}", f"the user's {f}\n")
    return name


def _gguf_truncated_header(i):
    # valid magic and version, then counts for 10 tensors / 50 metadata entries and nothing else
    i.file("m.gguf", b"GGUF" + struct.pack("<IQQ", 3, 10, 50) + b"\x05\x00")
    return "m.gguf"


def _truncated_data(i, legacy=False):
    out = i.legacy_build("b") if legacy else i.build("b")
    data = out / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    return "b"


def _build_json(i, data, legacy=False):
    out = i.build("b")
    (out / "build.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    return "b"


def _truncated_build_json(i):
    out = i.build("b")
    (out / "build.json").write_bytes((out / "build.json").read_bytes()[:40])
    return "b"


def _edited(i):
    out = i.build("b")
    with open(out / "report.md", "a") as f:
        f.write("my notes\n")
    return "b"


def _added(i):
    i.build("b")
    i.file("b/main.c", "int main;\n")
    return "b"


def _readonly_build(i):
    read_only(i.build("b"))
    return "b"


def _readonly_dir(i, name="ro"):
    (i.w / name).mkdir()
    read_only(i.w / name)
    return name


def _dead_owner_staging(i):
    """A stale stage a SIGKILLed run left; the error must come before any sweep or work."""
    os.mkdir(i.w / ".out.staging-999999999-abc")
    return [*BUILD, "-o", "out", "--atol", "nan"]


CASES = [
    # serve
    Case("serve", "existing-foreign", "repo-is-a-file", lambda i: ["serve", i.file("repo", "x").name], ("is not a directory",)),
    Case("serve", "corrupt", "repo-holds-no-model", lambda i: ["serve", _user_dir(i, "repo", "notes.txt")], ("holds no model",)),
    Case("serve", "symlinked", "repo-dangling-link", lambda i: (os.symlink("gone", i.w / "repo"), ["serve", "repo"])[-1],
         ("does not exist",)),
    # plan
    Case("plan", "unwritable", "read-only-dir", lambda i: [*PLAN, "--layers", "1", "-o", f"{_readonly_dir(i)}/p.json"],
         ("not writable",), unwritable=True),
    Case("plan", "existing-foreign", "o-is-users-file", lambda i: [*PLAN, "--layers", "1", "-o", i.file("thesis.tex", "x").name],
         ("not an ltexport plan.json", "will not overwrite")),
    Case("plan", "existing-foreign", "o-is-a-directory", lambda i: [*PLAN, "--layers", "1", "-o", _user_dir(i, "plans")],
         ("is a directory",)),
    Case("plan", "existing-foreign", "plot-is-users-file",
         lambda i: [*PLAN, "-o", "p.json", "--plot", i.file("notes.txt", "mine").name], ("not a PNG",)),
    Case("plan", "existing-foreign", "plot-dir-missing", lambda i: [*PLAN, "-o", "p.json", "--plot", "nodir/x.png"],
         ("does not exist",)),
    Case("plan", "existing-foreign", "plot-with-layers", lambda i: [*PLAN, "--layers", "1", "-o", "p.json", "--plot", "x.png"],
         ("--plot draws measured lazy ratios",)),
    Case("plan", "existing-foreign", "eval-output-foreign",
         lambda i: [*PLAN, "--auto", "--max-drop", "5", "-o", "p.json", "--eval-output", _user_dir(i, "ev", "notes.txt")],
         ("--eval-output ev exists", "not an ltexport eval output")),
    Case("plan", "symlinked", "o-links-to-users-file",
         lambda i: (i.file("thesis.tex", "x"), os.symlink("thesis.tex", i.w / "p.json"), [*PLAN, "--layers", "1", "-o", "p.json"])[-1],
         ("not a regular file",)),
    Case("plan", "oversize", "window-1e9", lambda i: [*PLAN, "--layers", "1,3", "--sink", "2", "--window", "1000000000", "-o", "p.json"],
         ("exceeds the model's 1024 positions",)),
    Case("plan", "oversize", "calib-tokens", lambda i: [*PLAN, "--calib-tokens", "100000", "-o", "p.json"],
         ("exceeds the model's 1024 positions",)),
    Case("plan", "non-finite", "lazy-fraction-nan", lambda i: [*PLAN, "--lazy-fraction", "nan", "-o", "p.json"],
         ("lazy fraction must be in (0, 1]",)),
    Case("plan", "non-finite", "max-drop-nan", lambda i: [*PLAN, "--auto", "--max-drop", "nan", "-o", "p.json"],
         ("--max-drop must be a finite number",)),
    Case("plan", "oversize", "context-zero", lambda i: [*PLAN, "--layers", "1", "--context", "0", "-o", "p.json"],
         ("--context must be an integer >= 1",)),
    Case("plan", "non-UTF-8", "calib-binary", lambda i: [*PLAN, "--calib", i.file("c.bin", bytes(range(256)) * 16).name, "-o", "p.json"],
         ("not UTF-8 text",)),
    Case("plan", "non-UTF-8", "calib-nul-bytes", lambda i: [*PLAN, "--calib", i.file("c.bin", b"\0" * 4096).name, "-o", "p.json"],
         ("binary",)),
    Case("plan", "corrupt", "gguf-truncated-header", lambda i: ["plan", "--model", _gguf_truncated_header(i), "--layers", "1", "-o", "p.json"],
         ("as GGUF", "damaged or incomplete")),
    # build
    Case("build", "existing-foreign", "o-holds-empty-build-json",
         lambda i: (i.file("proj/build.json", "{}"), i.file("proj/main.c", "src"), [*BUILD, "-o", "proj"])[-1],
         ("-o proj exists", "not an ltexport build")),
    Case("build", "existing-foreign", "keep-failed-users-dir",
         lambda i: [*BUILD, "-o", "kf", "--atol", "0", "--rtol", "0", "--keep-failed", _user_dir(i, "keepme", "thesis.tex")],
         ("--keep-failed keepme exists",)),
    Case("build", "existing-foreign", "keep-failed-regular-file",
         lambda i: [*BUILD, "-o", "out", "--keep-failed", i.file("kf.txt", "mine").name], ("not a directory",)),
    Case("build", "existing-foreign", "keep-failed-same-as-o", lambda i: [*BUILD, "-o", "out", "--keep-failed", "out"],
         ("apart from -o",)),
    Case("build", "existing-foreign", "o-is-an-older-build", lambda i: [*BUILD, "-o", i.legacy_build().name],
         ("no inventory",)),
    Case("build", "existing-foreign", "o-build-with-users-file", lambda i: [*BUILD, "-o", _added(i)],
         ("main.c, which ltexport did not write",)),
    Case("build", "existing-foreign", "o-build-with-edited-report", lambda i: [*BUILD, "-o", _edited(i)],
         ("report.md changed since ltexport wrote it",)),
    Case("build", "existing-foreign", "o-is-cwd", lambda i: [*BUILD, "-o", "."], ("current directory",)),
    Case("build", "existing-foreign", "o-is-parent", lambda i: [*BUILD, "-o", ".."], ("current directory",)),
    Case("build", "symlinked", "o-links-to-empty-dir",
         lambda i: (_user_dir(i, "real"), os.symlink("real", i.w / "link"), [*BUILD, "-o", "link"])[-1], ("symbolic link",)),
    Case("build", "unwritable", "read-only-parent", lambda i: [*BUILD, "-o", f"{_readonly_dir(i)}/out"], ("not writable",),
         unwritable=True),
    Case("build", "unwritable", "keep-failed-read-only-parent",
         lambda i: [*BUILD, "-o", "out", "--keep-failed", f"{_readonly_dir(i)}/kf"], ("not writable",), unwritable=True),
    Case("build", "non-finite", "atol-nan", lambda i: [*BUILD, "-o", "out", "--atol", "nan"], ("--atol must be a finite number",)),
    Case("build", "non-finite", "rtol-inf", lambda i: [*BUILD, "-o", "out", "--rtol", "inf"], ("--rtol must be a finite number",)),
    Case("build", "non-finite", "atol-negative", lambda i: [*BUILD, "-o", "out", "--atol", "-1"], (">= 0",)),
    Case("build", "oversize", "plan-window-1e9",
         lambda i: [*BUILD[:4], i.plan_with("huge.json", window=10**9).name, "-o", "out"], ("exceeds the model's 1024 positions",)),
    Case("build", "oversize", "decode-steps", lambda i: [*BUILD, "-o", "out", "--decode-steps", "100000"], ("leaves no room",)),
    Case("build", "corrupt", "plan-random-bytes", lambda i: [*BUILD[:4], i.file("p.json", os.urandom(64)).name, "-o", "out"],
         ("not valid JSON",)),
    Case("build", "corrupt", "plan-truncated", lambda i: [*BUILD[:4], i.file("p.json", '{"format": "ltexport-pl').name, "-o", "out"],
         ("not valid JSON",)),
    Case("build", "non-UTF-8", "plan-latin-1", lambda i: [*BUILD[:4], i.file("p.json", '{"format": "caf\xe9"}'.encode("latin-1")).name, "-o", "out"],
         ("not valid JSON",)),
    Case("build", "interrupted", "stale-stage-beside-o", _dead_owner_staging, ("--atol must be a finite number",)),
    # validate
    Case("validate", "corrupt", "build-json-random-bytes", lambda i: ["validate", _build_json(i, os.urandom(64))], ("not valid JSON",)),
    Case("validate", "corrupt", "build-json-truncated", lambda i: ["validate", _truncated_build_json(i)], ("not valid JSON",)),
    Case("validate", "corrupt", "build-json-list", lambda i: ["validate", _build_json(i, "[1, 2]")], ("not a JSON object",)),
    Case("validate", "corrupt", "build-json-empty-object", lambda i: ["validate", _build_json(i, "{}")], ("no valid 'model'",)),
    Case("validate", "corrupt", "truncated-weights", lambda i: ["validate", _truncated_data(i)], ("truncated",)),
    Case("validate", "corrupt", "older-build-truncated-weights", lambda i: ["validate", _truncated_data(i, legacy=True)],
         ("the weights are truncated",)),
    Case("validate", "corrupt", "not-a-build", lambda i: ["validate", _user_dir(i, "proj", "main.c")], ("no build.json",)),
    Case("validate", "unwritable", "read-only-build", lambda i: ["validate", _readonly_build(i)], ("read-only",), unwritable=True),
    Case("validate", "non-finite", "atol-nan", lambda i: ["validate", i.build().name, "--atol", "nan"], ("--atol must be a finite",)),
    Case("validate", "oversize", "decode-steps", lambda i: ["validate", i.build().name, "--decode-steps", "1000000"],
         ("leaves no room",)),
    # generate
    Case("generate", "corrupt", "build-json-empty-object", lambda i: ["generate", _build_json(i, "{}"), "--prompt", "hi"],
         ("no valid 'model'",)),
    Case("generate", "corrupt", "build-json-random-bytes", lambda i: ["generate", _build_json(i, os.urandom(64)), "--prompt", "hi"],
         ("not valid JSON",)),
    Case("generate", "corrupt", "truncated-weights", lambda i: ["generate", _truncated_data(i), "--prompt", "hi"], ("truncated",)),
    Case("generate", "corrupt", "unloadable-model", lambda i: (i.build(), i.file("b/model.onnx", b"garbage"), GENERATE)[-1],
         ("b/model.onnx",)),
    Case("generate", "non-UTF-8", "prompt-bytes", lambda i: (i.build(), ["generate", "b", "--prompt", "caf\udce9 \udcff"])[-1],
         ("not valid UTF-8",)),
    Case("generate", "oversize", "prompt-100k-chars", lambda i: (i.build(), ["generate", "b", "--prompt", "x" * 100_000])[-1],
         ("1024 positions", "shorten the prompt")),
    Case("generate", "non-finite", "seed-negative", lambda i: (i.build(), [*GENERATE, "--seed", "-1"])[-1], ("--seed must be an integer >= 0",)),
    Case("generate", "non-finite", "temperature-nan", lambda i: (i.build(), [*GENERATE, "--temperature", "nan"])[-1],
         ("--temperature must be a finite number",)),
    Case("generate", "non-finite", "temperature-inf", lambda i: (i.build(), [*GENERATE, "--temperature", "inf"])[-1],
         ("--temperature must be a finite number",)),
    Case("generate", "non-finite", "top-p-nan", lambda i: (i.build(), [*GENERATE, "--top-p", "nan"])[-1], ("--top-p must be a finite",)),
    Case("generate", "corrupt", "build-json-names-missing-tokenizer",
         lambda i: (i.build(), _retokenize(i), [*GENERATE])[-1], ("no tokenizer/ directory",)),
    # inspect
    Case("inspect", "corrupt", "unloadable-model", lambda i: (i.build(), i.file("b/model.onnx", b"garbage" * 10), ["inspect", "b"])[-1],
         ("b/model.onnx",)),
    Case("inspect", "corrupt", "older-build-unloadable-model",
         lambda i: (i.legacy_build("b"), i.file("b/model.onnx", b"garbage" * 10), ["inspect", "b"])[-1], ("cannot read", "as ONNX")),
    Case("inspect", "corrupt", "build-json-list", lambda i: ["inspect", _build_json(i, "[]")], ("not a JSON object",)),
    Case("inspect", "corrupt", "plan-random-bytes", lambda i: ["inspect", i.file("p.json", os.urandom(64)).name], ("not valid JSON",)),
    Case("inspect", "oversize", "context-negative", lambda i: ["inspect", "good.json", "--context", "-5"], ("--context must be an integer",)),
    Case("inspect", "existing-foreign", "plot-is-users-file",
         lambda i: ["inspect", "good.json", "--plot", i.file("notes.txt", "mine").name], ("not a PNG",)),
    Case("inspect", "unwritable", "plot-read-only-dir", lambda i: ["inspect", "good.json", "--plot", f"{_readonly_dir(i)}/s.png"],
         ("not writable",), unwritable=True),
    # package
    Case("package", "corrupt", "no-build-json", lambda i: (i.build(), (i.w / "b" / "build.json").unlink(), ["package", "b", "--triton", "r"])[-1],
         ("no build.json",)),
    Case("package", "corrupt", "truncated-weights", lambda i: ["package", _truncated_data(i), "--triton", "r"], ("truncated",)),
    Case("package", "corrupt", "older-build-truncated-weights", lambda i: ["package", _truncated_data(i, legacy=True), "--triton", "r"],
         ("the weights are truncated",)),
    Case("package", "corrupt", "build-json-list", lambda i: ["package", _build_json(i, "[1, 2]"), "--triton", "r"], ("not a JSON object",)),
    Case("package", "unwritable", "read-only-repo", lambda i: (i.build(), ["package", "b", "--triton", _readonly_dir(i, "repo")])[-1],
         ("not a writable directory",), unwritable=True),
    Case("package", "existing-foreign", "triton-is-a-file", lambda i: (i.build(), ["package", "b", "--triton", i.file("r", "x").name])[-1],
         ("not a directory",)),
    Case("package", "symlinked", "model-dir-is-a-link",
         lambda i: (i.build(), _user_dir(i, "r"), _user_dir(i, "elsewhere"), os.symlink("../elsewhere", i.w / "r" / "ltexport"),
                    ["package", "b", "--triton", "r"])[-1], ("not a model directory",)),
    # eval
    Case("eval", "existing-foreign", "o-holds-empty-eval-json",
         lambda i: (i.file("ev/eval.json", "{}"), i.file("ev/notes.txt", "mine"), [*EVAL, "--plan", "good.json", "-o", "ev"])[-1],
         ("-o ev exists", "not an ltexport eval output")),
    Case("eval", "symlinked", "o-links-to-empty-dir",
         lambda i: (_user_dir(i, "real"), os.symlink("real", i.w / "ev"), [*EVAL, "--plan", "good.json", "-o", "ev"])[-1],
         ("symbolic link",)),
    Case("eval", "unwritable", "read-only-parent", lambda i: [*EVAL, "--plan", "good.json", "-o", f"{_readonly_dir(i)}/ev"],
         ("not writable",), unwritable=True),
    Case("eval", "non-finite", "seed-negative", lambda i: [*EVAL, "--plan", "good.json", "--seed", "-1", "-o", "ev"],
         ("--seed must be an integer >= 0",)),
    Case("eval", "non-finite", "depths-nan", lambda i: [*EVAL[:-1], "nan", "--plan", "good.json", "-o", "ev"], ("--depths",)),
    Case("eval", "non-UTF-8", "calib-binary",
         lambda i: [*EVAL, "--lazy-fractions", "0.5", "--calib", i.file("c.bin", bytes(range(256)) * 16).name, "-o", "ev"],
         ("not UTF-8 text",)),
    Case("eval", "oversize", "window-1e9", lambda i: [*EVAL, "--lazy-fractions", "0.5", "--window", "1000000000", "-o", "ev"],
         ("exceeds the model's 1024 positions",)),
    Case("eval", "oversize", "contexts", lambda i: [*EVAL[:3], "--contexts", "100000000", *EVAL[5:], "--plan", "good.json", "-o", "ev"],
         ("exceeds the model's", "positions")),
    Case("eval", "corrupt", "build-truncated-weights", lambda i: [*EVAL, "--build", _truncated_data(i), "-o", "ev"], ("truncated",)),
    # bench
    Case("bench", "existing-foreign", "o-holds-empty-bench-json",
         lambda i: (i.file("bn/bench.json", "{}"), i.file("bn/notes.txt", "mine"), [*BENCH, "-o", "bn"])[-1],
         ("-o bn exists", "not an ltexport bench output")),
    Case("bench", "symlinked", "o-links-to-empty-dir", lambda i: (_user_dir(i, "real"), os.symlink("real", i.w / "bn"), [*BENCH, "-o", "bn"])[-1],
         ("symbolic link",)),
    Case("bench", "unwritable", "read-only-parent", lambda i: [*BENCH, "-o", f"{_readonly_dir(i)}/bn"], ("not writable",), unwritable=True),
    Case("bench", "non-finite", "threads-zero", lambda i: [*BENCH, "--threads", "0", "-o", "bn"], ("--threads must be an integer >= 1",)),
    Case("bench", "oversize", "contexts", lambda i: [*BENCH[:5], "--contexts", "1000000000", "-o", "bn"], ("exceeds the model's",)),
    Case("bench", "oversize", "batches-1e7", lambda i: [*BENCH[:7], "--batches", "1,10000000", "-o", "bn"],
         ("this bench needs ~", "GB of memory", "lower --contexts, --batches")),
    Case("bench", "oversize", "plan-window-1e9", lambda i: [*BENCH[:3], "--plan", i.plan_with("huge.json", window=10**9).name, "-o", "bn"],
         ("exceeds the model's 1024 positions",)),
    Case("bench", "corrupt", "plan-list", lambda i: [*BENCH[:3], "--plan", i.file("p.json", "[]").name, "-o", "bn"],
         ("not an ltexport plan",)),
]


def _retokenize(i):
    """build.json claiming a saved tokenizer the build lacks: must never become a model-hub id."""
    path = i.w / "b" / "build.json"
    info = json.loads(path.read_text())
    info["tokenizer"] = "tokenizer"
    path.write_text(json.dumps(info))
