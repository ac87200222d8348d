"""The network's hot path against the plain computation, in float64: the fused 1x1 embeddings,
the skipped last LR state and channels-last memory format change no output and no gradient."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

import kernels
from csnln import CSNLN
from csnln.attention import CrossScaleAttention, NonLocalAttention

BOUND = 1e-12
FP32_BOUND = 1e-5  # fp32 Triton kernels against float64: measured 2.4e-7 to 2.9e-7 over three seeds (relative 2-norm)


def plain_in_scale(attention, x):
    """NonLocalAttention as the original: each 1x1 conv + PReLU branch run on its own."""
    return kernels.in_scale_attention(attention.conv_match1(x), attention.conv_match2(x),
                                      attention.conv_assembly(x), backend="torch")


def plain_cross_scale(attention, x):
    reference = F.interpolate(x, scale_factor=1.0 / attention.scale, mode="bilinear", align_corners=False)
    return kernels.cross_scale_attention(attention.conv_match_1(x), attention.conv_match_2(reference),
                                         attention.conv_assembly(x), attention.scale,
                                         softmax_scale=attention.softmax_scale, backend="torch")


def plain_projection(projection, x):
    down_map = projection.upsample(plain_in_scale(projection.down_attention, x))
    up_map = plain_cross_scale(projection.up_attention, x)
    return down_map + projection.encoder(up_map - down_map)


def plain_cell(cell, x):
    """The original cell: always returns (next LR state, HR estimate)."""
    x_up = plain_projection(cell.multi_source_projection, x)
    h_estimate = x_up + cell.error_encode(x - cell.down_sample_1(x_up))
    if cell.scale == 4:
        x_up_2 = plain_projection(cell.multi_source_projection_2, h_estimate)
        h_estimate = x_up_2 + cell.error_encode_2(x - cell.down_sample_3(x_up_2))
        return cell.post_conv(cell.down_sample_4(h_estimate)), h_estimate
    return cell.post_conv(cell.down_sample_2(h_estimate)), h_estimate


def plain_csnln(model, x):
    x = model.head(model.sub_mean(x))
    estimates = []
    for _ in range(model.depth):
        x, h_estimate = plain_cell(model.SEM, x)
        estimates.append(h_estimate)
    return model.add_mean(model.tail(torch.cat(estimates, dim=1)))


def close(a, b, bound, floor=0.0):
    """|a - b| <= bound max(|b|, floor) in the 2-norm, a compared in float64 on the CPU."""
    return (a.double().cpu() - b).norm().item() <= bound * max(b.norm().item(), floor)


def output_and_grads(forward, module, x):
    """forward(x) with a fixed random output gradient -> (output, input grad, {name: param grad})."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = forward(x)
    weights = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)).to(out)
    (out * weights).sum().backward()
    return out.detach(), x.grad, {name: p.grad for name, p in module.named_parameters()}


def assert_same(result, expected, bound=BOUND):
    """result of output_and_grads equals the float64 expected one within `bound`."""
    (out, grad_x, grads), (out_ref, grad_x_ref, grads_ref) = result, expected
    assert out.shape == out_ref.shape
    assert close(out, out_ref, bound)
    assert close(grad_x, grad_x_ref, bound)
    assert grads.keys() == grads_ref.keys()
    # some gradients are 0 up to rounding (a key bias shifts a softmax row): measured against all
    floor = torch.cat([g.flatten() for g in grads_ref.values() if g is not None]).norm().item()
    for name, grad in grads.items():
        if grads_ref[name] is None:
            assert grad is None, f"{name} gets a gradient the plain network does not give it"
        else:
            assert grad is not None and close(grad, grads_ref[name], bound, floor), name


def network(scale, depth, seed=0):
    torch.manual_seed(seed)
    model = CSNLN(scale=scale, n_feats=8, depth=depth, attention_backend="torch").double()
    for p in model.parameters():  # PReLU slopes away from 0.25 and from each other: a swapped slice shows
        if p.numel() == 1:
            p.data.uniform_(-0.5, 0.5)
    return model


SIZES = {2: (8, 6), 3: (9, 6), 4: (4, 6)}


@pytest.mark.parametrize("module_class", [NonLocalAttention, CrossScaleAttention])
def test_attention_module_alone_equals_plain_branches(module_class):
    torch.manual_seed(0)
    module = module_class(12, backend="torch").double()
    for p in module.parameters():
        if p.numel() == 1:
            p.data.uniform_(-0.5, 0.5)
    plain = plain_in_scale if module_class is NonLocalAttention else plain_cross_scale
    x = torch.randn(2, 12, 6, 8, dtype=torch.float64)
    assert_same(output_and_grads(module, module, x), output_and_grads(lambda t: plain(module, t), module, x))


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_network_equals_plain_network(scale, depth):
    model = network(scale, depth)
    x = torch.rand(2, 3, *SIZES[scale], dtype=torch.float64)
    assert_same(output_and_grads(model, model, x), output_and_grads(lambda t: plain_csnln(model, t), model, x))


