"""Sink+window kernel benchmark (needs a CUDA GPU and nvcc).

Decode: achieved bandwidth of the decode kernel (GB/s of ring-cache bytes read: K and V, all S+W slots valid)
next to the device-to-device copy bandwidth measured on the same GPU (torch copy of a large buffer, counted as
read + write bytes, i.e. what DRAM can sustain). The decode call is timed through a CUDA graph so launch
overhead from Python/ctypes is not counted; it includes the ring update (in place, as with TensorRT's aliased I/O)
and, when the ring is split across blocks, the combine kernel.

Prefill: the prefill kernel against torch.nn.functional.scaled_dot_product_attention on the same masked problem
(empty cache, T new tokens): dense = causal (SDPA is_causal, flash/efficient backends), streaming = causal +
sink/window mask (SDPA with a boolean mask). Both outputs are compared as a sanity check.

    python benchmarks/kernel_bench.py [--json kernel_bench.json]
    python benchmarks/kernel_bench.py --emulate   # tiny shapes on the CPU emulation: checks the script, not speed
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ltexport.backends.trt.kernels import load_kernels  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=DTYPES, default="fp16")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--sink", type=int, default=4)
    p.add_argument("--window", type=int, default=1020, help="S+W = 1024 by default")
    p.add_argument("--batches", default="1,16,64", help="decode batch sizes")
    p.add_argument("--prefill-lens", default="512,2048", help="prompt lengths for the prefill comparison")
    p.add_argument("--prefill-batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--copy-mib", type=int, default=1024, help="buffer size for the copy-bandwidth reference")
    p.add_argument("--json", type=Path, default=Path("kernel_bench.json"))
    p.add_argument("--emulate", action="store_true", help="tiny shapes on the CPU emulation (no timing meaning)")
    args = p.parse_args(argv)
    if args.emulate:
        args.q_heads, args.kv_heads, args.head_dim, args.sink, args.window = 4, 2, 16, 2, 30
        args.batches, args.prefill_lens, args.iters, args.copy_mib = "1,2", "40", 1, 1
    return args


class Timer:
    """Milliseconds per call: CUDA events (optionally replaying a CUDA graph) or, on CPU, wall time."""

    def __init__(self, device: str, iters: int):
        self.device, self.iters = device, iters

    def __call__(self, fn, graph: bool = False) -> float:
        if self.device == "cpu":
            fn()
            start = time.perf_counter()
            for _ in range(self.iters):
                fn()
            return (time.perf_counter() - start) * 1e3 / self.iters
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        run = fn
        if graph:
            g = torch.cuda.CUDAGraph()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()  # warm up on the capture stream
                torch.cuda.synchronize()
                with torch.cuda.graph(g, stream=stream):
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            run = g.replay
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        run()
        start.record()
        for _ in range(self.iters):
            run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / self.iters


def copy_bandwidth(timer: Timer, device: str, mib: int) -> float:
    """GB/s of a device-to-device copy, read + write bytes."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def bench_decode(kernels, timer: Timer, args, device: str, batch: int) -> dict:
    dtype, ring = DTYPES[args.dtype], args.sink + args.window
    q = torch.randn(batch, args.q_heads, 1, args.head_dim, dtype=dtype, device=device)
    k = torch.randn(batch, args.kv_heads, 1, args.head_dim, dtype=dtype, device=device)
    v = torch.randn_like(k)
    pk = torch.randn(batch, args.kv_heads, ring, args.head_dim, dtype=dtype, device=device)
    pv = torch.randn_like(pk)
    past_len = torch.full((batch,), 3 * ring, dtype=torch.int64, device=device)  # wrapped: every slot valid
    scale = args.head_dim ** -0.5

    def call():
        kernels.attention(q, k, v, pk, pv, past_len, sink=args.sink, window=args.window, scale=scale,
                          prefill="streaming", in_place=True)

    ms = timer(call, graph=device != "cpu")
    cache_bytes = 2 * batch * args.kv_heads * ring * args.head_dim * q.element_size()
    return {"batch": batch, "ms": ms, "cache_bytes": cache_bytes, "gb_per_s": cache_bytes / (ms * 1e-3) / 1e9,
            "workspace_bytes": kernels.workspace_size(str(dtype).removeprefix("torch."), batch, args.q_heads,
                                                      args.kv_heads, args.sink, args.window, args.head_dim)}


