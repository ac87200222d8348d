"""The whole network: one training step (L1, Adam) and inference on one image, with model and
inputs contiguous or channels-last (a separate group, " channels_last")."""
import pytest
import torch

from bench.conftest import CUDA, DEVICE, DTYPE, measure, training_step
from csnln import CSNLN

# name -> (scale, n_feats, depth, batch, LR patch)
TRAIN = {"x2-paper": (2, 128, 12, 16, 48), "x3-paper": (3, 128, 12, 16, 48), "x4-paper": (4, 128, 12, 16, 48)} \
    if CUDA else {"cpu-x2-small": (2, 16, 2, 2, 24)}
INFER = {"x2-256": (2, 128, 12, 256, 256)} if CUDA else {"cpu-x2-small": (2, 16, 2, 48, 40)}
ROUNDS = 5 if CUDA else 2
# the fused kernels everywhere; the torch backend as the baseline where it fits in time and memory
TRAIN_CASES = ([(shape, "auto") for shape in TRAIN] + [(next(iter(TRAIN)), "torch")] if CUDA
               else [(shape, "torch") for shape in TRAIN])
INFER_CASES = [(shape, backend) for shape in INFER for backend in (("auto", "torch") if CUDA else ("torch",))]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def group(kind, shape, layout):
    return f"{kind} {shape}" + (" channels_last" if layout == "channels_last" else "")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,backend", TRAIN_CASES)
def test_training_step(benchmark, shape, backend, layout):
    scale, n_feats, depth, batch, patch = TRAIN[shape]
    memory_format = LAYOUTS[layout]
    model = CSNLN(scale=scale, n_feats=n_feats, depth=depth, attention_backend=backend).to(
        DEVICE, memory_format=memory_format)

    def make():
        return tuple(torch.rand(batch, 3, side, side, device=DEVICE).contiguous(memory_format=memory_format)
                     for side in (patch, patch * scale))

    benchmark.group = group("training step", shape, layout)
    measure(benchmark, make, training_step(model), None, ROUNDS)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,backend", INFER_CASES)
def test_inference(benchmark, shape, backend, layout):
    scale, n_feats, depth, h, w = INFER[shape]
    memory_format = LAYOUTS[layout]
    model = CSNLN(scale=scale, n_feats=n_feats, depth=depth, attention_backend=backend).to(
        DEVICE, memory_format=memory_format).eval()

    def forward(x):
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=DTYPE, enabled=CUDA):
            model(x)

    benchmark.group = group("inference", shape, layout)
    measure(benchmark, lambda: (torch.rand(1, 3, h, w, device=DEVICE).contiguous(memory_format=memory_format),),
            forward, None, ROUNDS)
