"""Benchmark: `ltexport build` of a Mistral-7B-class model on a small machine (wall time, peak RSS, disk).

    python benchmarks/build_7b.py [--root /tmp/ltexport-7b] [--keep]

1. Writes a random-initialised checkpoint with Mistral-7B-Instruct-v0.2's config (fp16 safetensors,
   ~14.5 GB, sharded at 5 GB with an index json like the Hugging Face repo) under --root, one
   tensor at a time, so writing it needs no more than one tensor of memory. The weights are
   random (normal, std = initializer_range; norms = 1): this measures the toolchain, not a model.
   No tokenizer is written: Mistral's is not available offline and SmolLM2's has 49152 ids, more
   than this vocabulary's 32000, so `ltexport build` validates on the UTF-8 bytes of its
   calibration text as token ids (said in report.json's scope) and writes no tokenizer/.
2. Makes a 50% lazy plan with `ltexport plan --layers 1,3,...,31` (every other layer; with random
   weights lazy ratios carry no information, and alternating layers puts one full and one lazy
   layer in the 2-layer validation prefix).
3. Times `ltexport build --dtype fp16 --validate-layers 2 --backend ort` under `/usr/bin/time -v`
   (its "Maximum resident set size" is the peak RSS reported) and samples the build's RSS every
   0.5 s to attribute the peak to a phase (the last line the build logged). Not getrusage in this
   process: ru_maxrss survives exec, so a child of this process would inherit its peak.

Everything is written under --root (never inside the repository) and removed at the end unless
--keep. Results: printed and written to --root/result.json (kept even without --keep).
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

# Mistral-7B-Instruct-v0.2's config.json (torch_dtype says what these files hold: float16).
MISTRAL_7B_V02 = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.36.0", "use_cache": True,
    "vocab_size": 32000,
}
SHARD_BYTES = 5 * 10**9  # Hugging Face's default max_shard_size "5GB"
REPO = Path(__file__).resolve().parents[1]
_PHASES = ("validation scope", "exporting", "validating", "building", "wrote")  # ltexport build's log lines


def tensor_specs(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every checkpoint tensor, in state-dict order, from a weightless skeleton."""
    import transformers

    from ltexport.models.skeleton import empty_model

    cfg = transformers.MistralConfig(**{k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")})
    cfg.architectures = config["architectures"]
    model = empty_model(cfg, __import__("torch").float16)
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def random_tensor(name: str, shape, std: float, seed: int):
    import torch

    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.float16)
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator) * std).to(torch.float16)


def write_checkpoint(directory: Path, config: dict) -> int:
    """Sharded fp16 safetensors + index, streamed tensor by tensor; returns total bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    specs = tensor_specs(config)
    shards, current, size = [], [], 0
    for name, shape in specs:
        nbytes = 2 * _numel(shape)
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    shards.append(current)
    weight_map, total = {}, 0
    for index, shard in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        total += _write_shard(directory / file, shard, config["initializer_range"], seed=1000 * index)
        weight_map.update((name, file) for name, _ in shard)
        print(f"  wrote {file}", flush=True)
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return total


def _write_shard(path: Path, shard, std: float, seed: int) -> int:
    """safetensors layout: u64 header length, JSON header (offsets into the data), raw data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shard:
        nbytes = 2 * _numel(shape)
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for i, (name, shape) in enumerate(shard):
            tensor = random_tensor(name, shape, std, seed + i)
            f.write(tensor.reshape(-1).view(__import__("torch").uint8).numpy().tobytes())
    return offset


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def run_measured(cmd: list[str], log_path: Path) -> dict:
    """Run `cmd` under /usr/bin/time -v; returns wall time, peak RSS, and sampled peaks per logged phase."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    state = {"phase": "start", "peaks": {}}
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            rss = sum(_rss(pid) for pid in _children(proc.pid))
            peaks = state["peaks"]
            peaks[state["phase"]] = max(peaks.get(state["phase"], 0), rss)

    threading.Thread(target=sample, daemon=True).start()
    peak_kb = None
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(f"{time.perf_counter() - start:8.1f}s {line}")
            log.flush()
            if "Maximum resident set size (kbytes):" in line:
                peak_kb = int(line.split(":")[1])
            elif line.startswith(_PHASES):
                state["phase"] = line.strip()[:90]
    proc.wait()
    done.set()
    return {"returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_gb": round(peak_kb * 1024 / 1e9, 2) if peak_kb else None,
            "sampled_peak_rss_by_phase_gb": {k: round(v / 1e9, 2) for k, v in state["peaks"].items()}}


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


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
        result.update(run_measured(cmd, root / "build.log"))
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
