import pytest

from ltexport.export.onnx_export import export_onnx
from ltexport.hybrid.model import HybridModel
from tests.export.conftest import tiny_plan

PROMPT = [5, 17, 99, 3, 42, 7, 250, 12, 64, 8, 31, 77]


@pytest.fixture(scope="session")
def built(tiny_models, tmp_path_factory):
    """(hybrid, model.onnx) of tiny-llama with a 2+6 ring, which wraps within these tests' prompts."""
    source, model = tiny_models["tiny-llama"]
    hybrid = HybridModel(model, tiny_plan(source, window=6)).eval()
    return hybrid, export_onnx(hybrid, tmp_path_factory.mktemp("tiny-llama-ring"))
