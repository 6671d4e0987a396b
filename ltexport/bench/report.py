"""bench.json -> Markdown tables and one PNG with the sweeps."""

import json
from pathlib import Path

from ltexport.staging import write_text_atomic

NOTES = """\
How to read this
- All variants were measured in this one run, round-robin per point, each in its own process
  (peak RSS is that process's: weights + caches + activations; 'per point' when the OS allows
  resetting the peak, otherwise cumulative). The machine may be shared: compare ratios, not absolutes.
- load: the highest 1-minute load average seen at the end of the point's runs; with more runnable
  threads than cores (here {cpus}) timings of that point are unreliable, OpenMP ones (transformers)
  most of all.
- decode tok/s: batch x {steps} greedy steps / their time, from caches of `context` tokens (filled
  with zeros: a step's cost does not depend on cache values), after one untimed warm-up step.
- prefill s: one sequence of `context` random tokens, batch 1; hybrid/no-lazy in chunks of {chunk}
  through the step, transformers in one `generate` call (its own prefill + first token).
- bound: bytes one decode step must read (weights + every cached key/value it attends, fp32); its
  speedup is bytes(no-lazy) / bytes(hybrid), what a purely memory-bound engine would gain. "% of
  bound": those bytes / step time / the read bandwidth measured right before and after that run
  (each probe the median of 3 torch sums over 1 GiB, same threads), median over the point's runs.
  The host's bandwidth swings within seconds (see the range above), hence a probe per run.
- hybrid and no-lazy run ltexport's fast ONNX Runtime graph (model.ort.onnx: IOBinding, caches
  updated in place); genai-full and genai-windowed are onnxruntime-genai's own builder's models
  (full attention; the plan's lazy layers as sliding windows of sink + window, no sinks) under its
  own runtime, batch 1 only, prefill = its one append_tokens call.
"""

VARIANTS = ("hybrid", "no-lazy", "genai-full", "genai-windowed", "transformers")


def format_markdown(r: dict) -> str:
    p, s = r["plan"], r["settings"]
    lines = [f"# ltexport bench: {r['model']} ({r['backend']}, {s['dtype']})", "",
             f"hybrid: {len(p['lazy_layers'])}/{p['num_layers']} lazy layers, sink {p['sink']} + window {p['window']}; "
             f"machine: {r['machine']['cpu_count']} CPUs, {r['machine']['cuda'] or 'no GPU'}, load average at start "
             f"{_load(r['machine'].get('load_average_at_start'))}, read bandwidth {_gbs(r['machine'])}", ""]
    rows = {(x["variant"], x["context"], x["batch"]): x for x in r["points"]}
    lines += _batch_one_table(r, rows) + ["## Hybrid decode speedup", ""]
    head = ["context", "batch", "hybrid tok/s", "no-lazy tok/s", "transformers tok/s", "vs no-lazy", "vs transformers",
            "vs genai-windowed", "no-lazy vs genai-full", "bound predicts", "KV hybrid", "KV no-lazy"]
    lines += [_row(head), _row(["---"] * len(head))]
    for sp in r["speedups"]:
        key = (sp["context"], sp["batch"])
        h, n, t = (rows.get((v, *key)) for v in ("hybrid", "no-lazy", "transformers"))
        lines.append(_row([str(key[0]), str(key[1]), _tps(h), _tps(n), _tps(t), _x(sp["vs_no_lazy"]),
                           _x(sp["vs_transformers"]), _x(sp.get("vs_genai_windowed")), _x(sp.get("no_lazy_vs_genai_full")),
                           _x(sp["bound"]), _mib(h["kv_cache_bytes"]),
                           _mib(n["kv_cache_bytes"]) if n else "-"]))
    lines += ["", "## Every point", ""]
    head = ["variant", "context", "batch", "prefill s", "decode tok/s", "KV cache", "peak RSS", "bound MiB/step",
            "bandwidth GB/s", "% of bound", "load"]
    lines += [_row(head), _row(["---"] * len(head))]
    for x in r["points"]:
        lines.append(_row([x["variant"], str(x["context"]), str(x["batch"]),
                           "-" if x["prefill_s"] is None else f"{x['prefill_s']:.2f}", _tps(x),
                           _mib(x["kv_cache_bytes"]), _mib(x["peak_rss_bytes"]), _mib(x["bound_bytes_per_step"]),
                           _gbs(x), _pct(x.get("bound_fraction")), _load([x.get("load_average_1min")])]))
    if r.get("export"):
        lines += ["", "## Export (ONNX)", "", _row(["variant", "export s", "export peak RSS", "load s"]), _row(["---"] * 4)]
        for name in ("hybrid", "no-lazy"):
            v = r["variants"][name]
            if "export_s" in v:
                lines.append(_row([name, f"{v['export_s']:.1f}", _mib(v["peak_rss_bytes"]), f"{v['load_s']:.1f}"]))
    lines += ["", NOTES.format(steps=r["settings"]["decode_steps"], chunk=r["settings"]["prefill_chunk"],
                               cpus=r["machine"]["cpu_count"])]
    return "\n".join(lines).rstrip() + "\n"


