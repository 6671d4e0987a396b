"""onnxruntime-genai peers: its builder on the same weights, full attention and the plan's lazy
layers as sliding windows (no sinks). CI installs onnxruntime-genai (scripts/setup.sh): there a
missing package fails the test; elsewhere it skips."""

import os

import numpy as np
import pytest
import torch

from ltexport.bench import peers
from ltexport.plan.schema import Plan

if not peers.genai_available():
    if os.environ.get("CI"):
        raise RuntimeError(f"onnxruntime-genai is missing in CI; {peers.INSTALL_HINT}")
    pytest.skip(f"onnxruntime-genai is not installed ({peers.INSTALL_HINT})", allow_module_level=True)


@pytest.fixture(scope="module")
def built(tiny_models, tmp_path_factory):
    source, model = tiny_models["tiny-llama"]
    plan = Plan(model=source.spec().plan_header(), sink=2, window=14, lazy_layers=[1, 2])
    return model, plan, peers.build_peers(source, plan, tmp_path_factory.mktemp("genai"), threads=1, log=lambda m: None)


def test_genai_full_is_the_original_model_and_windowed_forgets(built):
    model, plan, dirs = built
    ids = np.random.default_rng(0).integers(3, 250, size=(1, 48))
    with torch.no_grad():
        want = model(torch.tensor(ids)).logits.numpy()
    got = {}
    for name, directory in dirs.items():
        step = peers.GenaiGraphStep(directory)
        caches = step.empty_caches(1)
        first, past, caches = step(ids[:, :40], np.zeros(1, np.int64), caches)
        rest = [step(ids[:, t:t + 1], past + t - 40, caches)[0] for t in range(40, 48)]  # decode on its own buffers
        got[name] = np.concatenate([first, *rest], axis=1)
    np.testing.assert_allclose(got["genai-full"], want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got["genai-windowed"][:, :16], want[:, :16], atol=1e-4, rtol=1e-4)  # within the window
    assert np.abs(got["genai-windowed"][:, 16:] - want[:, 16:]).max() > 1e-2  # beyond it, the lazy layers forget
    assert peers.genai_windows(dirs["genai-windowed"]) == {1: 16, 2: 16} and peers.genai_windows(dirs["genai-full"]) == {}
