"""A compact pure-PyTorch VMamba (SS2D selective-scan blocks) that loads the official checkpoints.

Module and parameter names follow ``MzeroMiko/VMamba`` (``classification/models/vmamba.py``) for the
VMamba v2 models, so ``vssm_base_0229_ckpt_epoch_237.pth`` loads with ``strict=True``: channel-first
``LayerNorm2d``, ``Linear2d`` projections, the z-free SS2D (``forward_type='v3noz'``), the
two-conv stem (``patchembed v2``) and strided 3×3 downsampling (``downsample v3``).

The selective scan runs as a chunked cumulative sum in float64 (exact up to rounding, no custom
kernel); ``selective_scan_loop`` is the step-by-step reference it is tested against. A fused CUDA
kernel (``mamba_ssm``) is used instead when it is installed and the input is on a GPU.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import BaseLoader, load_strict, register_loader, seeded, torch_load


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
    """A 1×1 convolution holding its weight as a Linear's (so checkpoints store [out, in])."""

    def forward(self, x):
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        w = state_dict.get(prefix + "weight")
        if w is not None and w.ndim == 4:
            state_dict[prefix + "weight"] = w.flatten(1)
        return super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _fused_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        return selective_scan_fn
    except Exception:  # not installed, or built for another torch/CUDA
        return None


def selective_scan_loop(u, delta, A, B, C, D, delta_bias):
    """Reference selective scan, one step at a time. u, delta: [b, KD, L]; A: [KD, N]; B, C: [b, K, N, L]."""
    b, kd, L = u.shape
    g = kd // B.shape[1]
    delta = F.softplus(delta + delta_bias[:, None])
    Bx, Cx = B.repeat_interleave(g, 1), C.repeat_interleave(g, 1)  # [b, KD, N, L]
    h = u.new_zeros(b, kd, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        ys.append((h * Cx[..., t]).sum(-1))
    return torch.stack(ys, -1) + D[:, None] * u


def selective_scan_chunked(u, delta, A, B, C, D, delta_bias, chunk: int = 32):
    """The same recurrence h_t = a_t h_{t-1} + b_t solved per chunk by cumulative sums.

    Within a chunk, h_t = exp(S_t) (h_0 + Σ_{s≤t} b_s exp(-S_s)) with S the cumulative sum of
    log a_t = Δ_t A ≤ 0; float64 keeps exp(-S) finite for any realistic Δ over 32 steps.
    """
    b, kd, L = u.shape
    g = kd // B.shape[1]
    delta = F.softplus(delta.float() + delta_bias.float()[:, None])
    log_a = (delta[:, :, None, :] * A.float()[None, :, :, None]).double()  # [b, KD, N, L]
    bu = ((delta * u.float())[:, :, None, :] * B.float().repeat_interleave(g, 1)).double()
    Cx = C.float().repeat_interleave(g, 1)
    h = torch.zeros(b, kd, A.shape[1], dtype=torch.float64, device=u.device)
    ys = []
    for s in range(0, L, chunk):
        S = log_a[..., s : s + chunk].cumsum(-1)
        hs = torch.exp(S) * (h[..., None] + (bu[..., s : s + chunk] * torch.exp(-S)).cumsum(-1))
        h = hs[..., -1]
        ys.append((hs.float() * Cx[..., s : s + chunk]).sum(2))
    return (torch.cat(ys, -1) + D.float()[:, None] * u.float()).to(u.dtype)


def cross_scan(x):
    """[B, C, H, W] -> [B, 4, C, HW]: row-major, column-major, and both reversed."""
    x0, x1 = x.flatten(2), x.transpose(2, 3).flatten(2)
    return torch.stack([x0, x1, x0.flip(-1), x1.flip(-1)], 1)


def cross_merge(ys, H, W):
    """Inverse of ``cross_scan`` summed over the 4 directions: [B, 4, C, HW] -> [B, C, HW]."""
    B, _, C, L = ys.shape
    y = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    return y[:, 0] + y[:, 1].view(B, C, W, H).transpose(2, 3).reshape(B, C, L)


class SS2D(nn.Module):
    """2-D selective scan (z-free 'v3noz' form), channel-first."""

    def __init__(self, d_model, d_state=1, ssm_ratio=2.0, d_conv=3, conv_bias=False, k_group=4):
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        self.dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.in_proj = Linear2d(d_model, d_inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
        self.x_proj_weight = nn.Parameter(torch.empty(k_group, self.dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k_group, d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k_group, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k_group * d_inner, d_state))
        self.Ds = nn.Parameter(torch.ones(k_group * d_inner))
        self.out_norm = LayerNorm2d(d_inner)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)
        self.dropout = nn.Identity()
        self._init_ssm(d_inner)

    def _init_ssm(self, d_inner, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4):
        """Mamba's initialisation ('v0'): Δ log-uniform in [dt_min, dt_max], A = -[1..N]."""
        if self.x_proj_weight.is_meta:
            return
        with torch.no_grad():
            bound = d_inner**-0.5
            nn.init.uniform_(self.x_proj_weight, -bound, bound)
            nn.init.uniform_(self.dt_projs_weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
            dt = torch.exp(torch.rand_like(self.dt_projs_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_floor)
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.A_logs.shape[0], 1))

    def forward(self, x):
        x = self.act(self.conv2d(self.in_proj(x)))
        B, D, H, W = x.shape
        K, N, R = self.x_proj_weight.shape[0], self.d_state, self.dt_rank
        xs = cross_scan(x)  # [B, K, D, L]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        args = (xs.reshape(B, K * D, -1), dts.reshape(B, K * D, -1), -torch.exp(self.A_logs.float()),
                Bs.contiguous(), Cs.contiguous(), self.Ds.float())
        fused = _fused_scan() if x.is_cuda else None
        if fused is not None:
            ys = fused(*args, z=None, delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True)
        else:
            ys = selective_scan_chunked(*args, delta_bias=self.dt_projs_bias.reshape(-1))
        y = cross_merge(ys.view(B, K, D, -1).to(x.dtype), H, W).view(B, D, H, W)
        return self.dropout(self.out_proj(self.out_norm(y)))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = Linear2d(dim, hidden), nn.GELU(), Linear2d(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    def __init__(self, dim, mlp_ratio=4.0, **ssm):
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, **ssm)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.op(self.norm(x))
        return x + self.mlp(self.norm2(x))