def with_hooks(modules, hook, run):
    """run() with hook(index, output) as a forward hook on each of `modules` (real hooks)."""
    handles = [m.register_forward_hook(lambda module, inputs, output, i=i: hook(i, output))
               for i, m in enumerate(modules)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()


def calls(modules, run):
    """Forward calls of each of `modules` while run() executes."""
    counts = [0] * len(modules)
    with_hooks(modules, lambda i, output: counts.__setitem__(i, counts[i] + 1), run)
    return counts


@pytest.mark.parametrize("scale", [2, 4])
def test_embeddings_run_as_one_convolution(scale):
    model = network(scale, depth=2)
    projections = [m for m in model.modules() if hasattr(m, "down_attention")]
    branches = [b for p in projections for b in p.down_attention.embeddings + p.up_attention.embeddings]
    assert len(branches) == 5 * len(projections)
    convs = calls([b[0] for b in branches], lambda: model(torch.rand(1, 3, 4, 4, dtype=torch.float64)))
    preluses = calls([b[1] for b in branches], lambda: model(torch.rand(1, 3, 4, 4, dtype=torch.float64)))
    assert convs == [0] * len(branches)        # the branch convs run only inside the fused conv
    assert preluses == [2] * len(branches)     # each PReLU once per recurrence


@pytest.mark.parametrize("scale,depth", [(2, 1), (2, 3), (4, 2)])
def test_last_recurrence_computes_no_lr_state(scale, depth):
    model = network(scale, depth)
    cell = model.SEM
    state_modules = [cell.down_sample_4 if scale == 4 else cell.down_sample_2, cell.post_conv]
    counts = calls(state_modules + [cell.error_encode],
                   lambda: model(torch.rand(1, 3, *SIZES[scale], dtype=torch.float64)))
    assert counts == [depth - 1, depth - 1, depth]


def test_checkpointed_network_equals_plain_network():
    model = network(2, depth=2)
    model.checkpoint_sem = True
    x = torch.rand(1, 3, *SIZES[2], dtype=torch.float64)
    assert_same(output_and_grads(model, model, x), output_and_grads(lambda t: plain_csnln(model, t), model, x))


def to_channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


def outputs_not_channels_last(model, run):
    """Names of the modules whose output tensors are not channels-last while run() executes.
    The attention modules are left out (their output layout is the operator's choice); their
    embeddings, the operators' inputs, are not."""
    named = [(name, m) for name, m in model.named_modules()
             if not isinstance(m, (NonLocalAttention, CrossScaleAttention))]
    found = []

    def check(i, output):
        tensors = output if isinstance(output, tuple) else (output,)
        if any(t is not None and not t.is_contiguous(memory_format=torch.channels_last) for t in tensors):
            found.append(named[i][0])

    with_hooks([m for _, m in named], check, run)
    return found


def record_operator_inputs(monkeypatch):
    """Wrap both kernels operators so that each call appends (name, q, k, v) to the returned list
    and then runs the real operator."""
    seen = []
    for name in ("in_scale_attention", "cross_scale_attention"):
        def operator(q, k, v, *args, _name=name, _real=getattr(kernels, name), **kwargs):
            seen.append((_name, q, k, v))
            return _real(q, k, v, *args, **kwargs)
        monkeypatch.setattr(kernels, name, operator)
    return seen


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_channels_last_network_equals_contiguous(scale, monkeypatch):
    model = network(scale, depth=2)
    x = torch.rand(2, 3, *SIZES[scale], dtype=torch.float64)
    expected = output_and_grads(model, model, x)
    model.to(memory_format=torch.channels_last)
    x = to_channels_last(x)
    operator_inputs = record_operator_inputs(monkeypatch)
    assert outputs_not_channels_last(model, lambda: model(x)) == []
    assert len(operator_inputs) == 2 * 2 * (2 if scale == 4 else 1)
    for name, *tensors in operator_inputs:  # the embeddings reach the operators without a copy
        assert all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors), name
    result = output_and_grads(model, model, x)
    assert result[0].is_contiguous(memory_format=torch.channels_last)
    assert result[1].is_contiguous(memory_format=torch.channels_last)
    assert_same(result, expected)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_channels_last_network_on_the_triton_kernels(monkeypatch):
    """The Triton kernels read channels-last embeddings through their strides (on the CPU under
    the interpreter, TRITON_INTERPRET=1 from tests/conftest.py): fp32 against the float64 plain network."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convolutions on a GPU too
    model = network(2, depth=2)
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    expected = output_and_grads(lambda t: plain_csnln(model, t), model, x)
    model.configure_attention(backend="triton")
    model.to(device=device, dtype=torch.float32, memory_format=torch.channels_last)
    result = output_and_grads(model, model, to_channels_last(x.float().to(device)))
    assert result[0].is_contiguous(memory_format=torch.channels_last)
    assert_same(result, expected, FP32_BOUND)
