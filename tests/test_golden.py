"""The attention modules against float64 golden vectors of the original CSNLN code."""
import pathlib

import pytest
import torch
import torch.nn.functional as F

from csnln.attention import CrossScaleAttention, NonLocalAttention
from tests.numerics import rel_err

GOLDEN = pathlib.Path(__file__).parent / "data" / "golden"
CASES = [
    ("nonlocal_attention.pt", "nonsquare"),
    ("nonlocal_attention.pt", "odd"),
    ("cross_scale_attention_s2.pt", "nonsquare"),
    ("cross_scale_attention_s2_keyfloor.pt", "key_norm_floor"),
    ("cross_scale_attention_s3_nonsquare.pt", "nonsquare"),
]
# The reference README measured <= 3.2e-14 for an independent float64 implementation.
BOUND = 1e-12


def load_module(data):
    if data["module"] == "NonLocalAttention":
        module = NonLocalAttention(data["config"]["channel"], data["config"]["reduction"], backend="torch")
    else:
        module = CrossScaleAttention(data["config"]["channel"], data["config"]["reduction"],
                                     scale=data["config"]["scale"], softmax_scale=data["config"]["softmax_scale"],
                                     backend="torch")
    module.double().load_state_dict(data["state_dict"], strict=True)
    return module


def run_case(module, case):
    x = case["x"].double().clone().requires_grad_(True)
    out = module(x)
    (out * case["grad_out"].double()).sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("chunk_elements", [None, 1000], ids=["whole", "tiny-chunks"])
@pytest.mark.parametrize("file,case_name", CASES)
def test_module_matches_original(file, case_name, chunk_elements):
    data = torch.load(GOLDEN / file, weights_only=True)
    case = data["cases"][case_name]
    module = load_module(data)
    if chunk_elements is not None:
        module.chunk_elements = chunk_elements
    out, grad_x, grads = run_case(module, case)
    assert out.shape == case["out"].shape
    assert rel_err(out, case["out"]) < BOUND
    assert rel_err(grad_x, case["grad_x"]) < BOUND
    assert set(grads) == set(case["grad_params"])
    for name, expected in case["grad_params"].items():
        assert rel_err(grads[name], expected) < BOUND, name


def test_key_norm_floor_case_really_floors():
    """The floor case must exercise the floor: 17 of 36 key norms sit at float32(1e-4)."""
    data = torch.load(GOLDEN / "cross_scale_attention_s2_keyfloor.pt", weights_only=True)
    case = data["cases"]["key_norm_floor"]
    module = load_module(data)
    with torch.no_grad():
        x = case["x"].double()
        keys = module.conv_match_2(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False))
        norms = F.unfold(keys, 3, padding=1).norm(dim=1).clamp_min(module.escape_NaN.double())
    expected = case["intermediates"]["key_norm_clamped"]
    assert rel_err(norms, expected) < BOUND
    assert int((expected == module.escape_NaN.double()).sum()) == 17
