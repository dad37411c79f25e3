"""PNG pictures for an evaluation report (matplotlib Agg; image panels are written with imsave, which is fast)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mgeo_ros.eval.metrics import boundary_map  # noqa: E402

ERROR_RANGE = 0.5          # AbsRel colour scale of the error map: 0 … 50 %


def depth_range(gt: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Colour range shared by predicted and GT depth: 2nd–98th percentile of the valid GT."""
    values = gt[mask & np.isfinite(gt)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [2, 98])
    return float(lo), float(max(hi, lo + 1e-6))


def _colorize(values: np.ndarray, lo: float, hi: float, cmap: str) -> np.ndarray:
    """H×W -> H×W×3 uint8; non-finite pixels black."""
    norm = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    rgb = (plt.get_cmap(cmap)(np.nan_to_num(norm))[..., :3] * 255).astype(np.uint8)
    rgb[~np.isfinite(values)] = 0
    return rgb


def save_frame_panels(out_dir: Path, stem: str, rgb: np.ndarray, pred_depth: np.ndarray, gt_depth: np.ndarray,
                      mask: np.ndarray, boundary_ratio: float = 1.15) -> list[Path]:
    """input, predicted depth, GT depth, AbsRel error map and boundary overlay PNGs for one frame.

    The boundary overlay greys the input and paints occlusion edges (near side, ratio `boundary_ratio`): GT only
    green, prediction only red, both yellow."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = depth_range(gt_depth, mask)
    with np.errstate(invalid='ignore', divide='ignore'):
        error = np.where(mask, np.abs(pred_depth - gt_depth) / gt_depth, np.nan)
    grey = rgb.astype(np.float32).mean(axis=-1, keepdims=True) * 0.5
    overlay = np.repeat(grey, 3, axis=-1).astype(np.uint8)
    gt_edges = boundary_map(gt_depth, boundary_ratio, mask)
    pred_edges = boundary_map(pred_depth, boundary_ratio, mask)
    overlay[gt_edges & ~pred_edges] = (0, 220, 0)
    overlay[pred_edges & ~gt_edges] = (230, 0, 0)
    overlay[gt_edges & pred_edges] = (255, 230, 0)
    panels = {
        'input': rgb,
        'pred_depth': _colorize(pred_depth, lo, hi, 'turbo'),
        'gt_depth': _colorize(np.where(mask, gt_depth, np.nan), lo, hi, 'turbo'),
        'error': _colorize(error, 0.0, ERROR_RANGE, 'magma'),
        'boundary': overlay,
    }
    paths = []
    for name, image in panels.items():
        path = out_dir / f'{stem}_{name}.png'
        plt.imsave(path, np.ascontiguousarray(image))
        paths.append(path)
    return paths


def save_error_histogram(path: Path, errors: dict[str, np.ndarray]) -> Path:
    """Histogram of per-pixel AbsRel |d−d*|/d* for each named prediction (model variants and baselines)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    bins = np.linspace(0.0, 1.0, 51)
    for name, values in errors.items():
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(np.clip(values, 0.0, 1.0), bins=bins, histtype='step', density=True, label=name, linewidth=1.5)
    ax.set_xlabel('per-pixel AbsRel |d - d*| / d*  (clipped at 1)')
    ax.set_ylabel('density')
    ax.set_title('depth error distribution')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_scale_over_time(path: Path, series: dict[str, np.ndarray], reference: np.ndarray | None = None) -> Path:
    """Metric scale per frame for each run; with `reference`, the GT/pred median-depth ratio on a second axis."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, values in series.items():
        ax.plot(np.arange(len(values)), values, marker='.', label=f'metric scale ({name})')
    ax.set_xlabel('frame')
    ax.set_ylabel('metric scale')
    if reference is not None and len(reference):
        ax2 = ax.twinx()
        ax2.plot(np.arange(len(reference)), reference, color='grey', linestyle='--',
                 label='GT / pred median depth')
        ax2.set_ylabel('GT / pred median depth')
        ax2.legend(loc='lower right', fontsize=8)
    ax.legend(loc='upper left', fontsize=8)
    ax.set_title('metric scale over the sequence')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
