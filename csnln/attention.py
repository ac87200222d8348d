"""The two attention modules of CSNLN, with the original parameter names.

Each embeds its input with 1x1 conv + PReLU branches and calls the operator
from `kernels`; `backend` is "auto", "torch" or "triton", and `chunk_elements`
bounds the chunks of the torch backend. The branches that read the same
input run as one 1x1 convolution (`embed`); `embeddings` lists them and `attend`
takes their outputs, so a caller can fuse the branches of several modules.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels


def conv_prelu(in_channels, out_channels, kernel_size=1):
    """Conv2d ('same' padding) followed by a single-slope PReLU, as the original BasicBlock."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.PReLU())


def embed(x, branches):
    """1x1 conv + PReLU `branches` on one input as a single 1x1 conv over their concatenated
    weights, each PReLU on its channel slice: x [N, Cin, H, W] -> tuple of [N, C_i, H, W]."""
    convs = [branch[0] for branch in branches]
    fused = F.conv2d(x, torch.cat([conv.weight for conv in convs]), torch.cat([conv.bias for conv in convs]))
    parts = fused.split([conv.out_channels for conv in convs], dim=1)
    return tuple(branch[1](part) for branch, part in zip(branches, parts))


class NonLocalAttention(nn.Module):
    """In-scale non-local attention: [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channel=128, reduction=2, backend="auto"):
        super().__init__()
        self.conv_match1 = conv_prelu(channel, channel // reduction)
        self.conv_match2 = conv_prelu(channel, channel // reduction)
        self.conv_assembly = conv_prelu(channel, channel)
        self.backend = backend
        self.chunk_elements = kernels.DEFAULT_CHUNK_ELEMENTS

    @property
    def embeddings(self):
        """The branches on x, in the order `attend` takes their outputs."""
        return self.conv_match1, self.conv_match2, self.conv_assembly

    def attend(self, query, key, value):
        """query, key [N, C/r, H, W], value [N, C, H, W] -> [N, C, H, W]."""
        return kernels.in_scale_attention(query, key, value, backend=self.backend,
                                          chunk_elements=self.chunk_elements)

    def forward(self, x):
        return self.attend(*embed(x, self.embeddings))


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

    @property
    def embeddings(self):
        """The branches on x, in the order `attend` takes their outputs; conv_match_2 embeds
        the downscaled reference inside `attend`."""
        return self.conv_match_1, self.conv_assembly

    def attend(self, x, query, value):
        """x [N, C, H, W], query [N, C/r, H, W], value [N, C, H, W] -> [N, C, s*H, s*W]."""
        reference = F.interpolate(x, scale_factor=1.0 / self.scale, mode="bilinear", align_corners=False)
        return kernels.cross_scale_attention(query, self.conv_match_2(reference), value, self.scale,
                                             softmax_scale=self.softmax_scale, backend=self.backend,
                                             chunk_elements=self.chunk_elements)

    def forward(self, x):
        return self.attend(x, *embed(x, self.embeddings))
