"""Benchmark: `ltexport build` of a Mistral-7B-class model on a small machine (wall time, peak RSS, disk).

    python benchmarks/build_7b.py [--root /tmp/ltexport-7b] [--keep]

1. Writes a random-weight checkpoint with Mistral-7B-Instruct-v0.2's config (fp16 safetensors,
   ~14.5 GB, sharded at 5 GB with an index json like the Hugging Face repo) under --root, one
   tensor at a time (random_checkpoint.py), so writing it needs no more than one tensor of memory.
   This measures the toolchain, not a model.
   No tokenizer is written: Mistral's is not available offline and SmolLM2's has 49152 ids, more
   than this vocabulary's 32000, so `ltexport build` validates on the UTF-8 bytes of its
   calibration text as token ids (said in report.json's scope) and writes no tokenizer/.
2. Makes a 50% lazy plan with `ltexport plan --layers 1,3,...,31` (every other layer; with random
   weights lazy ratios carry no information, and alternating layers puts one full and one lazy
   layer in the 2-layer validation prefix).
3. Times `ltexport build --dtype fp16 --validate-layers 2 --backend ort` under `/usr/bin/time -v`
   (its "Maximum resident set size" is the peak RSS reported; measure.py also attributes sampled
   RSS to the build's logged phases).

Everything is written under --root (never inside the repository) and removed at the end unless
--keep. Results: printed and written to --root/result.json (kept even without --keep).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import REPO, disk_bytes, load_average, run_measured  # noqa: E402
from random_checkpoint import MISTRAL_7B_V02, write_checkpoint  # noqa: E402

_PHASES = ("validation scope", "exporting", "validating", "building", "wrote")  # ltexport build's log lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/ltexport-7b"))
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint and the build")
    args = parser.parse_args()
    root = args.root.resolve()
    if REPO in root.parents or root == REPO:
        sys.exit("--root must be outside the repository")
    sys.path.insert(0, str(REPO))
    checkpoint, out, plan = root / "mistral-7b-v0.2-random", root / "out", root / "plan.json"
    result = {}
    try:
        if not (checkpoint / "model.safetensors.index.json").is_file():
            print(f"writing the random checkpoint to {checkpoint} ...", flush=True)
            t = time.perf_counter()
            result["checkpoint_bytes"] = write_checkpoint(checkpoint, MISTRAL_7B_V02)
            result["checkpoint_write_s"] = round(time.perf_counter() - t, 1)
        layers = ",".join(str(i) for i in range(1, 32, 2))
        ltexport = [sys.executable, "-m", "ltexport"]
        subprocess.run([*ltexport, "plan", "--model", str(checkpoint), "--layers", layers, "-o", str(plan)],
                       check=True, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL)
        shutil.rmtree(out, ignore_errors=True)
        cmd = [*ltexport, "build", "--model", str(checkpoint), "--plan", str(plan), "-o", str(out),
               "--backend", "ort", "--dtype", "fp16", "--validate-layers", "2"]
        print("timing:", " ".join(cmd), flush=True)
        result["command"] = " ".join(cmd)
        result["load_average_before"] = load_average()
        result.update(run_measured(cmd, root / "build.log", _PHASES))
        result["load_average_after"] = load_average()
        if out.is_dir():
            report = json.loads((out / "report.json").read_text())
            result.update(status=report["status"], scope=report["scope"], timings_s=report["timings_s"],
                          checks=report["checks"], out_disk_gb=round(disk_bytes(out) / 1e9, 2))
    finally:
        (root / "result.json").write_text(json.dumps(result, indent=1) + "\n") if root.is_dir() else None
        print(json.dumps(result, indent=1))
        if not args.keep:
            shutil.rmtree(checkpoint, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
    return 0 if result.get("status") == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
