"""Without a GPU, run every Triton kernel on the CPU through Triton's interpreter.

The variable must be set before triton is first imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
