"""`ltexport bench`: decode speed and memory of the hybrid vs no lazy layers vs onnxruntime-genai vs transformers."""

import json
from pathlib import Path

import click

from ltexport.cli import main, trust_remote_code_option
from ltexport.cli.params import Whole
from ltexport.outputs import check_output_dir
from ltexport.models.sources import DEFAULT_MODEL


def _log(message: str) -> None:
    click.echo(message, err=True)


@main.command("bench")
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True)
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), required=True, help="The hybrid's plan.json.")
@click.option("--backend", type=click.Choice(["ort", "torch"]), default="ort", show_default=True,
              help="ort: export both variants to ONNX and time ONNX Runtime; torch: the PyTorch hybrid (CUDA if present).")
@click.option("--contexts", help="Context sweep at batch 1 [default: 1024,2048,4096,8192 where the model allows].")
@click.option("--batches", default="1,4,8", show_default=True, help="Batch sweep.")
@click.option("--batch-context", type=int, help="Context of the batch sweep [default: largest context <= 4096].")
@click.option("--decode-steps", type=int, default=16, show_default=True)
@click.option("--prefill-chunk", type=int, default=1024, show_default=True)
@click.option("--repeats", type=int, default=1, show_default=True, help="Round-robin decode repeats per point (median; prefill runs once).")
@click.option("--no-transformers", is_flag=True, help="Skip transformers' generate.")
@click.option("--no-peers", is_flag=True, help="Skip onnxruntime-genai's models (measured with --backend ort when it is installed).")
@click.option("--threads", type=Whole(min=1), help="Intra-op threads for ONNX Runtime (default: all cores).")
@trust_remote_code_option
@click.option("--json", "as_json", is_flag=True, help="Print bench.json to stdout instead of the tables.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Directory for bench.json/.md/.png.")
def bench_command(model_name, plan_path, backend, contexts, batches, batch_context, decode_steps, prefill_chunk,
                  repeats, no_transformers, no_peers, threads, trust_remote_code, as_json, output):
    """Prefill latency, decode tokens/s, KV-cache bytes and peak RSS over context and batch sweeps."""
    from ltexport.bench.report import format_markdown, write_outputs
    from ltexport.bench.run import MARKER, BenchConfig, bench
    from ltexport.evaluate.select import parse_ints
    from ltexport.staging import staged_dir

    check_output_dir(output, MARKER)
    config = BenchConfig(
        model=model_name, trust_remote_code=trust_remote_code, plan_path=plan_path, backend=backend,
        contexts=parse_ints(contexts, "--contexts") if contexts else None, batches=parse_ints(batches, "--batches"),
        batch_context=batch_context, decode_steps=decode_steps, prefill_chunk=prefill_chunk, repeats=repeats,
        transformers=not no_transformers, peers=not no_peers, threads=threads, log=_log)
    results = bench(config)
    with staged_dir(output, MARKER) as stage:
        write_outputs(results, stage)
    click.echo(json.dumps(results, indent=1) if as_json else format_markdown(results).split("\nHow to read")[0].rstrip())
    _log(f"wrote {output}/bench.json, bench.md, bench.png")
