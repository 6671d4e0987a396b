"""Human-readable plan summary: per-layer table and the KV-cache memory the plan saves."""

from ltexport.plan.schema import Plan


def kv_cache_bytes(plan: Plan, context: int, bytes_per_element: int = 2, hybrid: bool = True) -> int:
    """KV-cache bytes of one sequence at `context` tokens: lazy layers keep min(context, S+W) slots."""
    m = plan.model
    per_token = 2 * m["num_kv_heads"] * m["head_dim"] * bytes_per_element  # key + value
    lazy = len(plan.lazy_layers) if hybrid else 0
    ring = min(context, plan.sink + plan.window)
    return per_token * ((m["num_layers"] - lazy) * context + lazy * ring)


def format_summary(plan: Plan, context: int) -> str:
    m = plan.model
    lines = [
        f"model {m['architecture']}: {m['num_layers']} layers, {m['num_kv_heads']} kv heads x {m['head_dim']}",
        f"sink {plan.sink}, window {plan.window}, prefill {plan.prefill}",
        "",
        "layer  lazy-ratio  attention",
    ]
    for layer in range(plan.num_layers):
        score = f"{plan.scores[layer]:10.4f}" if plan.scores else f"{'-':>10}"
        lines.append(f"{layer:5d}  {score}  {'lazy (sink+window)' if plan.is_lazy(layer) else 'full'}")
    lazy = ", ".join(map(str, plan.lazy_layers)) or "none"
    lines += ["", f"lazy layers: {len(plan.lazy_layers)}/{plan.num_layers} ({lazy})"]
    full, hyb = kv_cache_bytes(plan, context, hybrid=False), kv_cache_bytes(plan, context)
    lines.append(
        f"KV cache per sequence at {context} tokens (fp16): original {_mib(full)}, hybrid {_mib(hyb)} "
        f"({hyb / full:.2f}x)"
    )
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def scores_png(plan: Plan) -> bytes:
    """The per-layer lazy-ratio bar chart as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ltexport.errors import LtexportError

    if not plan.scores:
        raise LtexportError("this plan has no scores (layers were chosen with --layers); nothing to plot")
    colors = ["tab:orange" if plan.is_lazy(i) else "tab:blue" for i in range(plan.num_layers)]
    fig, ax = plt.subplots(figsize=(max(6, plan.num_layers * 0.3), 3.5))
    ax.bar(range(plan.num_layers), plan.scores, color=colors)
    ax.set_xlabel("layer")
    ax.set_ylabel("lazy ratio")
    ax.set_ylim(0, 1)
    ax.set_title(f"{plan.model['architecture']}: lazy ratio (sink {plan.sink}, window {plan.window}); orange = lazy")
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


def figure_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def save_figure(fig, path) -> None:
    """Write a PNG atomically (a failed write leaves no partial file)."""
    from pathlib import Path

    from ltexport.staging import write_bytes_atomic

    write_bytes_atomic(Path(path), figure_png(fig))
