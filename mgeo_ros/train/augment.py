"""Training augmentation that keeps intrinsics exact: horizontal flip, FOV crop/uncrop (DMD) at a chosen output
aspect ratio, resize to the batch size (depth by nearest, never blended across edges), colour jitter and blur.

Geometry is applied with the contract's exact transforms (`Intrinsics.flipped_horizontally/cropped/resized`):
the crop window has integer offsets and size, and depth is resampled with pixel-centre-exact nearest neighbour.
Typical use per batch:

    rng = np.random.default_rng(seed)
    w, h, num_tokens = sample_batch_shape(rng, cfg)
    batch = [augment(s, rng, (w, h), cfg) for s in samples]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mgeo_ros.train.data.sample import Sample


@dataclass
class AugmentConfig:
    """Ranges of every random choice. fov_scale: window size / image size (< 1 crops = narrower FOV, > 1 uncrops =
    wider FOV with an invalid, noise-filled border). aspect_ratio: output W/H, drawn log-uniformly per batch.
    num_tokens: ViT token count, drawn per batch; the output has num_tokens * pixels_per_token pixels."""

    fov_scale: tuple[float, float] = (0.8, 1.5)
    aspect_ratio: tuple[float, float] = (0.5, 2.0)
    num_tokens: tuple[int, int] = (1200, 2500)
    pixels_per_token: int = 14 * 14
    size_multiple: int = 2
    flip_prob: float = 0.5
    brightness: float = 0.2      # multiplicative, ±
    contrast: float = 0.2
    saturation: float = 0.2
    hue_deg: float = 6.0
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)


@dataclass
class AugmentParams:
    """One concrete augmentation. window = (x0, y0, w, h) in source pixels after the flip (may exceed the image)."""

    flip: bool
    window: tuple[int, int, int, int]
    out_size: tuple[int, int]
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue_deg: float = 0.0
    blur_sigma: float = 0.0
    noise_seed: int = 0


def sample_batch_shape(rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> tuple[int, int, int]:
    """(W, H, num_tokens) for one batch: aspect log-uniform in cfg.aspect_ratio, tokens uniform in cfg.num_tokens."""
    lo, hi = cfg.aspect_ratio
    aspect = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    tokens = int(rng.integers(cfg.num_tokens[0], cfg.num_tokens[1] + 1))
    area = tokens * cfg.pixels_per_token
    m = max(1, cfg.size_multiple)
    w = max(m, int(round(math.sqrt(area * aspect) / m)) * m)
    h = max(m, int(round(math.sqrt(area / aspect) / m)) * m)
    return w, h, tokens


def sample_params(rng: np.random.Generator, image_size: tuple[int, int], out_size: tuple[int, int],
                  cfg: AugmentConfig = AugmentConfig()) -> AugmentParams:
    """Random parameters for an image of image_size = (W, H) producing out_size = (W, H)."""
    w, h = image_size
    ow, oh = out_size
    scale = rng.uniform(*cfg.fov_scale)
    # window with the output's aspect ratio and scale² times the image area
    aw = math.sqrt(w * h * ow / oh) * scale
    cw, ch = max(2, int(round(aw))), max(2, int(round(aw * oh / ow)))

    def offset(size, win):
        if win <= size:
            return int(rng.integers(0, size - win + 1))
        return -int(rng.integers(0, win - size + 1))  # uncrop: the image lands anywhere inside the window

    return AugmentParams(
        flip=bool(rng.random() < cfg.flip_prob), window=(offset(w, cw), offset(h, ch), cw, ch), out_size=(ow, oh),
        brightness=1.0 + rng.uniform(-cfg.brightness, cfg.brightness),
        contrast=1.0 + rng.uniform(-cfg.contrast, cfg.contrast),
        saturation=1.0 + rng.uniform(-cfg.saturation, cfg.saturation),
        hue_deg=rng.uniform(-cfg.hue_deg, cfg.hue_deg),
        blur_sigma=rng.uniform(*cfg.blur_sigma) if rng.random() < cfg.blur_prob else 0.0,
        noise_seed=int(rng.integers(0, 2**31)))


def augment(sample: Sample, rng: np.random.Generator, out_size: tuple[int, int],
            cfg: AugmentConfig = AugmentConfig()) -> Sample:
    """Random augmentation of one sample to out_size = (W, H)."""
    h, w = sample.depth.shape
    return apply(sample, sample_params(rng, (w, h), out_size, cfg))


def apply(sample: Sample, p: AugmentParams) -> Sample:
    """Apply concrete parameters: flip -> crop/uncrop window -> resize -> colour. Intrinsics follow exactly."""
    rgb, depth = sample.rgb, np.where(sample.mask, sample.depth, np.nan).astype(np.float32)
    intr = sample.intrinsics
    if p.flip:
        rgb, depth, intr = rgb[:, ::-1], depth[:, ::-1], intr.flipped_horizontally()
    x0, y0, cw, ch = p.window
    rgb, depth, inside = _window(rgb, depth, x0, y0, cw, ch, p.noise_seed)
    intr = intr.cropped(x0, y0, cw, ch)
    ow, oh = p.out_size
    if (ow, oh) != (cw, ch):
        rgb, depth = resize_pair(rgb, depth, (ow, oh))
        inside = cv2.resize(inside.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)
        intr = intr.resized(ow, oh)
    rgb = _colour(rgb, p)
    if p.blur_sigma > 0:
        rgb = cv2.GaussianBlur(rgb, (0, 0), p.blur_sigma)
    depth[~inside] = np.nan
    mask = np.isfinite(depth)
    return Sample(np.ascontiguousarray(rgb), depth, intr, mask, sample.metric, sample.source)


def resize_pair(rgb: np.ndarray, depth: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to size = (W, H): colour with area averaging (down) or bilinear (up); depth by pixel-centre nearest,
    so no depth value is ever blended across an edge. Pair with `Intrinsics.resized(W, H)`."""
    h, w = depth.shape
    down = size[0] < w or size[1] < h
    rgb_out = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
    return rgb_out, cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST_EXACT)


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """A Sample resized to size = (W, H) with exact intrinsics (for batching at a fixed size)."""
    depth = np.where(sample.mask, sample.depth, np.nan).astype(np.float32)
    rgb, depth = resize_pair(sample.rgb, depth, size)
    return Sample(rgb, depth, sample.intrinsics.resized(*size), np.isfinite(depth), sample.metric, sample.source)


