"""Benchmark: `ltexport plan` and `ltexport eval` of a Mistral-7B-class model, layer by layer, on a small machine.

    python benchmarks/plan_7b.py [--root /tmp/ltexport-7b] [--keep] [--skip-eval] [--build]

1. Writes (or reuses) the random-weight checkpoint with Mistral-7B-Instruct-v0.2's config under
   --root (random_checkpoint.py: fp16 safetensors, ~14.5 GB, no tokenizer, so ltexport uses the
   UTF-8 bytes of its texts as token ids). Its fp32 model (29 GB) does not fit a 24 GB machine,
   so `plan` and `eval` pick the layer-streamed path by themselves (a one-line notice says so).
2. Times `ltexport plan --model CKPT --calib-tokens 4096 --lazy-fraction 0.5 -o plan.json` under
   `/usr/bin/time -v` (wall time; peak RSS = its "Maximum resident set size").
3. Times a 2-context eval of that plan: `ltexport eval --model CKPT --plan plan.json --contexts
   1024,2048 --depths 0.5 -o eval` (1024 = sink + window evicts nothing: the control).
4. With --build, feeds the plan to `ltexport build ... --dtype fp16 --validate-layers 2` (as
   benchmarks/build_7b.py does with an explicit --layers plan) and reports its status.

The load average (1/5/15 min) is recorded before and after each command: on a shared machine the
wall times scale with it. With random weights the lazy ratios carry no information: this measures
the toolchain's time and memory, not a model's quality. Results: printed and written to
--root/plan_result.json (kept); the checkpoint and outputs are removed unless --keep.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import REPO, load_average, run_measured  # noqa: E402
from random_checkpoint import MISTRAL_7B_V02, write_checkpoint  # noqa: E402

_PHASES = ("measuring", "evaluating", "validation scope", "exporting", "validating", "wrote")


def timed(name: str, cmd: list[str], root: Path) -> dict:
    print(f"timing {name}:", " ".join(cmd), flush=True)
    result = {"command": " ".join(cmd), "load_average_before": load_average()}
    result.update(run_measured(cmd, root / f"{name}.log", _PHASES))
    result["load_average_after"] = load_average()
    print(json.dumps(result, indent=1), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/ltexport-7b"))
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint and the outputs")
    parser.add_argument("--skip-eval", action="store_true", help="time the plan only")
    parser.add_argument("--build", action="store_true", help="also feed the plan to ltexport build (fp16, 2-layer validation)")
    args = parser.parse_args()
    root = args.root.resolve()
    if REPO in root.parents or root == REPO:
        sys.exit("--root must be outside the repository")
    checkpoint, plan = root / "mistral-7b-v0.2-random", root / "plan.json"
    ltexport = [sys.executable, "-m", "ltexport"]
    result = {}
    try:
        if not (checkpoint / "model.safetensors.index.json").is_file():
            print(f"writing the random checkpoint to {checkpoint} ...", flush=True)
            result["checkpoint_bytes"] = write_checkpoint(checkpoint, MISTRAL_7B_V02)
        result["plan"] = timed("plan", [*ltexport, "plan", "--model", str(checkpoint), "--calib-tokens", "4096",
                                        "--lazy-fraction", "0.5", "-o", str(plan)], root)
        if plan.is_file():
            doc = json.loads(plan.read_text())
            result["plan"].update(lazy_layers=doc["lazy_layers"], scores=doc["scores"], calibration=doc["calibration"])
        if not args.skip_eval and plan.is_file():
            shutil.rmtree(root / "eval", ignore_errors=True)
            result["eval"] = timed("eval", [*ltexport, "eval", "--model", str(checkpoint), "--plan", str(plan),
                                            "--contexts", "1024,2048", "--depths", "0.5", "-o", str(root / "eval")], root)
            if (root / "eval" / "eval.json").is_file():
                doc = json.loads((root / "eval" / "eval.json").read_text())
                result["eval"]["variants"] = [{k: v[k] for k in ("name", "perplexity", "passkey", "drops") if k in v}
                                              for v in doc["variants"]]
                result["eval"]["timings_s"] = doc["timings_s"]
        if args.build and plan.is_file():
            shutil.rmtree(root / "out", ignore_errors=True)
            result["build"] = timed("build", [*ltexport, "build", "--model", str(checkpoint), "--plan", str(plan),
                                              "-o", str(root / "out"), "--backend", "ort", "--dtype", "fp16",
                                              "--validate-layers", "2"], root)
            if (root / "out" / "report.json").is_file():
                result["build"]["status"] = json.loads((root / "out" / "report.json").read_text())["status"]
    finally:
        if root.is_dir():
            (root / "plan_result.json").write_text(json.dumps(result, indent=1) + "\n")
        if not args.keep:
            for path in (checkpoint, root / "eval", root / "out"):
                shutil.rmtree(path, ignore_errors=True)
    ok = [result.get(k, {}).get("returncode", 0) == 0 for k in ("plan", "eval", "build")]
    return 0 if all(ok) and result.get("build", {}).get("status", "pass") == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
