"""Without a GPU, run every Triton kernel on the CPU through Triton's interpreter (the variable
must be set before triton is first imported); fixtures the kernel tests share."""
import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def poison(monkeypatch):
    """NaN-fill every buffer the Triton launchers allocate, so unwritten elements show."""
    from kernels import _triton_common
    monkeypatch.setattr(_triton_common, "POISON", True)


@pytest.fixture
def fresh_seed():
    """Fresh random inputs each run; the seed is printed (shown on failure) and can be replayed
    with CSNLN_TEST_SEED."""
    seed = int(os.environ.get("CSNLN_TEST_SEED", random.randrange(2 ** 31)))
    torch.manual_seed(seed)
    print(f"seed {seed}")
    return seed
