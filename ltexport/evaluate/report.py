"""eval.json -> Markdown tables and PNG plots a user can read without the code."""

import json
from pathlib import Path

from ltexport.staging import write_text_atomic

DEFINITIONS = """\
How to read this
- passkey: a {digits}-digit number hidden at depth d (0 = start, 1 = end) of filler text that fills
  the context; the model must repeat it (greedy decoding{chat}). One key per cell; accuracy = share of
  cells answered exactly.
- ppl: decode-time perplexity on Python documentation disjoint from the calibration text: the last
  {ppl_tokens} tokens of each context, each scored as if generated (lazy layers see their sink + window
  ring only), teacher-forced. The prompt before them is prefilled as deployed.
- Contexts <= sink + window evict nothing: the hybrid must equal the original there (a control).
- drop: vs the original, over contexts > sink + window only: passkey in accuracy points
  (100 x (acc_original - acc)), ppl in percent (100 x (ppl / ppl_original - 1), worst context).
"""


def format_markdown(results: dict) -> str:
    s = results["settings"]
    contexts = [str(c) for c in s["contexts"]]
    lines = [f"# ltexport eval: {results['model']}", ""]
    head = ["variant", "lazy layers", *[f"passkey {c}" for c in contexts], *[f"ppl {c}" for c in contexts],
            "passkey drop (pts)", "ppl drop (%)"]
    lines += [_row(head), _row(["---"] * len(head))]
    for v in results["variants"]:
        d = v.get("drops") or {}
        lines.append(_row([
            v["name"], _layers(v), *[f"{v['passkey']['by_context'][c]:.0%}" for c in contexts],
            *[f"{v['perplexity'][c]['ppl']:.3f}" for c in contexts],
            _num(d.get("passkey_points"), "+.1f") if d else "ref", _num(d.get("ppl_percent"), "+.2f") if d else "ref",
        ]))
    window = sorted({(v["sink"], v["window"]) for v in results["variants"][1:]})
    lines += ["", f"sink + window: {', '.join(f'{a} + {b} = {a + b}' for a, b in window)} tokens; "
              f"prefill chunk {s['prefill_chunk']}; backends: "
              f"{', '.join(sorted({v['backend'] for v in results['variants']}))}.", ""]
    chat = ", chat template" if s["chat_template"] else ""
    lines.append(DEFINITIONS.format(digits=s["digits"], chat=chat, ppl_tokens=s["ppl_tokens"]))
    lines += _cell_tables(results)
    return "\n".join(lines).rstrip() + "\n"


def _cell_tables(results: dict) -> list[str]:
    s = results["settings"]
    lines = ["## Passkey answers (expected key / answer)", ""]
    head = ["depth", *[str(c) for c in s["contexts"]]]
    for v in results["variants"]:
        lines += [f"**{v['name']}**", "", _row(head), _row(["---"] * len(head))]
        for depth in s["depths"]:
            cells = {c["context"]: c for c in v["passkey"]["cells"] if c["depth"] == depth}
            lines.append(_row([f"{depth:g}", *[_cell(cells.get(c)) for c in s["contexts"]]]))
        lines.append("")
    return lines


def _cell(c) -> str:
    if c is None:
        return "-"
    return f"ok {c['key']}" if c["correct"] else f"FAIL {c['key']} / {c['answer'] or repr(c['output'][:12])}"


def _layers(v: dict) -> str:
    return f"{len(v['lazy_layers'])} ({v['lazy_fraction']:.0%})"


def _num(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def plot_passkey(results: dict, path: Path) -> None:
    plt = _pyplot()
    s = results["settings"]
    variants = results["variants"]
    fig, axes = plt.subplots(1, len(variants), figsize=(2.2 + 1.1 * len(s["contexts"]) * len(variants), 1.6 + 0.5 * len(s["depths"])),
                             squeeze=False)
    for ax, v in zip(axes[0], variants):
        grid = [[_value(v, c, d) for c in s["contexts"]] for d in s["depths"]]
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ax.text(j, i, _annotation(v, s["contexts"][j], s["depths"][i], value), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(s["contexts"])), [_context_label(v, c) for c in s["contexts"]])
        ax.set_yticks(range(len(s["depths"])), [f"{d:g}" for d in s["depths"]])
        ax.set_xlabel("context (tokens)")
        ax.set_title(f"{v['name']}\n{len(v['lazy_layers'])} lazy layers, acc {v['passkey']['accuracy']:.0%}", fontsize=9)
    axes[0][0].set_ylabel("needle depth")
    fig.suptitle(f"{results['model']}: passkey retrieval (green = exact answer)", fontsize=10)
    _save(fig, path, plt)