def _downsample(dim, out_dim):
    return nn.Sequential(nn.Identity(), nn.Conv2d(dim, out_dim, 3, stride=2, padding=1), nn.Identity(), LayerNorm2d(out_dim))


class VSSM(nn.Module):
    """VMamba v2 (channel-first). ``forward_features`` returns the normed last-stage map [B, C, H, W]."""

    def __init__(self, depths=(2, 2, 15, 2), dims=128, num_classes=0, mlp_ratio=4.0, **ssm):
        super().__init__()
        dims = [dims * 2**i for i in range(len(depths))] if isinstance(dims, int) else list(dims)
        self.num_features = dims[-1]
        self.patch_embed = nn.Sequential(
            nn.Conv2d(3, dims[0] // 2, 3, stride=2, padding=1), nn.Identity(), LayerNorm2d(dims[0] // 2), nn.Identity(),
            nn.GELU(), nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1), nn.Identity(), LayerNorm2d(dims[0]),
        )
        self.layers = nn.ModuleList(
            nn.Sequential(OrderedDict(
                blocks=nn.Sequential(*[VSSBlock(dims[i], mlp_ratio, **ssm) for _ in range(depth)]),
                downsample=_downsample(dims[i], dims[i + 1]) if i < len(depths) - 1 else nn.Identity(),
            ))
            for i, depth in enumerate(depths)
        )
        head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.classifier = nn.Sequential(OrderedDict(
            norm=LayerNorm2d(self.num_features), permute=nn.Identity(), avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1), head=head,
        ))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear) and not m.weight.is_meta:
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier.norm(x)

    def forward(self, x):
        x = self.forward_features(x)
        return self.classifier.head(self.classifier.flatten(self.classifier.avgpool(x)))


# The official configuration of VMamba-B (classification/configs/vssm/vmambav2_base_224.yaml).
VMAMBA_CONFIGS = {
    "vssm_base_0229": dict(depths=(2, 2, 15, 2), dims=128, d_state=1, ssm_ratio=2.0, d_conv=3, conv_bias=False),
}


def create_vmamba(name: str, num_classes: int = 0) -> VSSM:
    cfg = dict(VMAMBA_CONFIGS[name])
    return VSSM(depths=cfg.pop("depths"), dims=cfg.pop("dims"), num_classes=num_classes, **cfg)


@register_loader("vmamba")
class VMambaLoader(BaseLoader):
    """The pure-PyTorch VMamba of ``medfm.backbones.vmamba``; official checkpoints hold {'model': ...}."""

    default_blocks = "layers.0.blocks,layers.1.blocks,layers.2.blocks,layers.3.blocks"

    def data_config(self, entry):
        return {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}

    def build(self, entry, weights, img_size):
        net = seeded(lambda: create_vmamba(entry.model_id))
        if weights.kind == "random":
            return net
        state = {k: v for k, v in torch_load(weights.path).items() if not k.startswith("classifier.head.")}
        return load_strict(net, state, entry, weights)

    def tokens(self, net, x):
        return TokenOutput(prefix=None, patches=net.forward_features(x).flatten(2).transpose(1, 2))
