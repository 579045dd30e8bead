"""Batched view augmentation on the training device (``data.gpu_augment=true``).

The CPU (data-loader workers) decodes, random-resized-crops and resizes each image to a uint8 tensor and
draws every random parameter of the rest of the view pipeline from torch's RNG, so a sample's augmentation
stays a function of (seed, epoch, index) exactly as in the PIL path. The device then applies, to the whole
batch at once, what :func:`~ssl_lightning.transforms.views.view_pipeline` applies per image with PIL:
horizontal flip, colour jitter (brightness, contrast, saturation, hue in a random order per sample, as
torchvision's ``ColorJitter``), grayscale, Gaussian blur (per-sample sigma, the same kernel size, reflect
padding), solarisation (threshold 128/255) and normalisation. The distributions match the PIL path; pixel
values differ only by the PIL path's rounding to uint8 after each operation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

from ssl_lightning.transforms.views import MultiViewTransform, ViewSpec, blur_kernel_size

# per-sample parameters, one row per view: flip, jitter on, brightness, contrast, saturation, hue factors,
# the jitter order (4 op indices), grayscale, blur on, sigma, solarise
FLIP, JITTER, B, C, S, H, ORDER, GRAY, BLUR, SIGMA, SOLAR = 0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13
NUM_PARAMS = 14
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what PIL's convert("L") and torchvision's rgb_to_grayscale use


def draw_params(spec: ViewSpec) -> torch.Tensor:
    """The random parameters of one view after its crop, from one draw of torch's RNG: (NUM_PARAMS,) float.

    14 uniforms: 5 coin flips (flip, jitter, grey, blur, solarise), the brightness / contrast / saturation
    factors in ``[max(0, 1 - s), 1 + s]`` and the hue shift in ``[-h, h]`` (torchvision's ColorJitter
    ranges), the blur sigma, and 4 keys whose argsort is the jitter order (a uniform random permutation).
    """
    u = torch.rand(14).tolist()
    b, c, s, h = spec.jitter
    lo_hi = [(max(0.0, 1 - x), 1 + x) for x in (b, c, s)]
    order = sorted(range(4), key=lambda i: u[10 + i])
    return torch.tensor([
        float(u[0] < spec.hflip_prob), float(u[1] < spec.jitter_prob),
        *(lo + (hi - lo) * u[5 + i] for i, (lo, hi) in enumerate(lo_hi)), -h + 2 * h * u[8],
        *map(float, order),
        float(u[2] < spec.grayscale_prob), float(u[3] < spec.blur_prob),
        spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[9], float(u[4] < spec.solarize_prob),
    ])


class CropViews:
    """CPU half of ``data.gpu_augment``: PIL image -> list of ``(uint8 crop (3, S, S), params (NUM_PARAMS,))``
    per view. Keeps :class:`MultiViewTransform`'s ``view_sizes`` / ``num_views``."""

    def __init__(self, transform: MultiViewTransform):
        self.specs = transform.view_specs
        self.crops = [T.RandomResizedCrop(s.size, scale=tuple(s.crop_scale), antialias=True) for s in self.specs]
        self.view_sizes, self.num_views = transform.view_sizes, transform.num_views

    def __call__(self, image: Image.Image) -> list[tuple[torch.Tensor, torch.Tensor]]:
        image = image.convert("RGB")
        return [(pil_to_tensor(crop(image)), draw_params(spec)) for crop, spec in zip(self.crops, self.specs)]


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def channel_constant(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """``values`` as a (1, C, 1, 1) tensor on ``like``'s device and dtype, made once per (values, device, dtype)
    by fill kernels (the values travel as kernel arguments): no host-to-device copy, not even the first time."""
    key = (tuple(values), like.device, like.dtype)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = torch.stack([torch.full((), float(v), device=like.device, dtype=like.dtype)
                                           for v in key[0]]).view(1, -1, 1, 1)
    return t


def _gray(x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 1, H, W)
    return (x * channel_constant(_LUMA, x)).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, y: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * y).clamp(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.max(dim=1).values, x.min(dim=1).values
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack([torch.stack(c, dim=1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table.gather(0, i.unsqueeze(0).unsqueeze(2).expand(1, *table.shape[1:])).squeeze(0)


def adjust(x: torch.Tensor, op: int, factor: torch.Tensor) -> torch.Tensor:
    """One colour-jitter operation with a per-sample factor (B, 1, 1, 1), as torchvision's adjust_*."""
    if op == 0:  # brightness
        return (x * factor).clamp(0, 1)
    if op == 1:  # contrast: blend with the mean grey level of the image
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), factor)
    if op == 2:  # saturation: blend with the grey image
        return _blend(x, _gray(x), factor)
    hsv = _rgb_to_hsv(x)  # hue: rotate the hue channel
    hsv = torch.cat([(hsv[:, :1] + factor) % 1.0, hsv[:, 1:]], dim=1)
    return _hsv_to_rgb(hsv)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (B,), reflect padding (torchvision's)."""
    n, c, h, w = x.shape
    r = torch.arange(kernel, device=x.device, dtype=x.dtype) - (kernel - 1) / 2
    k = torch.exp(-0.5 * (r.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, kernel)
    pad = kernel // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel, 1), groups=n * c)
    return y.view(n, c, h, w)


def _apply_to(x: torch.Tensor, on: torch.Tensor, fn, params: torch.Tensor, grouped: bool) -> torch.Tensor:
    """``fn(x, params)`` for the samples where ``on`` (B,) holds, ``x`` for the others. ``grouped``: only those
    samples are computed (gathered, transformed, scattered back): the CPU path, where compute is scarce and
    a data-dependent shape costs nothing. Otherwise the whole batch is computed and selected, with shapes
    that never depend on the data: no host synchronisation in the training step on a GPU."""
    if not grouped:
        return torch.where(on.view(-1, 1, 1, 1), fn(x, params), x)
    rows = on.nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    return x.index_copy(0, rows, fn(x.index_select(0, rows), params.index_select(0, rows)))


def _blend_stage(x: torch.Tensor, op: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """One of brightness (op 0), contrast (1) or saturation (2) per sample, or nothing (-1), as one blend
    ``clamp(f x + (1 - f) ref)`` with ref = 0, the image's mean grey level or its grey image (torchvision's
    adjust_brightness / adjust_contrast / adjust_saturation). Nothing is the factor 1: exact on [0, 1]."""
    view = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    factor = torch.where(op == 0, params[:, B], torch.where(op == 1, params[:, C], torch.where(op == 2, params[:, S], 1.0)))
    gray = _gray(x)  # (B, 1, H, W)
    ref = torch.where(view(op == 1), gray.mean(dim=(1, 2, 3), keepdim=True), torch.where(view(op == 2), gray, 0.0))
    return _blend(x, ref, view(factor))


def _jitter_fixed_shapes(x: torch.Tensor, params: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Colour jitter on the whole batch with shapes that never depend on the data, each sample in its own op
    order, computing each op once per stage instead of every op at every position.

    Brightness, contrast and saturation are all blends (:func:`_blend_stage`), so one blend per position
    applies whichever of them each sample has there. Hue (an RGB -> HSV -> RGB round trip, the costly op) is
    done once: the samples' orders are aligned on their hue position, with up to 3 blend stages before it
    (sample i's ops before its hue, right-aligned) and up to 3 after. Without hue, 4 blend stages. This is
    6 blends + 1 HSV round trip per view where one full-batch op per (position, op) was 12 + 4."""
    order = params[:, ORDER : ORDER + 4].long()  # (B, 4): the op at each position
    none = torch.full_like(order[:, 0], -1)
    if spec.jitter[3] == 0:  # no hue op: the 4 positions as they are
        for position in range(4):
            x = _blend_stage(x, torch.where(order[:, position] == 3, none, order[:, position]), params)
        return x
    hue_at = (order == 3).long().argmax(dim=1)  # (B,) the hue's position
    for stage in range(-3, 4):  # position hue_at + stage; 0 is the hue itself
        if stage == 0:
            x = adjust(x, 3, params[:, H].view(-1, 1, 1, 1))
            continue
        position = hue_at + stage
        valid = (position >= 0) & (position <= 3)
        op = order.gather(1, position.clamp(0, 3)[:, None]).squeeze(1)
        x = _blend_stage(x, torch.where(valid, op, none), params)
    return x


def _jitter(x: torch.Tensor, params: torch.Tensor, spec: ViewSpec, grouped: bool) -> torch.Tensor:
    """Colour jitter with each sample's own factors and op order (ORDER: the op at each of the 4 positions).
    ``grouped``: each (position, op) on the samples that have that op there (every sample gets each op
    once); otherwise :func:`_jitter_fixed_shapes`."""
    if not grouped:
        return _jitter_fixed_shapes(x, params, spec)
    for position in range(4):
        for op, index in enumerate((B, C, S, H)):
            if spec.jitter[op] == 0:
                continue
            here = params[:, ORDER + position] == op
            x = _apply_to(x, here, lambda y, p, op=op, index=index: adjust(y, op, p[:, index].view(-1, 1, 1, 1)),
                          params, grouped)
    return x


def augment_views(crops: torch.Tensor, params: torch.Tensor, spec: ViewSpec, mean: Sequence[float],
                  std: Sequence[float], grouped: bool | None = None) -> torch.Tensor:
    """uint8 crops (B, 3, S, S) and their parameters (B, NUM_PARAMS) -> normalised float views (B, 3, S, S).

    ``grouped`` (default: on the CPU) computes each random operation only on the samples it applies to; both
    ways give the same views."""
    x = crops.float() / 255.0
    params = params.to(x.device, x.dtype)
    grouped = x.device.type == "cpu" if grouped is None else grouped
    col = lambda i: params[:, i].view(-1, 1, 1, 1)  # noqa: E731

    x = torch.where(col(FLIP) > 0, x.flip(-1), x)
    if spec.jitter_prob > 0:
        x = _apply_to(x, params[:, JITTER] > 0, lambda y, p: _jitter(y, p, spec, grouped), params, grouped)
    if spec.grayscale_prob > 0:
        x = _apply_to(x, params[:, GRAY] > 0, lambda y, p: _gray(y).expand_as(y), params, grouped)
    if spec.blur_prob > 0:
        kernel = blur_kernel_size(spec.size)
        x = _apply_to(x, params[:, BLUR] > 0, lambda y, p: gaussian_blur(y, p[:, SIGMA], kernel), params, grouped)
    if spec.solarize_prob > 0:
        x = torch.where((col(SOLAR) > 0) & (x >= 128 / 255), 1.0 - x, x)
    return (x - channel_constant(mean, x)) / channel_constant(std, x)


class DeviceViews:
    """Device half of ``data.gpu_augment``: the batched views ``[(crops (B, 3, S, S), params (B, P)), ...]``
    -> ``[views (B, 3, S, S), ...]``, one pipeline per view spec."""

    def __init__(self, transform: MultiViewTransform):
        self.specs = transform.view_specs
        self.mean, self.std = transform.mean, transform.std

    def __call__(self, views: Sequence) -> list[torch.Tensor]:
        return [augment_views(crops, params, spec, self.mean, self.std) for (crops, params), spec in zip(views, self.specs)]