def _annotation(v: dict, context: int, depth: float, value: float) -> str:
    cells = [c for c in v["passkey"]["cells"] if c["context"] == context and c["depth"] == depth]
    if len(cells) != 1:
        return f"{value:.0%}"
    c = cells[0]
    return f"ok\n{c['key']}" if c["correct"] else f"fail\n{c['key']} -> {c['answer'] or '?'}"


def _context_label(v: dict, context: int) -> str:
    control = v["lazy_layers"] and context <= v["sink"] + v["window"]
    return f"{context}\n(control)" if control else str(context)


def _value(v: dict, context: int, depth: float) -> float:
    hits = [c["correct"] for c in v["passkey"]["cells"] if c["context"] == context and c["depth"] == depth]
    return sum(hits) / len(hits) if hits else float("nan")


def plot_perplexity(results: dict, path: Path) -> None:
    plt = _pyplot()
    s = results["settings"]
    variants = sorted(results["variants"], key=lambda v: v["lazy_fraction"])
    original = results["variants"][0]["perplexity"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in map(str, s["contexts"]):
        xs = [v["lazy_fraction"] for v in variants]
        label = f"context {c} (original ppl {original[c]['ppl']:.2f})"
        left.plot(xs, [100 * (v["perplexity"][c]["ppl"] / original[c]["ppl"] - 1) for v in variants], "o-", label=label)
        right.plot(xs, [100 * v["passkey"]["by_context"][c] for v in variants], "o-", label=f"context {c}")
    left.axhline(0, color="grey", lw=0.8)
    left.set_ylabel(f"decode perplexity vs original (%), last {s['ppl_tokens']} tokens")
    right.set_ylabel("passkey accuracy (%)")
    right.set_ylim(-5, 105)
    for ax in (left, right):
        ax.set_xlabel("lazy fraction (share of layers with sink + window attention)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['model']}: quality vs lazy fraction (fraction 0 = original model)", fontsize=10)
    _save(fig, path, plt)


def write_outputs(results: dict, out: Path, plans=()) -> None:
    from ltexport.plan.schema import save_plan

    write_text_atomic(out / "eval.json", json.dumps(results, indent=1) + "\n")
    write_text_atomic(out / "eval.md", format_markdown(results))
    plot_passkey(results, out / "passkey.png")
    plot_perplexity(results, out / "perplexity.png")
    for plan in plans:
        save_plan(plan, out / f"plan-{plan.calibration['lazy_fraction']:g}.json")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, plt) -> None:
    from ltexport.plan.summary import save_figure

    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def format_auto(auto: dict) -> str:
    """The evidence behind an auto plan (plan.json metadata["auto"])."""
    contexts = list(auto["original"]["ppl"])
    lines = ["", f"auto: max drop {auto['max_drop']:g}; rule: {auto['rule']}", ""]
    head = ["fraction", "lazy layers", "passkey acc", *[f"ppl {c}" for c in contexts], "passkey drop", "ppl drop %", "within"]
    lines += [_row(head), _row(["---"] * len(head))]
    lines.append(_row(["0 (original)", "0", f"{auto['original']['passkey_accuracy']:.0%}",
                       *[f"{auto['original']['ppl'][c]:.3f}" for c in contexts], "ref", "ref", ""]))
    for e in auto["candidates"]:
        mark = "yes" if e["within"] else "no"
        if e["lazy_fraction"] == auto["chosen_fraction"]:
            mark += " (chosen)"
        lines.append(_row([f"{e['lazy_fraction']:g}", str(len(e["lazy_layers"])), f"{e['passkey_accuracy']:.0%}",
                           *[f"{e['ppl'][c]:.3f}" for c in contexts], _num(e["drops"]["passkey_points"], "+.1f"),
                           _num(e["drops"]["ppl_percent"], "+.2f"), mark]))
    return "\n".join(lines)