def _batch_one_table(r: dict, rows: dict) -> list[str]:
    """The variants side by side at batch 1: decode tok/s per context, then prefill and the share of
    the bytes bound at the longest context, and the ratios between them."""
    contexts = r["settings"]["contexts"]
    names = [n for n in VARIANTS if any((n, c, 1) in rows for c in contexts)]
    top = max(contexts)
    head = ["variant"] + [f"tok/s @{c}" for c in contexts] + [f"prefill s @{top}", f"% of bound @{top}"]
    lines = ["## Decode at batch 1", "", _row(head), _row(["---"] * len(head))]
    for n in names:
        last = rows.get((n, top, 1))
        lines.append(_row([n] + [_tps(rows.get((n, c, 1))) for c in contexts]
                          + ["-" if not last or last["prefill_s"] is None else f"{last['prefill_s']:.2f}",
                             _pct(last.get("bound_fraction") if last else None)]))
    ratios = []
    for sp in r["speedups"]:
        if sp["batch"] == 1 and sp["context"] == top:
            ratios += [f"hybrid / genai-windowed {_x(sp.get('vs_genai_windowed'))}",
                       f"no-lazy / genai-full {_x(sp.get('no_lazy_vs_genai_full'))}",
                       f"prefill genai-windowed / hybrid {_x(sp.get('prefill_vs_genai_windowed'))}"]
        elif sp["batch"] > 1:
            ratios.append(f"hybrid / transformers at batch {sp['batch']}, context {sp['context']}: {_x(sp['vs_transformers'])}")
    return lines + ["", f"At {top} tokens: " + "; ".join(ratios[:3]) + ("." if ratios else "")] \
        + ([f"- {x}" for x in ratios[3:]] if len(ratios) > 3 else []) + [""]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _gbs(record: dict) -> str:
    """A point's (or the run's median) bandwidth, with the run's range when it has one."""
    value = record.get("bandwidth_bytes_per_s")
    if not value:
        return "n/a"
    low, high = record.get("bandwidth_min_bytes_per_s"), record.get("bandwidth_max_bytes_per_s")
    spread = f" (median of {record['bandwidth_probes']} probes, {low / 1e9:.1f} to {high / 1e9:.1f})" if low and high else ""
    return f"{value / 1e9:.1f}{' GB/s' if spread else ''}{spread}"


def _load(value) -> str:
    return "n/a" if not value or value[0] is None else f"{value[0]:.1f}"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _tps(x) -> str:
    return "-" if x is None else f"{x['decode_tokens_per_s']:.1f}"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _mib(n) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ltexport.plan.summary import save_figure

    s = r["settings"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    names = [n for n in VARIANTS if any(x["variant"] == n for x in r["points"])]
    ctx = {n: sorted((x for x in r["points"] if x["variant"] == n and x["batch"] == 1), key=lambda x: x["context"]) for n in names}
    bat = {n: sorted((x for x in r["points"] if x["variant"] == n and x["context"] == s["batch_context"]), key=lambda x: x["batch"])
           for n in names}
    for n in names:
        xs = [x["context"] for x in ctx[n]]
        axes[0][0].plot(xs, [x["decode_tokens_per_s"] for x in ctx[n]], "o-", label=n)
        axes[0][1].plot([x["batch"] for x in bat[n]], [x["decode_tokens_per_s"] for x in bat[n]], "o-", label=n)
        axes[1][0].plot(xs, [x["prefill_s"] for x in ctx[n]], "o-", label=n)
        axes[1][1].plot(xs, [x["kv_cache_bytes"] / 2**20 for x in ctx[n]], "o-", label=n)
        axes[1][2].plot(xs, [x["peak_rss_bytes"] / 2**20 for x in ctx[n]], "o-", label=n)
    sp = sorted((x for x in r["speedups"] if x["batch"] == 1), key=lambda x: x["context"])
    for key, label in (("vs_no_lazy", "measured vs no-lazy"), ("vs_transformers", "measured vs transformers"),
                       ("bound", "bound (bytes read)")):
        if any(x[key] is not None for x in sp):
            axes[0][2].plot([x["context"] for x in sp], [x[key] for x in sp], "o--" if key == "bound" else "o-", label=label)
    axes[0][2].axhline(1, color="grey", lw=0.8)
    titles = [("decode tokens/s, batch 1", "context (tokens)"), (f"decode tokens/s at context {s['batch_context']}", "batch"),
              ("hybrid decode speedup, batch 1", "context (tokens)"), ("prefill latency (s), batch 1", "context (tokens)"),
              ("KV cache (MiB), batch 1", "context (tokens)"), ("peak RSS (MiB), batch 1", "context (tokens)")]
    for ax, (title, xlabel) in zip([a for row in axes for a in row], titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    p = r["plan"]
    fig.suptitle(f"{r['model']} on {r['backend']} (fp32): hybrid = {len(p['lazy_layers'])}/{p['num_layers']} lazy layers, "
                 f"sink {p['sink']} + window {p['window']}", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_outputs(results: dict, out: Path) -> None:
    write_text_atomic(out / "bench.json", json.dumps(results, indent=1) + "\n")
    write_text_atomic(out / "bench.md", format_markdown(results))
    plot(results, out / "bench.png")
