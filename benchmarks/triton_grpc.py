"""Greedy decode over gRPC from a real Triton server vs `ltexport generate`'s loop, in one run.

    python benchmarks/triton_grpc.py OUT [--prompt "The capital of France is"] [--max-new-tokens 64] [--repeats 3]

Packages the build OUT with `ltexport package --runtime python` into a temporary repository,
starts tritonserver (ltexport.triton.server, as `ltexport serve` does), and alternates, `--repeats`
times: the in-process loop `ltexport generate --raw` runs (ltexport.runtime.open_step +
generation.iter_tokens on ONNX Runtime) and examples/triton_client.py's generate() against the
server. Both decode the same greedy tokens (checked). Prints first-token latency and decode
tokens/s (the tokens after the first) per side, their median ratio, and the load average.
Wall-clock figures: compare the two sides of one run, not runs on different machines.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ltexport.build_info import read_build_info  # noqa: E402
from ltexport.generation import iter_tokens  # noqa: E402
from ltexport.runtime import encode_prompt, load_build_tokenizer, open_step  # noqa: E402
from ltexport.triton import package_triton  # noqa: E402
from ltexport.triton.server import TritonServer  # noqa: E402


def load_client():
    spec = importlib.util.spec_from_file_location("triton_client", ROOT / "examples" / "triton_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def local_run(step, ids, n):
    """(tokens, first-token seconds, decode seconds) of the loop `ltexport generate` runs."""
    t0 = time.perf_counter()
    tokens, t1 = [], None
    for token in iter_tokens(step, step.empty_caches(1), ids, n):
        tokens.append(token)
        t1 = t1 or time.perf_counter()
    return tokens, t1 - t0, time.perf_counter() - t1


def grpc_run(example, client, ids, n, sequence_id):
    timing: dict = {}
    tokens = example.generate(client, "bench", ids, n, sequence_id=sequence_id, timing=timing)
    return tokens, timing["first_token_s"], timing["decode_s"]


def summarize(runs, n_decoded):
    first = statistics.median(r[1] for r in runs)
    rate = statistics.median(n_decoded / r[2] for r in runs)
    return {"first_token_s": round(first, 4), "decode_tokens_per_s": round(rate, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a passing `ltexport build -o OUT` directory (ONNX Runtime)")
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    import tritonclient.grpc as grpcclient

    info = read_build_info(args.out)
    ids = encode_prompt(load_build_tokenizer(args.out, info), args.prompt, chat=False)
    example = load_client()
    with tempfile.TemporaryDirectory(prefix="ltexport-bench-triton-") as tmp:
        package_triton(args.out, Path(tmp) / "repo", name="bench", runtime="python")
        with TritonServer(Path(tmp) / "repo", log=Path(tmp) / "server.log") as server, \
                open_step(args.out, info, "ort", 0) as step:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            local, remote = [], []
            for k in range(args.repeats):  # alternate, so both sides see the same machine load
                local.append(local_run(step, ids, args.max_new_tokens))
                remote.append(grpc_run(example, client, ids, args.max_new_tokens, sequence_id=1000 + k))
            load = os.getloadavg()
    tokens = local[0][0]
    if any(r[0][:len(tokens)] != tokens for r in local + remote):
        sys.exit("the two sides generated different tokens")
    n_decoded = len(tokens) - 1
    result = {"build": str(args.out), "prompt_tokens": len(ids), "new_tokens": len(tokens), "repeats": args.repeats,
              "generate_loop": summarize(local, n_decoded), "triton_grpc": summarize(remote, n_decoded),
              "load_average": [round(x, 2) for x in load]}
    result["grpc_vs_generate_decode"] = round(result["triton_grpc"]["decode_tokens_per_s"]
                                              / result["generate_loop"]["decode_tokens_per_s"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.out}: {len(ids)} prompt tokens, {len(tokens)} new tokens (greedy, identical on both sides), "
          f"median of {args.repeats}")
    print("| side | first token s | decode tokens/s |\n| --- | --- | --- |")
    for side in ("generate_loop", "triton_grpc"):
        print(f"| {side} | {result[side]['first_token_s']} | {result[side]['decode_tokens_per_s']} |")
    print(f"gRPC / generate decode speed: {result['grpc_vs_generate_decode']:.3f}x; "
          f"load average {' '.join(map(str, result['load_average']))}")


if __name__ == "__main__":
    main()
