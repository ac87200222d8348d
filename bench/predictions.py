"""Predicted H200 numbers (fp16, Ck 64, Cv 128) for everything bench/gpu_check.sh measures, written
before the GPU run; bench/summarize.py and bench/harness_check.py print each beside its measurement.

- Cross-scale Triton operator: the line model of bench/cross_scale_model.py (GPU time; host time
  not included).
- In-scale Triton operator: FLOPs at the rate its forward measured on 2026-12-04 (316 TFLOP/s,
  1x36864), the backward's 2.5x the forward's FLOPs at 0.675 of that rate (bench/NOTES.md).
- Training step: the step measured on 2026-12-04 less its attention time as then measured (the
  rest: convolutions, optimizer, copies), plus 12 recurrences of both operators as predicted here;
  at x2 also less the cuDNN weight-gradient and layout-copy time that channels_last and cuDNN
  benchmark mode remove (bench/NOTES.md, issue 18). Eager mode, GPU time: host time is a floor.
- Inference: 12 recurrences of both forwards at the image's size plus the convolutions at the
  training step's per-pixel rate.

    python bench/predictions.py        # the table bench/NOTES.md quotes
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import markdown  # noqa: E402
from bench.cross_scale_model import backward_parts, forward_parts  # noqa: E402

CK, CV, DEPTH = 64, 128, 12
IN_SCALE_RATE = 316e12         # FLOP/s, the in-scale forward measured at 1x36864 (2026-12-04)
IN_SCALE_BACKWARD_SHARE = 0.675   # the backward's rate against the forward's (60-75 %)
# bench shape name (bench/test_bench_attention.py) -> (N, H, W, s)
BENCH_SHAPES = {"train-x2": (16, 48, 48, 2), "train-x3": (16, 48, 48, 3), "map96": (1, 96, 96, 2),
                "map192": (1, 192, 192, 2), "x4-stage2": (16, 96, 96, 2)}
# 2026-12-04, H200 (shared/measurements): step ms, and the attention ms inside it (cross + in-scale)
MEASURED_STEP = {2: (317.4, 12 * (3.56 + 9.04) + 12 * (0.27 + 1.93)),
                 3: (225.6, 12 * 7.42 + 12 * (0.27 + 1.93)),
                 4: (3867.0, 3300.0 + 12 * (0.27 + 1.93))}
X2_CUDNN_SAVING_MS = 95.6 - 4.0 + 11.5   # wgrad_alg1 2.0 ms x 47 -> 3-5 ms, and the layout copies (NOTES)
INFERENCE_CONV_MS_PER_MPIXEL = 6.0   # forward convolutions of the paper model: a third of the x2
# step's non-attention time (36 ms for 16 x 48 x 48 = 0.037 MP LR, forward + 2x backward) per LR MP


def cross_scale_ms(n, h, w, s):
    """-> (forward ms, forward+backward ms) of one call."""
    fwd = sum(t for _, t in forward_parts(n, h, w, s))
    bwd = sum(t for _, t in backward_parts(n, h, w, s))
    return fwd * 1e3, (fwd + bwd) * 1e3


def in_scale_ms(n, tokens):
    """-> (forward ms, forward+backward ms) of one call on n images of `tokens` pixels."""
    flop = 2.0 * n * tokens ** 2 * (CK + CV)
    fwd = flop / IN_SCALE_RATE
    return fwd * 1e3, (fwd + 2.5 * flop / (IN_SCALE_RATE * IN_SCALE_BACKWARD_SHARE)) * 1e3


def operator_ms(operator, shape, backward):
    """Predicted ms of a `pytest bench` row of the triton backend, or None (no model)."""
    if shape not in BENCH_SHAPES:
        return None
    n, h, w, s = BENCH_SHAPES[shape]
    ms = cross_scale_ms(n, h, w, s) if operator == "cross-scale" else in_scale_ms(n, h * w)
    return ms[backward]


def step_ms(scale):
    """Predicted ms of a training step of the paper's model (batch 16, LR 48 x 48, fp16)."""
    measured, attention = MEASURED_STEP[scale]
    rest = measured - attention - (X2_CUDNN_SAVING_MS if scale == 2 else 0.0)
    calls = [(16, 48, 48, scale)] + ([(16, 96, 96, 2)] if scale == 4 else [])
    cross = sum(cross_scale_ms(*c)[1] for c in calls)
    return rest + DEPTH * (cross + in_scale_ms(16, 48 * 48)[1])


def inference_ms(h, w, scale=2):
    """Predicted ms of one whole-image forward of the paper's model on an h x w LR image."""
    cross = cross_scale_ms(1, h, w, scale)[0]
    return DEPTH * (cross + in_scale_ms(1, h * w)[0]) + INFERENCE_CONV_MS_PER_MPIXEL * h * w / 1e6


def rows():
    """[(what, predicted ms)] for every number gpu_check.sh returns with a model behind it."""
    out = []
    for operator in ("cross-scale", "in-scale"):
        for shape in BENCH_SHAPES:
            if operator == "in-scale" and BENCH_SHAPES[shape][3] != 2:
                continue
            for backward, label in ((False, "fwd"), (True, "fwd+bwd")):
                out.append((f"{operator} {shape} {label} (triton)", operator_ms(operator, shape, backward)))
    out += [(f"x{s} training step, eager", step_ms(s)) for s in (2, 3, 4)]
    out.append(("x2 whole image, LR 256 x 256 (fp16)", inference_ms(256, 256)))
    return out


if __name__ == "__main__":
    print(markdown.table(["measurement", "predicted ms (H200)"], [[w, f"{ms:.3f}"] for w, ms in rows()]))
