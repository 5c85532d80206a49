"""The TinyViT-5M image encoder of MobileSAM and LiteMedSAM, in plain PyTorch.

Both models distil SAM's ViT-H image encoder into a TinyViT-5M (Wu et al. 2022) with SAM's conv
neck on top; their checkpoints name the encoder's tensors ``image_encoder.*``. The two differ only
in the stem (MobileSAM: two 3×3 stride-2 convs, 1024-px input; LiteMedSAM: two 1×1 stride-1 convs,
256-px input); both reach a 64×64 map, and the downsampling into the last stage keeps stride 1.

Every module is written here from the architecture as the TinyViT paper and the authors' model
files describe it (``mobile_sam/modeling/tiny_vit_sam.py``, MedSAM's ``tiny_vit_sam.py``), with
their parameter names so the checkpoints load strictly. The feature maps stay ``[B, C, H, W]``
between modules (the original passes flattened tokens), so each block's output is a map and the
encoder takes any input size; at the authors' input sizes the computation is theirs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TinyVitConfig:
    dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    heads: tuple[int, ...] = (2, 4, 5, 10)  # stages 1-3 (stage 0 is convolutional)
    windows: tuple[int, ...] = (7, 7, 14, 7)
    downsample_strides: tuple[int, ...] = (2, 2, 1)  # into stages 1, 2, 3 (SAM keeps the last at stride 16)
    stem_kernel: int = 3  # MobileSAM 3 (two stride-2 convs), LiteMedSAM 1 (two stride-1 convs)
    stem_stride: int = 2
    mlp_ratio: float = 4.0
    mbconv_expand: float = 4.0
    neck_dim: int = 256
    imagenet_head: bool = False  # the checkpoint still holds TinyViT's ImageNet classifier (MobileSAM)


class ConvBN(nn.Sequential):
    """Convolution without bias followed by batch norm (keys ``c.*``, ``bn.*``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__(OrderedDict(
            c=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(cout),
        ))


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of a ``[B, C, H, W]`` map (SAM's neck norm, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise, 1×1 project, GELU after the residual sum."""

    def __init__(self, dim: int, expand: float):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x):
        y = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return F.gelu(x + y)


class PatchMerging(nn.Module):
    """1×1 conv to the next width, 3×3 depthwise conv with the stage's stride, 1×1 conv."""

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x):
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Multi-head attention inside a window, with a learned bias per head and per |Δrow|, |Δcol|.

    The checkpoint's ``attention_biases`` hold one value per offset in the order the offsets first
    occur when the window's positions are enumerated row by row — which is ``|Δrow| * w + |Δcol|``.
    """

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.key_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        r = torch.arange(window).repeat_interleave(window)
        c = torch.arange(window).repeat(window)
        idx = (r[:, None] - r[None]).abs() * window + (c[:, None] - c[None]).abs()
        self.register_buffer("bias_index", idx, persistent=False)

    def forward(self, x):  # [N, T, C]
        n, t, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(n, t, self.heads, 3 * self.key_dim).transpose(1, 2)
        q, k, v = qkv.split(self.key_dim, dim=-1)  # per head: q, k, v side by side (the checkpoint's layout)
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(n, t, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyVitBlock(nn.Module):
    """Window attention (maps padded bottom/right to whole windows), 3×3 depthwise conv, MLP."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float):
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _windows(self, x):  # [B, H, W, C] -> attention inside each w×w window
        b, h, w_, c = x.shape
        w = self.window
        ph, pw = -h % w, -w_ % w
        if ph or pw:  # zeros padded before the attention's norm, as the original does
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        H, W = h + ph, w_ + pw
        win = x.view(b, H // w, w, W // w, w, c).transpose(2, 3).reshape(-1, w * w, c)
        out = self.attn(win).view(b, H // w, W // w, w, w, c).transpose(2, 3).reshape(b, H, W, c)
        return out[:, :h, :w_]

    def forward(self, x):  # [B, C, H, W]
        t = x.permute(0, 2, 3, 1)
        t = t + self._windows(t)
        t = self.local_conv(t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        t = t + self.mlp(t)
        return t.permute(0, 3, 1, 2)


class Stage(nn.Module):
    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyVitSam(nn.Module):
    """TinyViT trunk + SAM neck: image ``[B, 3, H, W]`` -> embedding ``[B, 256, H/s, W/s]``."""

    def __init__(self, cfg: TinyVitConfig):
        super().__init__()
        d = cfg.dims
        k, s = cfg.stem_kernel, cfg.stem_stride
        self.patch_embed = nn.Module()
        self.patch_embed.seq = nn.Sequential(ConvBN(3, d[0] // 2, k, s), nn.GELU(), ConvBN(d[0] // 2, d[0], k, s))
        layers = []
        for i, depth in enumerate(cfg.depths):
            if i == 0:
                blocks = [MBConv(d[0], cfg.mbconv_expand) for _ in range(depth)]
            else:
                blocks = [TinyVitBlock(d[i], cfg.heads[i], cfg.windows[i], cfg.mlp_ratio) for _ in range(depth)]
            down = PatchMerging(d[i], d[i + 1], cfg.downsample_strides[i]) if i + 1 < len(cfg.depths) else None
            layers.append(Stage(blocks, down))
        self.layers = nn.ModuleList(layers)
        if cfg.imagenet_head:  # only so the checkpoint loads strictly; dropped right after (drop_imagenet_head)
            self.norm_head = nn.LayerNorm(d[-1])
            self.head = nn.Linear(d[-1], 1000)
        self.neck = nn.Sequential(
            nn.Conv2d(d[-1], cfg.neck_dim, 1, bias=False), LayerNorm2d(cfg.neck_dim),
            nn.Conv2d(cfg.neck_dim, cfg.neck_dim, 3, padding=1, bias=False), LayerNorm2d(cfg.neck_dim),
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear) and not m.weight.is_meta:
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def drop_imagenet_head(self) -> None:
        """The ImageNet classifier plays no part in SAM's image embedding."""
        for name in ("norm_head", "head"):
            if hasattr(self, name):
                delattr(self, name)

    def trunk(self, x):
        x = self.patch_embed.seq(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x):
        return self.neck(self.trunk(x))


# The architecture of both checkpoints: MobileSAM's ``build_sam_vit_t`` and LiteMedSAM's
# ``CVPR24_LiteMedSAM_infer.py`` (TinyViT-5M widths, depths, heads and windows).
TINYVIT_CONFIGS = {
    "tinyvit_5m_sam_1024": TinyVitConfig(stem_kernel=3, stem_stride=2, imagenet_head=True),
    "tinyvit_5m_sam_256": TinyVitConfig(stem_kernel=1, stem_stride=1),
}
