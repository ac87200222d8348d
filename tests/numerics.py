"""The numerics every operator test shares: errors, the low-precision rule, random layouts.

Error measure: max |got - want| / max |want| per tensor, in float64, `want` from a float64
run of a reference on the same (rounded) inputs.
"""
import torch

import kernels

NAMES = ("out", "dq", "dk", "dv")
# fp16 / bf16: a kernel's error may be at most twice the error of the PyTorch reference run in
# that dtype, plus one unit roundoff of the dtype: the kernels store results in the dtype and
# round P / dS (P~ / dR) to it before their products, so an error floor of ~u is unavoidable,
# and a draw where the low-precision reference happens to be unusually exact must not fail.
SLACK = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def rel_err(got, want):
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max()).item()


def rel_errs(got, want):
    return [rel_err(a, b) for a, b in zip(got, want)]


def operator(op, scale, backend):
    """fn(q, k, v) for op "cross_scale" (at `scale`) or "in_scale", on `backend`."""
    if op == "cross_scale":
        return lambda q, k, v: kernels.cross_scale_attention(q, k, v, scale, backend=backend)
    return lambda q, k, v: kernels.in_scale_attention(q, k, v, backend=backend)


def run_with_grads(fn, leaves, grad_out):
    """(out, *d out/d leaves . grad_out) of fn(*leaves)."""
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, grad_out.to(out.dtype)))


def rerun(fn, tensors, grad_out, dtype=torch.float64):
    """run_with_grads on detached copies of `tensors` cast to `dtype` (the reference runs)."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in tensors]
    return run_with_grads(fn, leaves, grad_out.to(dtype))


def twice_torch_bound(torch_err, dtype):
    """The largest kernel error the low-precision rule allows, given PyTorch's error in `dtype`."""
    return 2 * torch_err + SLACK[dtype]


def assert_within_twice_torch(got, want, torch_low, dtype, label):
    """The low-precision rule for every tensor of got / torch_low against the float64 want."""
    errs, ref_errs = rel_errs(got, want), rel_errs(torch_low, want)
    print(label, {n: (f"{e:.2e}", f"{r:.2e}") for n, e, r in zip(NAMES, errs, ref_errs)})
    for name, e, r in zip(NAMES, errs, ref_errs):
        assert e <= twice_torch_bound(r, dtype), f"{label} {name}: kernel {e:.3g} vs torch {r:.3g}"


def attention_inputs(op, n, ck, cv, h, w, s, device):
    """float64 ((q, k, v), grad_out) of an operator at [n, ck / cv, h, w], key map h/s x w/s;
    in-scale logits scaled to a few units, as after training."""
    q = torch.randn(n, ck, h, w, device=device, dtype=torch.float64)
    k = torch.randn(n, ck, h // s, w // s, device=device, dtype=torch.float64)
    v = torch.randn(n, cv, h, w, device=device, dtype=torch.float64)
    if op == "in_scale":
        q, k = q * ck ** -0.5 * 3, k * ck ** -0.5 * 3
    return (q, k, v), torch.randn(n, cv, h * s, w * s, device=device, dtype=torch.float64)


def random_tensor(shape, layout, dtype, device):
    """randn [n, c, h, w] in a memory layout: "contiguous", "channels_last" (channels innermost),
    "strided" (every other channel, non-zero storage offset) or "transposed" (H, W swapped in
    memory); the non-contiguous ones are views."""
    n, c, h, w = shape
    if layout == "contiguous":
        t = torch.randn(n, c, h, w)
    elif layout == "channels_last":
        t = torch.randn(n, h, w, c).permute(0, 3, 1, 2)
    elif layout == "strided":
        t = torch.randn(n, c, 2, h, w)[:, :, 1]
    elif layout == "transposed":
        t = torch.randn(n, c, w, h).transpose(2, 3)
    else:
        raise ValueError(layout)
    return t.to(device=device, dtype=dtype)
