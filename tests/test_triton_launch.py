"""tc.launch with autotuning on: the first launch of a key goes through the autotuner, later
launches of that key take its pick from the autotuner's cache and launch the jit kernel
directly. No GPU needed: the autotuner's benchmark and the jit kernel's run are stand-ins."""
import os

import pytest
import torch
import triton
import triton.language as tl

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from kernels import _triton_common as tc  # noqa: E402
from kernels import in_scale_triton as ist  # noqa: E402


@triton.jit(do_not_specialize=["L_BUCKET"])
def _copy_kernel(x_ptr, y_ptr, n, L_BUCKET, C: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


@pytest.fixture
def tuner(monkeypatch):
    """An autotuned copy kernel whose 'benchmark' prefers BLOCK=32 and whose runs are recorded."""
    monkeypatch.setattr(tc, "AUTOTUNE", True)
    kernel = triton.autotune(configs=[tc.config(4, 2, BLOCK=16), tc.config(4, 2, BLOCK=32)],
                             key=["C", "L_BUCKET"])(_copy_kernel)
    kernel._bench = lambda *args, config, **meta: [abs(config.kwargs["BLOCK"] - 32) + 1.0] * 3
    kernel.runs = []
    kernel.fn.run = lambda *args, grid, warmup, **meta: kernel.runs.append(
        (grid(meta) if callable(grid) else grid, meta["BLOCK"]))
    return kernel


def _launch(kernel, x, bucket=64, c=3):
    tc.launch(kernel, dict(BLOCK=16), lambda m: (triton.cdiv(x.numel(), m["BLOCK"]),),
              (x, torch.empty_like(x), x.numel()), dict(L_BUCKET=bucket, C=c))


def test_tuning_key_is_the_autotuners_own(tuner):
    x = torch.zeros(40)
    _launch(tuner, x)
    assert list(tuner.cache) == [tc.tuning_key(tuner, (x, x, 40), dict(L_BUCKET=64, C=3))]
    assert tuner.cache[(3, 64, "torch.float32", "torch.float32")].kwargs["BLOCK"] == 32


def test_a_tuned_key_launches_its_pick_without_the_autotuner(tuner, monkeypatch):
    x = torch.zeros(40)
    _launch(tuner, x)                       # tunes: the pick, BLOCK=32, launched by Autotuner.run
    assert tuner.runs == [((2,), 32)]

    def refuse(*args, **kwargs):
        raise AssertionError("Autotuner.run called for a tuned key")

    monkeypatch.setattr(tuner, "run", refuse)
    _launch(tuner, torch.ones(70))          # same key (dtype, C, bucket), another size
    assert tuner.runs[-1] == ((3,), 32)
    for other in (dict(bucket=128), dict(c=5)):     # a new bucket or constexpr is a new key
        with pytest.raises(AssertionError, match="Autotuner.run"):
            _launch(tuner, x, **other)
    with pytest.raises(AssertionError, match="Autotuner.run"):
        _launch(tuner, x.half())


def test_autotune_keys_bucket_the_sequence_length():
    assert [tc.length_bucket(n) for n in (1, 700, 2304, 4096, 9216, 36864, 10 ** 6)] == \
        [1024, 1024, 4096, 4096, 16384, 65536, 65536]
    assert ist._KEY == ["CK", "CV", "L_BUCKET"]


def test_plain_python_power_of_two_and_cdiv():
    for x in (1, 2, 3, 16, 17, 2304, 2 ** 20 + 1):
        assert tc.next_power_of_2(x) == triton.next_power_of_2(x)
        assert tc.cdiv(x, 16) == triton.cdiv(x, 16) and tc.cdiv(x, 7) == triton.cdiv(x, 7)
