"""`ltexport bench`: the bound's arithmetic, point planning, and the JSON a tiny run writes."""

import json
from pathlib import Path

import pytest

from ltexport.bench.bound import step_bytes, weight_bytes_read
from ltexport.bench.run import default_contexts, points, speedups
from ltexport.plan.schema import Plan
from tests.conftest import assert_user_error, run_cli

HEADER = {"architecture": "LlamaForCausalLM", "num_layers": 4, "num_kv_heads": 2, "head_dim": 16}


def test_bound_counts_weights_once_and_every_cached_key_value():
    hybrid = Plan(model=HEADER, sink=2, window=14, lazy_layers=[0, 1])
    no_lazy = Plan(model=HEADER, sink=2, window=14, lazy_layers=[])
    per_token = 2 * 2 * 16 * 4  # key + value, 2 heads x 16 dims, fp32
    assert step_bytes(1000, no_lazy, 100, 3, 4) == 1000 + 3 * 4 * 100 * per_token
    assert step_bytes(1000, hybrid, 100, 3, 4) == 1000 + 3 * (2 * 100 + 2 * 16) * per_token
    assert step_bytes(1000, hybrid, 10, 1, 4) == step_bytes(1000, no_lazy, 10, 1, 4)  # ring not full yet


def test_weight_bytes_skip_an_untied_embedding(tiny_models):
    _, model = tiny_models["tiny-llama"]
    total = sum(p.numel() * 4 for p in model.parameters())
    assert weight_bytes_read(model) == total - 256 * 96 * 4


def test_points_context_sweep_then_batch_sweep():
    got = points([1024, 2048], [1, 4], 2048)
    assert [(p["context"], p["batch"], p["prefill"]) for p in got] == [
        (1024, 1, True), (2048, 1, True), (2048, 4, False)]


def test_default_contexts_reach_the_model_limit():
    assert default_contexts(None) == [1024, 2048, 4096, 8192]
    assert default_contexts(8174) == [1024, 2048, 4096, 8174]   # SmolLM2: 8192 positions - 18 decode tokens
    assert default_contexts(1006) == [1006]                      # tiny models


def test_speedups_pair_variants_by_point():
    def row(variant, tps, bound):
        return {"variant": variant, "context": 8192, "batch": 1, "decode_tokens_per_s": tps,
                "bound_bytes_per_step": bound, "kv_cache_bytes": bound - 100}
    sp = speedups([row("hybrid", 30.0, 600), row("no-lazy", 20.0, 1100), row("transformers", 10.0, 1100)])
    assert sp == [{"context": 8192, "batch": 1, "vs_no_lazy": 1.5, "vs_transformers": 3.0, "vs_genai_windowed": None,
                   "no_lazy_vs_genai_full": None, "prefill_vs_genai_windowed": None,
                   "bound": pytest.approx(1100 / 600), "kv_ratio": pytest.approx(500 / 1000)}]
    peers = [row("genai-windowed", 20.0, 600), row("genai-full", 25.0, 1100)]
    sp = speedups([row("hybrid", 30.0, 600), row("no-lazy", 20.0, 1100), *peers])[0]
    assert sp["vs_genai_windowed"] == 1.5 and sp["no_lazy_vs_genai_full"] == 0.8


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    assert run_cli(["plan", "--model", "tiny-llama", "--layers", "1,2", "-o", path]).exit_code == 0
    return path


