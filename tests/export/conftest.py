"""Tiny models exported once per session, shared by the export tests."""

import pytest

from ltexport.export.onnx_export import export_onnx
from ltexport.hybrid.model import HybridModel
from ltexport.plan.schema import Plan


def tiny_plan(source, lazy=(1, 3), window=14, prefill="dense"):
    return Plan(model=source.spec().plan_header(), sink=2, window=window, lazy_layers=list(lazy), prefill=prefill)


@pytest.fixture(scope="session")
def exported(tiny_models, tmp_path_factory):
    """name -> (hybrid, model.onnx path), each tiny model exported once (tiny-qwen2 streaming)."""
    built = {}
    for name, (source, model) in tiny_models.items():
        prefill = "streaming" if name == "tiny-qwen2" else "dense"
        hybrid = HybridModel(model, tiny_plan(source, prefill=prefill)).eval()
        out = tmp_path_factory.mktemp(name)
        built[name] = (hybrid, export_onnx(hybrid, out))
    return built
