"""SEEM's FocalNet-T image backbone (X-Decoder ``focal_dw``), with SEEM's own parameter names.

timm's ``focalnet_tiny_lrf`` is the same FocalNet-T skeleton (96-192-384-768, depths 2-2-6-2, 3
focal levels) but not SEEM's variant: SEEM adds a depthwise 3×3 conv before the modulation and
before the MLP of every block (``dw1``/``dw2``), puts the layer norms after the residual sums
(``USE_POSTLN``), uses overlapping conv stems and keeps one output norm per stage (``norm0..3``).
Loading SEEM weights into timm's block would compute something else, so this module reproduces
``focal_dw`` with the checkpoint's names; ``remap.seem_to_focalnet`` only strips the SEEM prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import BaseLoader, load_strict, register_loader, seeded, torch_load, wrong_weights


class PatchEmbed(nn.Module):
    """Overlapping conv patch embedding (7×7/4 stem, 3×3/2 between stages) + LayerNorm."""

    def __init__(self, in_chans, embed_dim, stem: bool, overlap: bool = True):
        super().__init__()
        k, s, p = ((7, 4, 3) if stem else (3, 2, 1)) if overlap else ((4, 4, 0) if stem else (2, 2, 0))
        self.stride = s
        self.proj = nn.Conv2d(in_chans, embed_dim, k, stride=s, padding=p)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        H, W = x.shape[-2:]
        x = F.pad(x, (0, -W % self.stride, 0, -H % self.stride))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class FocalModulation(nn.Module):
    def __init__(self, dim, focal_level=3, focal_window=3, focal_factor=2):
        super().__init__()
        self.focal_level = focal_level
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, groups=dim, padding=k // 2, bias=False), nn.GELU())
            for k in (focal_factor * i + focal_window for i in range(focal_level))
        )

    def forward(self, x):  # [B, H, W, C]
        C = x.shape[-1]
        q, ctx, gates = torch.split(self.f(x).permute(0, 3, 1, 2), (C, C, self.focal_level + 1), 1)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        ctx_all = ctx_all + self.act(ctx.mean((2, 3), keepdim=True)) * gates[:, self.focal_level :]
        ctx_all = ctx_all / (self.focal_level + 1)  # SCALING_MODULATOR
        return self.proj((q * self.h(ctx_all)).permute(0, 2, 3, 1))


class FocalBlock(nn.Module):
    """focal_dw block, post-LN with layer scale (SEEM FocalT config)."""

    def __init__(self, dim, focal_level=3, focal_window=3, mlp_ratio=4.0, depthwise: bool = True):
        super().__init__()
        self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if depthwise else _Zero()
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(dim, focal_level, focal_window)
        self.dw2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if depthwise else _Zero()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim)
        self.gamma_1 = nn.Parameter(1e-4 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(1e-4 * torch.ones(dim))

    def forward(self, x):  # [B, C, H, W] -> [B, C, H, W]
        x = x + self.dw1(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm1(x + self.gamma_1 * self.modulation(x))
        x = x.permute(0, 3, 1, 2)
        x = (x + self.dw2(x)).permute(0, 2, 3, 1)
        x = self.norm2(x + self.gamma_2 * self.mlp(x))
        return x.permute(0, 3, 1, 2)


class _Zero(nn.Module):
    """Stands in for SEEM's depthwise convs in the plain-FocalNet form (``x + 0``)."""

    def forward(self, x):
        return torch.zeros_like(x)


class FocalStage(nn.Module):
    def __init__(self, dim, depth, downsample: bool, overlap: bool = True, **block):
        super().__init__()
        self.blocks = nn.ModuleList(FocalBlock(dim, **block) for _ in range(depth))
        self.downsample = PatchEmbed(dim, 2 * dim, stem=False, overlap=overlap) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x  # the stage output; the next stage downsamples it (SEEM's BasicLayer returns both)


class SeemFocalNet(nn.Module):
    """``forward_features`` = the last stage normed by ``norm3`` (SEEM's ``res5``), [B, C, H, W]."""

    def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3), focal_windows=(3, 3, 3, 3),
                 conv_embed: bool = True, depthwise: bool = True):
        """SEEM's FocalT config; ``conv_embed=False, depthwise=False`` is the plain FocalNet-T (LRF) skeleton."""
        super().__init__()
        self.patch_embed = PatchEmbed(3, embed_dim, stem=True, overlap=conv_embed)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.layers = nn.ModuleList(
            FocalStage(dims[i], d, i < len(depths) - 1, overlap=conv_embed, focal_level=focal_levels[i],
                       focal_window=focal_windows[i], depthwise=depthwise)
            for i, d in enumerate(depths)
        )
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self.num_features = dims[-1]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear) and not m.weight.is_meta:
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward_features(self, x):
        x = self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = layer.downsample(x)
        last = getattr(self, f"norm{len(self.layers) - 1}")
        return last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@register_loader("seem")
class SeemLoader(BaseLoader):
    default_blocks = "layers"

    def data_config(self, entry):
        # SEEM's INPUT.PIXEL_MEAN/STD are ImageNet's (in 0-255 units); 224-px classification input
        return {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}

    def build(self, entry, weights, img_size):
        state = None
        if weights.kind != "random":  # read the file first: a wrong one fails before the build
            from medfm.backbones.remap import REMAPS

            try:
                state = REMAPS.get(entry.remap or "seem_backbone")(torch_load(weights.path), None)
            except RuntimeError as exc:
                raise wrong_weights(entry, weights, exc) from None
        net = seeded(lambda: SeemFocalNet(**entry.model_kwargs))
        return net if state is None else load_strict(net, state, entry, weights)

    def tokens(self, net, x):
        return TokenOutput(prefix=None, patches=net.forward_features(x).flatten(2).transpose(1, 2))

    def cutoff_tokens(self, net, entry, out, index):
        """Stage ``index`` normed by its own ``norm{index}``: SEEM's ``res{index + 2}`` output, which study 1 reads
        for ``drop_cutoff`` (``defaults/models.py`` @02db977, the ``focal`` branch of ``Classifier.forward``)."""
        normed = getattr(net, f"norm{index}")(out.permute(0, 2, 3, 1))
        return TokenOutput(prefix=None, patches=normed.flatten(1, 2))
