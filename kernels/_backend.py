"""Backend choice and input checks shared by the public operators."""
import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")


def triton_installed():
    return importlib.util.find_spec("triton") is not None


def interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotune_enabled():
    """Whether the Triton kernels autotune their block sizes: not under the interpreter, and
    not with CSNLN_TRITON_AUTOTUNE=0 (one fixed config: quick GPU correctness checks)."""
    return not interpreting() and os.environ.get("CSNLN_TRITON_AUTOTUNE", "1") != "0"


def resolve_backend(backend, tensor):
    """Return "torch" or "triton" for `backend` and the device of `tensor`.

    "triton" raises where the Triton kernels cannot run: no silent fallback.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    runnable = triton_installed() and (tensor.is_cuda or (interpreting() and tensor.device.type == "cpu"))
    if backend == "auto":
        return "triton" if runnable and tensor.is_cuda else "torch"
    if backend == "triton" and not runnable:
        if not triton_installed():
            why = "Triton is not installed"
        else:
            why = f"the tensors are on {tensor.device}; Triton kernels need CUDA tensors (or CPU tensors with TRITON_INTERPRET=1)"
        raise RuntimeError(f'backend="triton" cannot run here: {why}. Use backend="torch" or "auto".')
    return backend


def check_attention_inputs(name, q, k, v):
    """Common checks: 4-D floating tensors on one device with one dtype and batch."""
    for label, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name}: {label} must be a 4-D tensor [N, C, H, W], got {_describe(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name}: {label} must be floating point, got {t.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{name}: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{name}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"{name}: batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"{name}: q and k need the same channel count, got {q.shape[1]} and {k.shape[1]}")


def _describe(t):
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def autocast_dtype(device_type):
    """The autocast dtype when autocast is on for `device_type`, else None (torch >= 2.4 and older)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        enabled = device_type == "cuda" and torch.is_autocast_enabled()
    if not enabled:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except AttributeError:  # torch < 2.4
        return torch.get_autocast_gpu_dtype()
