"""`ltexport build --max-batch/--max-prompt/--max-context`: the TensorRT engine's ranges, checked on CPU
(choosing them is pure Python; building the engine needs TensorRT)."""

import pytest

from ltexport.build import BuildConfig, engine_profile
from ltexport.errors import LtexportError
from ltexport.models.sources import resolve
from ltexport.plan.schema import Plan


@pytest.fixture(scope="module")
def spec():
    return resolve("tiny-llama").spec()


def config(**ranges):
    return BuildConfig(model="tiny-llama", plan_path=None, out=None, decode_steps=32, **ranges)


def plan_for(spec, sink=4, window=60):
    return Plan(model=spec.plan_header(), sink=sink, window=window, lazy_layers=[1])


def test_default_is_sized_for_validation(spec):
    profile = engine_profile(config(), plan_for(spec), spec)
    assert (profile.max_batch, profile.max_prompt, profile.max_context) == (1, 2048, 4096)


def test_user_ranges_are_used(spec):
    profile = engine_profile(config(max_batch=8, max_prompt=16384, max_context=32768), plan_for(spec), spec)
    assert (profile.max_batch, profile.max_prompt, profile.max_context) == (8, 16384, 32768)


def test_context_follows_a_long_prompt(spec):
    assert engine_profile(config(max_prompt=8192), plan_for(spec), spec).max_context == 8192 + 1024


@pytest.mark.parametrize("ranges, names", [
    ({"max_prompt": 100}, ["--max-prompt 100", "128 tokens", "--max-prompt 128"]),  # 4 + 60 + 64
    ({"max_prompt": 200, "max_context": 150}, ["--max-context 150", "--max-context 160"]),  # 128 + 32 steps
    ({"max_prompt": 3000, "max_context": 2500}, ["--max-context 2500", "--max-prompt 3000"]),
])
def test_ranges_that_cannot_validate_are_refused(spec, ranges, names):
    with pytest.raises(LtexportError) as info:
        engine_profile(config(**ranges), plan_for(spec), spec)
    assert all(name in str(info.value) for name in names) and "\n" not in str(info.value)


def test_generate_refuses_a_context_beyond_the_engine(tmp_path):
    from ltexport.runtime import open_step

    info = {"backend": "trt", "engine": {"max_batch": 1, "max_prompt": 8, "max_context": 16}}
    with pytest.raises(LtexportError) as error:
        with open_step(tmp_path, info, "trt", 20):
            pass
    assert "engine serves 16" in str(error.value) and "--max-context 20" in str(error.value)
