"""The whole network: one training step (L1, Adam) and inference on one image."""
import pytest
import torch

from bench.conftest import CUDA, DEVICE, DTYPE, measure
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


@pytest.mark.parametrize("shape,backend", TRAIN_CASES)
def test_training_step(benchmark, shape, backend):
    scale, n_feats, depth, batch, patch = TRAIN[shape]
    model = CSNLN(scale=scale, n_feats=n_feats, depth=depth, attention_backend=backend).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=CUDA)

    def make():
        return (torch.rand(batch, 3, patch, patch, device=DEVICE),
                torch.rand(batch, 3, patch * scale, patch * scale, device=DEVICE))

    def step(lr, hr):
        with torch.autocast(DEVICE.type, dtype=DTYPE, enabled=CUDA):
            loss = torch.nn.functional.l1_loss(model(lr).float(), hr)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    benchmark.group = f"training step {shape}"
    measure(benchmark, make, step, None, ROUNDS)


@pytest.mark.parametrize("shape,backend", INFER_CASES)
def test_inference(benchmark, shape, backend):
    scale, n_feats, depth, h, w = INFER[shape]
    model = CSNLN(scale=scale, n_feats=n_feats, depth=depth, attention_backend=backend).to(DEVICE).eval()

    def forward(x):
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=DTYPE, enabled=CUDA):
            model(x)

    benchmark.group = f"inference {shape}"
    measure(benchmark, lambda: (torch.rand(1, 3, h, w, device=DEVICE),), forward, None, ROUNDS)