def _window(rgb, depth, x0, y0, cw, ch, seed):
    """Crop (x0, y0, cw, ch); parts outside the image get noise colour and NaN depth. Returns rgb, depth, inside."""
    h, w = depth.shape
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + cw, w), min(y0 + ch, h)
    if x0 >= 0 and y0 >= 0 and x0 + cw <= w and y0 + ch <= h:
        return rgb[y0:y0 + ch, x0:x0 + cw].copy(), depth[y0:y0 + ch, x0:x0 + cw].copy(), np.ones((ch, cw), bool)
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(max(1, ch // 4), max(1, cw // 4), 3), dtype=np.uint8)
    out_rgb = cv2.resize(noise, (cw, ch), interpolation=cv2.INTER_LINEAR)
    out_d = np.full((ch, cw), np.nan, np.float32)
    inside = np.zeros((ch, cw), bool)
    if sx1 > sx0 and sy1 > sy0:
        out_rgb[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out_d[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = depth[sy0:sy1, sx0:sx1]
        inside[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = True
    return out_rgb, out_d, inside


def _colour(rgb: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter on uint8 RGB."""
    if p.brightness == 1.0 and p.contrast == 1.0 and p.saturation == 1.0 and p.hue_deg == 0.0:
        return rgb
    x = rgb.astype(np.float32) * p.brightness
    mean = x.mean()
    x = (x - mean) * p.contrast + mean
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * p.saturation
    x = np.clip(x, 0, 255).astype(np.uint8)
    if p.hue_deg:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(p.hue_deg / 2))) % 180).astype(np.uint8)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return x
