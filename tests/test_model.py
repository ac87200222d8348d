"""The CSNLN network: the original state-dict layout, sizes, errors and gradient flow."""
import json
import pathlib

import pytest
import torch

from csnln import CSNLN

REFERENCE = pathlib.Path(__file__).parent / "data" / "reference"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_state_dict_is_the_originals(scale):
    ref = json.loads((REFERENCE / f"csnln_state_dict_x{scale}.json").read_text())
    model = CSNLN(scale=scale)
    layout = [[name, list(t.shape)] for name, t in model.state_dict().items()]
    assert layout == ref["entries"]
    assert sum(p.numel() for p in model.parameters()) == ref["total_parameters"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ref["trainable_parameters"]
    assert sorted(n for n, _ in model.named_buffers()) == sorted(ref["buffers"])
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == sorted(ref["frozen_parameters"])
    assert model.sub_mean.bias.tolist() == pytest.approx(ref["meanshift"]["sub_mean.bias"])
    assert model.add_mean.bias.tolist() == pytest.approx(ref["meanshift"]["add_mean.bias"])


def test_released_layout_loads_strictly_and_depth_only_changes_tail():
    source = CSNLN(scale=2, depth=12).state_dict()
    model = CSNLN(scale=2, depth=12)
    model.load_state_dict(source, strict=True)
    shallow = CSNLN(scale=2, depth=3).state_dict()
    assert shallow.keys() == source.keys()
    differing = [k for k in source if source[k].shape != shallow[k].shape]
    assert differing == ["tail.0.weight"]


@pytest.mark.parametrize("scale,size", [(2, (6, 10)), (3, (9, 6)), (4, (4, 6))])
def test_output_shape_and_gradient_flow(scale, size):
    torch.manual_seed(0)
    model = CSNLN(scale=scale, n_feats=8, depth=2, attention_backend="torch").double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    y = model(x)
    assert y.shape == (2, 3, size[0] * scale, size[1] * scale)
    y.square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            if p.dim() > 1:  # a PReLU slope's gradient is legitimately 0 when its input is all positive
                assert p.grad.abs().sum() > 0, name


def test_n_feats_is_honoured_by_the_attentions():
    model = CSNLN(scale=2, n_feats=24, depth=1)
    attention = model.SEM.multi_source_projection.up_attention
    assert attention.conv_match_1[0].weight.shape == (12, 24, 1, 1)
    assert attention.conv_assembly[0].weight.shape == (24, 24, 1, 1)
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 8, 8)


@pytest.mark.parametrize("scale,size,multiple", [(2, (5, 6), 2), (4, (6, 7), 2), (3, (8, 9), 3)])
def test_sizes_not_divisible_by_the_attention_scale_are_rejected(scale, size, multiple):
    model = CSNLN(scale=scale, n_feats=8, depth=1)
    with pytest.raises(ValueError, match=f"divisible by {multiple}.*{size[0]}, {size[1]}"):
        model(torch.rand(1, 3, *size))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="scale 2, 3 or 4"):
        CSNLN(scale=8)
    with pytest.raises(ValueError, match="even n_feats"):
        CSNLN(n_feats=7)


def test_checkpointed_recurrence_gives_identical_gradients():
    torch.manual_seed(1)
    plain = CSNLN(scale=2, n_feats=8, depth=3).double()
    checkpointed = CSNLN(scale=2, n_feats=8, depth=3, checkpoint_sem=True).double()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 6, 8, dtype=torch.float64)
    for model in (plain, checkpointed):
        model(x).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-13, msg=name)


def test_configure_attention_reaches_every_attention():
    model = CSNLN(scale=4, n_feats=8, depth=1)
    model.configure_attention(backend="torch", chunk_elements=123)
    attentions = [m for m in model.modules() if hasattr(m, "chunk_elements")]
    assert len(attentions) == 4
    assert all(m.backend == "torch" and m.chunk_elements == 123 for m in attentions)