def test_bench_json_on_a_tiny_model(tiny_plan, tmp_path):
    out = tmp_path / "b"
    result = run_cli(["bench", "--model", "tiny-llama", "--plan", tiny_plan, "--backend", "torch", "--contexts", "32,48",
                      "--batches", "1,2", "--decode-steps", "2", "--json", "-o", out])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    written = json.loads((out / "bench.json").read_text())
    assert doc == {k: v for k, v in written.items() if k != "files"}  # + the inventory of what bench wrote
    assert set(written["files"]) == {"bench.md", "bench.png"}
    assert doc["format"] == "ltexport-bench" and doc["version"] == 1 and doc["backend"] == "torch"
    assert set(doc["variants"]) == {"hybrid", "no-lazy", "transformers"}
    assert {(p["variant"], p["context"], p["batch"]) for p in doc["points"]} == {
        (v, c, b) for v in ("hybrid", "no-lazy", "transformers") for c, b in ((32, 1), (48, 1), (48, 2))}
    for p in doc["points"]:
        assert len(p["decode_step_times"]) == 2 and p["decode_tokens_per_s"] > 0 and p["peak_rss_bytes"] > 0 and p["bound_bytes_per_step"] > 0
        assert (p["prefill_s"] is None) == (p["batch"] == 2)
        # each run relates its steps to the bandwidth probed around it; the point takes the median
        assert len(p["runs"]) == 1 and p["runs"][0]["bandwidth_bytes_per_s"] > 0
        assert p["bound_fraction"] == p["runs"][0]["bound_fraction"] == pytest.approx(
            p["bound_bytes_per_step"] / p["runs"][0]["decode_step_s"] / p["runs"][0]["bandwidth_bytes_per_s"])
    machine = doc["machine"]
    assert machine["bandwidth_probes"] == 2 * len(doc["points"])  # before and after every run
    assert machine["bandwidth_min_bytes_per_s"] <= machine["bandwidth_bytes_per_s"] <= machine["bandwidth_max_bytes_per_s"]
    kv = {(p["variant"], p["context"], p["batch"]): p["kv_cache_bytes"] for p in doc["points"]}
    per_token_layer = 2 * 2 * 16 * 4
    assert kv[("no-lazy", 48, 2)] == kv[("transformers", 48, 2)] == 2 * 4 * 48 * per_token_layer
    assert kv[("hybrid", 48, 2)] == 2 * (2 * 48 + 2 * 16) * per_token_layer  # sink 2 + window 14 rings
    assert {(s["context"], s["batch"]) for s in doc["speedups"]} == {(32, 1), (48, 1), (48, 2)}
    assert all(s["vs_no_lazy"] > 0 and s["vs_transformers"] > 0 and s["bound"] > 1 for s in doc["speedups"] if s["context"] == 48)
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG" and "Hybrid decode speedup" in (out / "bench.md").read_text()


def test_a_run_prefills_apart_and_decodes_between_two_probes():
    from ltexport.bench.run import BenchConfig, _run

    events = []

    class Worker:
        def ask(self, args):
            events.append("prefill" if args["prefill"] else f"decode {args['decode_steps']}")
            return {"prefill_s": 1.5 if args["prefill"] else None, "peak_rss_bytes": 7 if args["prefill"] else 5,
                    "decode_step_s": 0.1}

    def probe():
        events.append("probe")
        return 10.0 * events.count("probe")

    config = BenchConfig(model="m", plan_path=Path("p"), decode_steps=3)
    run = _run(config, Worker(), {"context": 8, "batch": 1, "prefill": True}, True, probe)
    assert events == ["prefill", "probe", "decode 3", "probe"]
    assert run["bandwidth_bytes_per_s"] == 15.0 and run["prefill_s"] == 1.5 and run["peak_rss_bytes"] == 7


@pytest.mark.parametrize("args, fragment", [
    (["--contexts", "2000"], "exceeds the model's 1024 positions"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--batches", "0"], "--batches needs positive integers"),
])
def test_bad_bench_arguments(tiny_plan, tmp_path, args, fragment):
    result = run_cli(["bench", "--model", "tiny-llama", "--plan", tiny_plan, *args, "-o", tmp_path / "b"])
    assert_user_error(result, fragment)
    assert not (tmp_path / "b").exists()


def test_bench_needs_lazy_layers(tmp_path):
    plan = tmp_path / "p.json"
    from ltexport.plan.schema import save_plan

    save_plan(Plan(model=HEADER, sink=2, window=14, lazy_layers=[]), plan)
    assert_user_error(run_cli(["bench", "--model", "tiny-llama", "--plan", plan, "-o", tmp_path / "b"]), "has no lazy layers")
