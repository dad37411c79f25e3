"""Training logs: a CSV of every logged step, optional TensorBoard scalars, and the loss-curve PNG."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TERM_COLUMNS = ('global', 'local_4', 'local_16', 'local_64', 'edge', 'normal', 'mask', 'metric_scale')
COLUMNS = ('step', 'loss') + TERM_COLUMNS + ('lr', 'encoder_lr', 'samples_per_s', 'elapsed_s')


class TrainLog:
    """Appends rows to out/log.csv (kept across resumes) and mirrors them to TensorBoard under out/tb."""

    def __init__(self, out: Path, tensorboard: bool = True):
        self.csv_path = out / 'log.csv'
        new = not self.csv_path.exists()
        self._file = self.csv_path.open('a', newline='')
        self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction='ignore')
        if new:
            self._csv.writeheader()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(log_dir=str(out / 'tb'))
            except ImportError:  # tensorboard is optional at run time
                self._tb = None

    def row(self, values: dict[str, float]) -> None:
        self._csv.writerow({k: values.get(k, '') for k in COLUMNS})
        self._file.flush()
        if self._tb is not None:
            step = int(values['step'])
            for key, value in values.items():
                if key != 'step' and value != '' and value is not None:
                    group = 'loss' if key == 'loss' or key in TERM_COLUMNS else 'train'
                    self._tb.add_scalar(f'{group}/{key}', float(value), step)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f'{prefix}/{key}', float(value), step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_log(csv_path: Path) -> dict[str, list[float]]:
    columns: dict[str, list[float]] = {}
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                columns.setdefault(key, []).append(float(value) if value not in ('', None) else float('nan'))
    return columns


def _smooth(values: list[float], frac: float = 0.05) -> np.ndarray:
    """Centred moving average over ~5% of the rows (NaN-aware), so trends show through per-batch noise."""
    v = np.asarray(values, dtype=np.float64)
    k = max(1, int(len(v) * frac) | 1)
    ok = np.isfinite(v)
    kernel = np.ones(k)
    num = np.convolve(np.where(ok, v, 0.0), kernel, mode='same')
    den = np.convolve(ok.astype(np.float64), kernel, mode='same')
    with np.errstate(invalid='ignore', divide='ignore'):
        return num / den


def plot_loss_curve(csv_path: Path, png_path: Path) -> None:
    """Total loss and each term against step (log y), from the CSV."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    data = read_log(csv_path)
    steps = data.get('step', [])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        axes[0].plot(steps, data['loss'], color='0.75', lw=1, label='total (per log row)')
        axes[0].plot(steps, _smooth(data['loss']), color='k', lw=1.8, label='total (moving average)')
        axes[0].set_yscale('log')
        for term in TERM_COLUMNS:
            values = data.get(term, [])
            if any(v == v and v > 0 for v in values):
                axes[1].plot(steps, _smooth(values), lw=1.2, label=term)
        axes[1].set_yscale('log')
    for ax, title in zip(axes, ('total loss', 'loss terms (unweighted, moving average)')):
        ax.set_xlabel('step')
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
