"""ONNX Runtime decode benchmark (issue 3): SmolLM2 at 2K and 8K context, hybrid (50% lazy) vs the
same model exported with no lazy layers, in one run. A thin wrapper over `ltexport bench`.

    python benchmarks/ort_decode.py [-o bench-ort-decode] [--plan plan.json] [--model smollm2]
        [--contexts 2048,8192] [--repeats 3] [--transformers]

Without --plan it makes one with `ltexport plan --lazy-fraction 0.5` (calibration on the shipped
text). Prints decode tokens/s, KV-cache bytes, export time and peak RSS per variant; the full
bench.json/.md/.png land in -o. Run it on an otherwise idle machine: figures are wall-clock.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltexport.bench.report import _mib, write_outputs  # noqa: E402
from ltexport.bench.run import MARKER, BenchConfig, bench  # noqa: E402
from ltexport.staging import staged_dir  # noqa: E402


def make_plan(model: str, path: Path) -> Path:
    from ltexport.models.sources import resolve
    from ltexport.plan.identify import PlanConfig, make_plan as make
    from ltexport.plan.schema import save_plan

    source = resolve(model)
    d = source.defaults
    config = PlanConfig(sink=d["sink"], window=d["window"], lazy_fraction=0.5, calib_tokens=d["calib_tokens"])
    save_plan(make(source, config, progress=lambda m: print(m, file=sys.stderr)), path)
    return path


def fit_contexts(model: str, text: str, decode_steps: int) -> list[int]:
    from ltexport.models.sources import resolve

    limit = resolve(model).spec().max_positions - decode_steps - 2
    return sorted({min(int(c), limit) for c in text.split(",")})


def summary(r: dict) -> str:
    rows = ["| variant | context | decode tok/s | KV cache | export s | export peak RSS | run peak RSS (prefill + decode) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in r["points"]:
        v = r["variants"][p["variant"]]
        export = (f"{v['export_s']:.1f}", _mib(v["peak_rss_bytes"])) if "export_s" in v else ("-", "-")
        rows.append(f"| {p['variant']} | {p['context']} | {p['decode_tokens_per_s']:.1f} | {_mib(p['kv_cache_bytes'])} | "
                    f"{export[0]} | {export[1]} | {_mib(p['peak_rss_bytes'])} |")
    rows += ["", "| context | hybrid / no-lazy decode speed | KV hybrid / no-lazy | bound predicts |", "| --- | --- | --- | --- |"]
    rows += [f"| {s['context']} | {s['vs_no_lazy']:.2f}x | {s['kv_ratio']:.2f} | {s['bound']:.2f}x |" for s in r["speedups"]]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--plan", type=Path)
    parser.add_argument("--contexts", default="2048,8192", help="Contexts beyond the model's positions are "
                        "clipped to the longest that fits (8192 -> 8174 on SmolLM2).")
    parser.add_argument("--decode-steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transformers", action="store_true", help="Also time transformers' generate.")
    parser.add_argument("-o", "--output", type=Path, default=Path("bench-ort-decode"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plan = args.plan or make_plan(args.model, Path(tmp) / "plan.json")
        config = BenchConfig(model=args.model, plan_path=plan, backend="ort",
                             contexts=fit_contexts(args.model, args.contexts, args.decode_steps), batches=[1],
                             decode_steps=args.decode_steps, repeats=args.repeats, transformers=args.transformers,
                             log=lambda m: print(m, file=sys.stderr))
        results = bench(config)
    with staged_dir(args.output, MARKER) as stage:
        write_outputs(results, stage)
    print(summary(results))
    print(f"\nwrote {args.output}/bench.json, bench.md, bench.png", file=sys.stderr)


if __name__ == "__main__":
    main()
