"""What both Triton operators need besides their kernels: buffers, device guard, launches
with a fixed or an autotuned config, input preparation, and the bf16 emulation that the
interpreter needs.

Under TRITON_INTERPRET=1 (CPU) `tl.dot` on bf16 operands is wrong and fp32 -> bf16 casts
truncate, where a GPU rounds to nearest even: with EMU_BF16 the jit helpers multiply the
same bf16 values in fp32 (exact products, as on the GPU) and round to nearest even first.
"""
import contextlib
import functools

import torch
import triton
import triton.language as tl

from ._backend import autocast_dtype, autotune_enabled, interpreting

INTERPRET = interpreting()
AUTOTUNE = autotune_enabled()   # else one fixed config per kernel (interpreter, quick GPU checks)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2E = 1.4426950408889634

# Tests set this to fill every buffer a launcher allocates with NaN before the launches, so
# that an element a kernel forgets to write shows up.
POISON = False


def new_buffer(shape, dtype, device):
    """torch.empty, or NaN-filled when POISON is set."""
    if POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def memory_format(t):
    """channels_last for a 4-D tensor stored channels-last (and not also contiguous), else contiguous."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def new_output(shape, like):
    """An [N, C, H, W] output buffer in like's dtype, device and memory format (NaN with POISON):
    a channels-last network keeps its layout through the operators."""
    out = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format(like))
    return out.fill_(float("nan")) if POISON else out


def device_guard(t):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def next_power_of_2(x):
    """The power of two >= x (x >= 1); plain Python, unlike triton's constexpr function (~3 us a call)."""
    return 1 << (x - 1).bit_length()


def cdiv(a, b):
    """ceil(a / b) for ints; plain Python, unlike triton.cdiv."""
    return -(-a // b)


def length_bucket(length):
    """An autotune key's bucket of a sequence length: the power of two >= it, in [2^10, 2^16], so
    that the first shape a process sees does not choose the config for every other length."""
    return min(max(next_power_of_2(length), 1024), 65536)


def pad_channels(c):
    """The channel block of a kernel that holds all `c` channels: a power of two, at least 16 (tl.dot)."""
    return max(16, next_power_of_2(c))


def emulate_bf16(dtype):
    """Whether bf16 dots and casts must be emulated (the interpreter with bf16 inputs)."""
    return bool(INTERPRET and dtype == torch.bfloat16)


def tuned(kernel, configs, key, prune=None):
    """`kernel` autotuned over `configs` on a GPU; `kernel` itself when AUTOTUNE is off."""
    if not AUTOTUNE:
        return kernel
    prune_by = {"early_config_prune": prune} if prune is not None else None
    return triton.autotune(configs=configs, key=key, prune_configs_by=prune_by)(kernel)


def launch(kernel, fixed, grid_of, args, meta):
    """Launch `kernel` (from `tuned`) with its autotuned config, or with `fixed`
    ({"BLOCK_M": .., "num_warps": ..}) when AUTOTUNE is off. grid_of(config kwargs) -> grid.

    Once the autotuner has picked a config for a key, later launches with that key take the
    picked config from its cache and launch the jit kernel directly: no Autotuner.run dispatch
    (argument dicts, key, hooks) on every call."""
    if not AUTOTUNE:
        kernel[grid_of(fixed)](*args, **meta, **fixed)
        return
    picked = kernel.cache.get(tuning_key(kernel, args, meta))
    if picked is None:
        kernel[grid_of](*args, **meta)   # tunes this key (or, one candidate left, just picks it)
    else:
        kernel.fn.run(*args, grid=grid_of(picked.kwargs), warmup=False, **meta, **picked.all_kwargs())


def tuning_key(tuner, args, meta):
    """The key under which `tuner` (a triton Autotuner) caches its pick for a launch with
    positional `args` and keyword `meta`: the key arguments' values, then every tensor's dtype."""
    names = tuner.arg_names
    return (*(meta[k] if k in meta else args[names.index(k)] for k in tuner.keys),
            *(str(a.dtype) for a in (*args, *meta.values()) if hasattr(a, "dtype")))


def config(num_warps, num_stages, **blocks):
    return triton.Config(blocks, num_warps=num_warps, num_stages=num_stages)


def without_autocast(fn):
    """Run fn(*tensors, ...) with autocast off on the first tensor's device: the launchers' own
    torch ops (key norms, folds, casts) keep their dtypes under an outer autocast."""
    @functools.wraps(fn)
    def wrapper(*args):
        with torch.autocast(args[0].device.type, enabled=False):
            return fn(*args)
    return wrapper


def grads_or_empty(grads, inputs):
    """A custom op returns no None: an unneeded gradient travels as an empty tensor."""
    return tuple(x.new_empty(0) if g is None else g for g, x in zip(grads, inputs))


def fake_grads(inputs, needs):
    """Shapes of a backward op's outputs: contiguous like each input, or empty when not needed."""
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) if need else x.new_empty(0)
                 for x, need in zip(inputs, needs))


def needed(grads, needs):
    """The autograd view of a backward op's outputs: None where not needed."""
    return tuple(g if need else None for g, need in zip(grads, needs))


def prepare_inputs(name, q, k, v):
    """Refuse devices the kernels cannot run on, cast under autocast like a matmul, check dtypes.

    Returns (q, k, v); the custom ops they go into run with autocast off."""
    if not (q.is_cuda or (INTERPRET and q.device.type == "cpu")):
        raise RuntimeError(f"{name}: tensors on {q.device} need CUDA (or CPU with TRITON_INTERPRET=1 "
                           "set before the kernels were imported)")
    autocast_to = autocast_dtype(q.device.type)
    if autocast_to is not None:
        q, k, v = (t.to(autocast_to) for t in (q, k, v))
    if q.dtype not in DTYPES or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"{name}: dtypes {q.dtype}, {k.dtype}, {v.dtype} are not supported "
                         "(one of float32, float16, bfloat16); use backend=\"torch\"")
    return q, k, v


# ----------------------------------------------------------------------------- jit helpers

@triton.jit
def rne(x, EMU_BF16: tl.constexpr):
    """Prepare fp32 `x` for `.to(bfloat16)`: with EMU_BF16 round its bits to nearest even
    (the interpreter's cast truncates; the GPU's rounds)."""
    if EMU_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = bits.to(tl.float32, bitcast=True)
    return x


@triton.jit
def cast(x, dtype: tl.constexpr, EMU_BF16: tl.constexpr):
    """fp32 `x` -> `dtype`, rounding to nearest even (bf16 emulated only where `dtype` is bf16: an
    fp32 destination of a bf16 call, such as dP, stays exact)."""
    if dtype == tl.bfloat16:
        x = rne(x, EMU_BF16)
    return x.to(dtype)


@triton.jit
def mma(a, b, acc, EMU_BF16: tl.constexpr):
    """acc + a @ b with fp32 accumulation; exact fp32 products for fp32 operands (no TF32).
    EMU_BF16 multiplies bf16 operands in fp32 (the interpreter's bf16 dot is wrong)."""
    if EMU_BF16:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")
