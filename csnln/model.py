"""The CSNLN network (Mei et al., CVPR 2020), with the original state-dict layout."""
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .attention import CrossScaleAttention, NonLocalAttention, conv_prelu, embed

RGB_MEAN = (0.4488, 0.4371, 0.4040)
# scale -> (kernel, stride, padding) of the strided (de)convolutions of one x2 or x3 step
PROJECTION_GEOMETRY = {2: (6, 2, 2), 3: (9, 3, 3), 4: (6, 2, 2)}
ATTENTION_SCALE = {2: 2, 3: 3, 4: 2}


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding sign * rgb_range * RGB_MEAN: [N, 3, H, W] -> [N, 3, H, W]."""

    def __init__(self, rgb_range, sign):
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(RGB_MEAN)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    """x + conv(prelu(conv(x))), 3x3 convs."""

    def __init__(self, n_feats):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.PReLU(),
                                  nn.Conv2d(n_feats, n_feats, 3, padding=1))

    def forward(self, x):
        return self.body(x) + x


def strided(conv, n_feats, kernel, stride, padding):
    return nn.Sequential(conv(n_feats, n_feats, kernel, stride=stride, padding=padding), nn.PReLU())


class MultisourceProjection(nn.Module):
    """In-scale attention + deconv and cross-scale attention fused by a residual encoder.

    [N, C, H, W] -> [N, C, s*H, s*W] with s the attention scale (2, or 3 for x3). The five
    1x1 embeddings of x (three in-scale, two cross-scale) run as one convolution.
    """

    def __init__(self, n_feats, scale, backend="auto"):
        super().__init__()
        kernel, stride, padding = PROJECTION_GEOMETRY[scale]
        self.up_attention = CrossScaleAttention(n_feats, scale=ATTENTION_SCALE[scale], backend=backend)
        self.down_attention = NonLocalAttention(n_feats, backend=backend)
        self.upsample = strided(nn.ConvTranspose2d, n_feats, kernel, stride, padding)
        self.encoder = ResBlock(n_feats)

    def forward(self, x):
        n_down = len(self.down_attention.embeddings)
        embedded = embed(x, self.down_attention.embeddings + self.up_attention.embeddings)
        down_map = self.upsample(self.down_attention.attend(*embedded[:n_down]))
        up_map = self.up_attention.attend(x, *embedded[n_down:])
        return down_map + self.encoder(up_map - down_map)


class RecurrentProjection(nn.Module):
    """The Self-Exemplars-Mining cell: [N, C, H, W] -> (next LR state [N, C, H, W],
    HR estimate [N, C, r*H, r*W]) with r the network scale; x4 chains two x2 stages.
    With next_state=False (the last recurrence) the LR state is not computed and is None."""

    def __init__(self, n_feats, scale, backend="auto"):
        super().__init__()
        self.scale = scale
        kernel, stride, padding = PROJECTION_GEOMETRY[scale]
        self.multi_source_projection = MultisourceProjection(n_feats, scale, backend)
        self.down_sample_1 = strided(nn.Conv2d, n_feats, kernel, stride, padding)
        if scale != 4:
            self.down_sample_2 = strided(nn.Conv2d, n_feats, kernel, stride, padding)
        self.error_encode = strided(nn.ConvTranspose2d, n_feats, kernel, stride, padding)
        self.post_conv = conv_prelu(n_feats, n_feats, 3)
        if scale == 4:
            self.multi_source_projection_2 = MultisourceProjection(n_feats, scale, backend)
            self.down_sample_3 = strided(nn.Conv2d, n_feats, 8, 4, 2)
            self.down_sample_4 = strided(nn.Conv2d, n_feats, 8, 4, 2)
            self.error_encode_2 = strided(nn.ConvTranspose2d, n_feats, 8, 4, 2)

    def forward(self, x, next_state=True):
        x_up = self.multi_source_projection(x)
        h_estimate = x_up + self.error_encode(x - self.down_sample_1(x_up))
        if self.scale == 4:
            x_up_2 = self.multi_source_projection_2(h_estimate)
            h_estimate = x_up_2 + self.error_encode_2(x - self.down_sample_3(x_up_2))
        if not next_state:
            return None, h_estimate
        down_sample = self.down_sample_4 if self.scale == 4 else self.down_sample_2
        return self.post_conv(down_sample(h_estimate)), h_estimate


class CSNLN(nn.Module):
    """Cross-Scale Non-Local attention network.

    Input [N, n_colors, H, W] in [0, rgb_range], H and W divisible by the attention
    scale (2 for x2/x4, 3 for x3); output [N, n_colors, scale*H, scale*W].
    `attention_backend` is passed to both attention operators; `checkpoint_sem`
    recomputes each recurrence in the backward pass instead of storing it.
    """

    def __init__(self, scale=2, n_feats=128, depth=12, n_colors=3, rgb_range=1,
                 attention_backend="auto", checkpoint_sem=False):
        super().__init__()
        if scale not in PROJECTION_GEOMETRY:
            raise ValueError(f"CSNLN supports scale 2, 3 or 4, got {scale!r}")
        if depth < 1 or n_feats < 2 or n_feats % 2:
            raise ValueError(f"CSNLN needs depth >= 1 and an even n_feats, got depth={depth}, n_feats={n_feats}")
        self.scale = scale
        self.n_feats = n_feats
        self.depth = depth
        self.checkpoint_sem = checkpoint_sem
        # registration order reproduces the original state_dict() order
        self.sub_mean = MeanShift(rgb_range, -1)
        self.SEM = RecurrentProjection(n_feats, scale, attention_backend)
        self.add_mean = MeanShift(rgb_range, 1)
        self.head = nn.Sequential(conv_prelu(n_colors, n_feats, 3), conv_prelu(n_feats, n_feats, 3))
        self.tail = nn.Sequential(nn.Conv2d(n_feats * depth, n_colors, 3, padding=1))

    @property
    def size_multiple(self):
        """LR height and width must be multiples of this."""
        return ATTENTION_SCALE[self.scale]

    def configure_attention(self, backend=None, chunk_elements=None):
        """Set the operator backend and/or the torch backend's chunk budget of every attention."""
        for module in self.modules():
            if isinstance(module, (NonLocalAttention, CrossScaleAttention)):
                if backend is not None:
                    module.backend = backend
                if chunk_elements is not None:
                    module.chunk_elements = chunk_elements

    def forward(self, x):
        m = self.size_multiple
        if x.dim() != 4 or x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"CSNLN x{self.scale} needs an input [N, C, H, W] with H and W divisible by {m}, "
                             f"got {tuple(x.shape)}; pad the image (eval.py does) or crop it")
        x = self.head(self.sub_mean(x))
        estimates = []
        for step in range(self.depth):
            next_state = step < self.depth - 1  # the last LR state would be read by nothing
            if self.checkpoint_sem and torch.is_grad_enabled():
                x, h_estimate = checkpoint(self.SEM, x, next_state, use_reentrant=False)
            else:
                x, h_estimate = self.SEM(x, next_state)
            estimates.append(h_estimate)
        return self.add_mean(self.tail(torch.cat(estimates, dim=1)))
