"""How close can ONNX Runtime come to the bytes bound at all? (issue 12's "≥ 80% of its bytes bound")

    python benchmarks/ort_read_ceiling.py BUILD_DIR [--context 8174] [--rounds 15] [-o result.json]

In one process, alternating round by round with pauses between them (the host's bandwidth swings
within seconds, so only paired figures mean anything), it times:
- the build's decode step (model.ort.onnx through FastStep, caches of --context tokens, batch 1);
- the same model's weight MatMuls alone as one ONNX Runtime graph (every [1, in] x [in, out] GEMV of
  the step, random values of the same shapes): the best ONNX Runtime's own kernels read those bytes;
- the read probes: ONNX Runtime ReduceSum and a torch sum (the bench's probe) over the same bytes.
Each figure is the median of 5 calls; the ratios are per round, then the median (and quartiles) over
rounds. Threads: 2 (the machine kind's cores) unless --threads.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def weight_shapes(fast_graph: Path) -> list[tuple[int, int]]:
    """[in, out] of every MatMul whose second input is a 2-D initializer (stored or transposed)."""
    import onnx

    model = onnx.load(str(fast_graph), load_external_data=False)
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    transposed = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Transpose"}
    shapes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2:
            b = node.input[1]
            if len(dims.get(b, [])) == 2:
                shapes.append(tuple(dims[b]))
            elif len(dims.get(transposed.get(b, ""), [])) == 2:
                shapes.append(tuple(reversed(dims[transposed[b]])))
    return shapes


def gemv_session(shapes, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    widths = sorted({k for k, _ in shapes})
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [1, 1, k]) for k in widths]
    nodes, inits, outputs = [], [], []
    for i, (k, n) in enumerate(shapes):
        inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.02).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"x{k}", f"w{i}"], [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    model = helper.make_model(helper.make_graph(nodes, "gemv", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), _options(threads), providers=["CPUExecutionProvider"])
    feed = {f"x{k}": np.ones((1, 1, k), np.float32) for k in widths}
    return lambda: session.run(None, feed)


def reduce_sum(nbytes: int, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = nbytes // 4
    graph = helper.make_graph([helper.make_node("ReduceSum", ["d"], ["s"], keepdims=0)], "probe",
                              [helper.make_tensor_value_info("d", TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])])
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
                                   .SerializeToString(), _options(threads), providers=["CPUExecutionProvider"])
    data = np.ones(n, np.float32)
    return lambda: session.run(None, {"d": data})


def torch_sum(nbytes: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    data = torch.ones(nbytes // 4)
    return lambda: data.sum()


def _options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def decode_step(build: Path, context: int, threads: int):
    """(one decode step at `context` cached tokens, the fp32 KV bytes it attends: the bench's count)."""
    from ltexport.backends.ort.fast import FastStep
    from ltexport.export.contract import ORT_MODEL_FILE
    from ltexport.plan.schema import load_plan
    from ltexport.plan.summary import kv_cache_bytes

    step = FastStep(build / ORT_MODEL_FILE, threads, num_logits=1)
    caches = step.empty_caches(1, context + 1)
    plan = load_plan(build / "plan.json")
    kv_bytes = kv_cache_bytes(plan, context, 4, hybrid=bool(plan.lazy_layers))
    ids, past = np.array([[200]]), np.full(1, context, np.int64)
    step(ids, past, caches)
    return (lambda: step(ids, past, caches)), kv_bytes


def timed(call, calls: int = 5, pause: float = 0.1) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    time.sleep(pause)  # thread pools stop spinning before the next figure
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="an `ltexport build --backend ort` output (has model.ort.onnx)")
    parser.add_argument("--context", type=int, default=8174)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    from ltexport.export.contract import ORT_MODEL_FILE

    shapes = weight_shapes(args.build / ORT_MODEL_FILE)
    weight_bytes = sum(k * n * 4 for k, n in shapes)
    step, kv_bytes = decode_step(args.build, args.context, args.threads)
    step_bytes = weight_bytes + kv_bytes
    figures = {"gemv": gemv_session(shapes, args.threads), "ort_sum_weights": reduce_sum(weight_bytes, args.threads),
               "torch_sum_weights": torch_sum(weight_bytes, args.threads), "step": step,
               "ort_sum_step": reduce_sum(step_bytes, args.threads), "torch_sum_step": torch_sum(step_bytes, args.threads)}
    rounds = [{name: timed(call) for name, call in figures.items()} for _ in range(args.rounds)]
    shares = {  # a share of a probe: probe time / engine time over the same bytes
        "weight GEMVs vs torch sum": [r["torch_sum_weights"] / r["gemv"] for r in rounds],
        "weight GEMVs vs ORT ReduceSum": [r["ort_sum_weights"] / r["gemv"] for r in rounds],
        "decode step vs torch sum": [r["torch_sum_step"] / r["step"] for r in rounds],
        "decode step vs ORT ReduceSum": [r["ort_sum_step"] / r["step"] for r in rounds],
        "ORT ReduceSum vs torch sum": [r["torch_sum_step"] / r["ort_sum_step"] for r in rounds],
    }
    result = {"build": str(args.build), "context": args.context, "threads": args.threads, "rounds": rounds,
              "weight_bytes": weight_bytes, "kv_bytes": kv_bytes, "gemvs": len(shapes),
              "median_ms": {k: 1000 * float(np.median([r[k] for r in rounds])) for k in figures},
              "shares": {k: {"median": float(np.median(v)), "p25": float(np.percentile(v, 25)), "p75": float(np.percentile(v, 75))}
                         for k, v in shares.items()}}
    print(f"{len(shapes)} weight GEMVs, {weight_bytes / 1e6:.0f} MB; decode step at {args.context} tokens reads "
          f"{step_bytes / 1e6:.0f} MB (KV {kv_bytes / 1e6:.0f} MB); {args.rounds} paired rounds")
    for name, ms in result["median_ms"].items():
        print(f"  {name:18s} {ms:7.2f} ms")
    for name, s in result["shares"].items():
        print(f"  {name:30s} {100 * s['median']:4.0f}%  [{100 * s['p25']:.0f}%, {100 * s['p75']:.0f}%]")
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