def streaming_mask(t: int, sink: int, window: int, device: str) -> torch.Tensor:
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    return (j <= i) & ((j < sink) | (j > i - window))


def bench_prefill(kernels, timer: Timer, args, device: str, seq: int, mode: str) -> dict:
    dtype, ring, b = DTYPES[args.dtype], args.sink + args.window, args.prefill_batch
    q = torch.randn(b, args.q_heads, seq, args.head_dim, dtype=dtype, device=device)
    k = torch.randn(b, args.kv_heads, seq, args.head_dim, dtype=dtype, device=device)
    v = torch.randn_like(k)
    pk = torch.zeros(b, args.kv_heads, ring, args.head_dim, dtype=dtype, device=device)
    pv = torch.zeros_like(pk)
    past_len = torch.zeros(b, dtype=torch.int64, device=device)
    scale = args.head_dim ** -0.5
    mask = None if mode == "dense" else streaming_mask(seq, args.sink, args.window, device)

    def ours():
        return kernels.attention(q, k, v, pk, pv, past_len, sink=args.sink, window=args.window, scale=scale,
                                 prefill=mode).output

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale,
                                              enable_gqa=True)

    diff = (ours().float() - sdpa().float()).abs().max().item()
    ms_ours, ms_sdpa = timer(ours), timer(sdpa)
    return {"seq": seq, "batch": b, "mode": mode, "ms": ms_ours, "sdpa_ms": ms_sdpa, "sdpa_over_ours": ms_sdpa / ms_ours,
            "max_abs_diff_vs_sdpa": diff}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = "cpu" if args.emulate else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("kernel_bench: no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
                 "run it on a machine with an NVIDIA GPU and nvcc, or use --emulate to check the script")
    kernels = load_kernels(device)
    timer = Timer(device, args.iters)
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu emulation (timings meaningless)",
        "torch": torch.__version__, "cuda": torch.version.cuda, "library": str(kernels.library),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "copy_gb_per_s": copy_bandwidth(timer, device, args.copy_mib),
    }
    result["decode"] = [bench_decode(kernels, timer, args, device, int(b)) for b in args.batches.split(",")]
    for row in result["decode"]:
        row["fraction_of_copy"] = row["gb_per_s"] / result["copy_gb_per_s"]
    result["prefill"] = [bench_prefill(kernels, timer, args, device, int(t), mode)
                         for t in args.prefill_lens.split(",") for mode in ("dense", "streaming")]

    print(f"{result['device']}  {args.dtype}  Hq={args.q_heads} Hkv={args.kv_heads} D={args.head_dim} "
          f"S+W={args.sink + args.window}")
    print(f"device-to-device copy: {result['copy_gb_per_s']:.0f} GB/s (read + write)")
    print(f"\n{'decode batch':>12} {'time us':>10} {'cache MB':>9} {'GB/s':>8} {'of copy':>8}")
    for r in result["decode"]:
        print(f"{r['batch']:>12} {r['ms'] * 1e3:>10.1f} {r['cache_bytes'] / 1e6:>9.1f} {r['gb_per_s']:>8.0f} "
              f"{r['fraction_of_copy']:>8.0%}")
    print(f"\n{'prefill T':>10} {'mode':>10} {'ours ms':>9} {'SDPA ms':>9} {'SDPA/ours':>10} {'max|diff|':>10}")
    for r in result["prefill"]:
        print(f"{r['seq']:>10} {r['mode']:>10} {r['ms']:>9.3f} {r['sdpa_ms']:>9.3f} {r['sdpa_over_ours']:>10.2f} "
              f"{r['max_abs_diff_vs_sdpa']:>10.2e}")
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
