"""The two attention modules of CSNLN, with the original parameter names.

Each embeds its input with 1x1 conv + PReLU branches and calls the operator
from `kernels`; `backend` is "auto", "torch" or "triton", and `chunk_elements`
bounds the score chunks of the torch backend.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels


def conv_prelu(in_channels, out_channels, kernel_size=1):
    """Conv2d ('same' padding) followed by a single-slope PReLU, as the original BasicBlock."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.PReLU())


class NonLocalAttention(nn.Module):
    """In-scale non-local attention: [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channel=128, reduction=2, backend="auto"):
        super().__init__()
        self.conv_match1 = conv_prelu(channel, channel // reduction)
        self.conv_match2 = conv_prelu(channel, channel // reduction)
        self.conv_assembly = conv_prelu(channel, channel)
        self.backend = backend
        self.chunk_elements = kernels.DEFAULT_CHUNK_ELEMENTS

    def forward(self, x):
        return kernels.in_scale_attention(self.conv_match1(x), self.conv_match2(x), self.conv_assembly(x),
                                          backend=self.backend, chunk_elements=self.chunk_elements)


class CrossScaleAttention(nn.Module):
    """Cross-scale non-local attention: [N, C, H, W] -> [N, C, s*H, s*W], H and W divisible by s."""

    def __init__(self, channel=128, reduction=2, scale=2, softmax_scale=10, backend="auto"):
        super().__init__()
        self.scale = scale
        self.softmax_scale = softmax_scale
        self.backend = backend
        self.chunk_elements = kernels.DEFAULT_CHUNK_ELEMENTS
        self.register_buffer("escape_NaN", torch.tensor([kernels.KEY_NORM_FLOOR], dtype=torch.float32))
        self.conv_match_1 = conv_prelu(channel, channel // reduction)
        self.conv_match_2 = conv_prelu(channel, channel // reduction)
        self.conv_assembly = conv_prelu(channel, channel)

    def forward(self, x):
        reference = F.interpolate(x, scale_factor=1.0 / self.scale, mode="bilinear", align_corners=False)
        return kernels.cross_scale_attention(self.conv_match_1(x), self.conv_match_2(reference),
                                             self.conv_assembly(x), self.scale,
                                             softmax_scale=self.softmax_scale, backend=self.backend,
                                             chunk_elements=self.chunk_elements)
