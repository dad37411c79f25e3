"""The trainer: AdamW + warm-up, encoder frozen or at a lower lr, AMP on CUDA, gradient accumulation, DDP,
project-format checkpoints with resume, CSV/TensorBoard logs, held-out evaluation and a loss-curve PNG.

Layout of `cfg.out`:
  config.yaml              the resolved config of the run
  log.csv, tb/             one row per `log_every` steps (step, loss, terms, lr, samples/s)
  checkpoints/step_N/      config.json + model.safetensors (`mgeo_ros.model.save_checkpoint`) + train_state.pt
  latest.txt               name of the newest checkpoint (what --resume reads)
  final/                   the model at the end of training (project format; the EMA weights if ema_decay is set)
  best/                    the evaluated model with the best `keep_best` score so far, and its eval.json
  loss_curve.png, eval.jsonl, summary.json
"""
from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgeo_ros.train.batching import BatchStream
from mgeo_ros.train.config import TrainConfig, save_config
from mgeo_ros.train.distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed
from mgeo_ros.train.holdout import Evaluator
from mgeo_ros.train.logs import TrainLog, plot_loss_curve
from mgeo_ros.train.losses import AlignmentSettings, loss_weights_for, moge_losses

log = logging.getLogger('mgeo.train')

KEEP_CHECKPOINTS = 3
STATE_FILE = 'train_state.pt'


def _deep_merge(base: dict, extra: dict) -> dict:
    """`extra` merged into `base` recursively; a None value deletes the key (e.g. `normal_head: null`)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_training_model(cfg: TrainConfig) -> torch.nn.Module:
    """A fresh preset model, or `init_checkpoint` (project dir or official MoGe-2 model.pt) for fine-tuning."""
    from mgeo_ros.model import build_model, load_checkpoint
    from mgeo_ros.model.configs import preset
    from mgeo_ros.model.vit import LayerScale

    if cfg.init_checkpoint:
        model = load_checkpoint(cfg.init_checkpoint, device='cpu')
    else:
        model = build_model(_deep_merge(preset(cfg.model), cfg.model_overrides))
        if cfg.layer_scale_init is not None:
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, LayerScale):
                        module.gamma.fill_(float(cfg.layer_scale_init))
    return model.float().train()


def is_encoder_param(name: str) -> bool:
    return name.startswith('encoder.')


def lr_factors(cfg: TrainConfig, step: int) -> tuple[float, float]:
    """(heads factor, encoder factor) at `step`: linear warm-up, optional halving every N steps; the encoder is at 0
    for `encoder_frozen_steps`, then ramps linearly over the same number of steps (MoGe-2's backbone schedule)."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    decay = 1.0
    if cfg.lr_halve_every:
        decay = 0.5 ** (max(0, step - cfg.warmup_steps) // int(cfg.lr_halve_every))
    enc = warm * decay
    frozen = int(cfg.encoder_frozen_steps)
    if cfg.freeze_encoder:
        enc = 0.0
    elif frozen > 0:
        enc *= 0.0 if step < frozen else min(1.0, (step - frozen + 1) / frozen)
    return warm * decay, enc


class Trainer:
    """One training run (one process of a DDP job). `run()` trains to `max_steps` and returns a summary dict."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, evaluator: Evaluator | None = None):
        self.cfg = cfg
        self.evaluator = evaluator           # handed in (mgeo train passes eval's metrics); None: no held-out eval
        self.dist: DistInfo = init_distributed(cfg.device)
        self.device = self.dist.device
        if evaluator is None and cfg.eval_count > 0 and self.dist.is_main:
            log.warning('held-out evaluation off: no evaluator was handed in (`mgeo train` hands one in)')
        if cfg.threads and self.device.type == 'cpu':
            torch.set_num_threads(int(cfg.threads))
        torch.manual_seed(cfg.seed)          # identical initial weights on every rank (DDP also broadcasts them)
        self.out = Path(cfg.out)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        model = build_training_model(cfg)
        if cfg.freeze_encoder:
            for name, p in model.named_parameters():
                if is_encoder_param(name):
                    p.requires_grad_(False)
        self.model = model.to(self.device)
        self.ema = None
        if cfg.ema_decay:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = self._optimizer()
        self.amp_dtype = None
        if cfg.amp and self.device.type == 'cuda':
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.amp_dtype == torch.float16)
        self.step = 0
        if resume:
            self._resume()
        self.ddp = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                 find_unused_parameters=True)
        self.rng = np.random.default_rng(cfg.seed + 7 * self.step + 1_000_003 * self.dist.rank)
        self.generator = torch.Generator().manual_seed(cfg.seed + self.step + 31 * self.dist.rank)
        lc = cfg.loss
        self.loss_settings = AlignmentSettings(global_resolution=lc.global_resolution,
                                               local_resolution=lc.local_resolution, local_patches=lc.local_patches,
                                               max_anchors=lc.max_anchors)

    # ---- set-up ---------------------------------------------------------------------------------------------------

    def _optimizer(self) -> torch.optim.Optimizer:
        enc = [p for n, p in self.model.named_parameters() if is_encoder_param(n) and p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if not is_encoder_param(n) and p.requires_grad]
        groups = [{'params': rest, 'lr': self.cfg.lr, 'name': 'heads'}]
        if enc:
            groups.append({'params': enc, 'lr': self.cfg.encoder_lr, 'name': 'encoder'})
        return torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def _set_lr(self) -> tuple[float, float]:
        head_f, enc_f = lr_factors(self.cfg, self.step)
        lrs = {'heads': self.cfg.lr * head_f, 'encoder': self.cfg.encoder_lr * enc_f}
        for group in self.optimizer.param_groups:
            group['lr'] = lrs[group['name']]
        return lrs['heads'], lrs['encoder']

    def _stream(self) -> torch.utils.data.DataLoader:
        cfg = copy.copy(self.cfg)
        cfg.seed = self.cfg.seed + 104_729 * self.step      # a resumed run continues on fresh scenes
        stream = BatchStream(cfg, rank=self.dist.rank, world_size=self.dist.world_size)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.cfg.num_workers,
                                           persistent_workers=self.cfg.num_workers > 0,
                                           prefetch_factor=2 if self.cfg.num_workers > 0 else None)

    # ---- checkpoints ----------------------------------------------------------------------------------------------

    def save(self, name: str | None = None) -> Path | None:
        """Rank 0 writes checkpoints/step_N (model + optimizer state); other ranks only wait at the barrier."""
        from mgeo_ros.model import save_checkpoint

        path = None
        if self.dist.is_main:
            name = name or f'step_{self.step:07d}'
            path = self.out / 'checkpoints' / name
            path.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.model, path)
            state = {'step': self.step, 'optimizer': self.optimizer.state_dict(), 'scaler': self.scaler.state_dict()}
            if self.ema is not None:
                state['ema'] = self.ema.state_dict()
            torch.save(state, path / STATE_FILE)
            (self.out / 'latest.txt').write_text(name + '\n')
            self._prune()
        barrier(self.dist)
        return path

    def _prune(self) -> None:
        ckpts = sorted((self.out / 'checkpoints').glob('step_*'))
        for old in ckpts[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)

    def _resume(self) -> None:
        from mgeo_ros.model import load_checkpoint

        latest = self.out / 'latest.txt'
        if not latest.is_file():
            log.warning('--resume: no %s; starting from scratch', latest)
            return
        path = self.out / 'checkpoints' / latest.read_text().strip()
        loaded = load_checkpoint(str(path), device='cpu')
        self.model.load_state_dict(loaded.state_dict())
        state = torch.load(path / STATE_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state['optimizer'])
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        self.step = int(state['step'])
        if self.ema is not None:
            self.ema.load_state_dict(state['ema'] if 'ema' in state else self.model.state_dict())
        if self.dist.is_main:
            log.info('resumed from %s at step %d', path, self.step)

    # ---- training -------------------------------------------------------------------------------------------------

    def _num_tokens(self) -> int:
        lo, hi = (int(v) for v in self.cfg.num_tokens)
        return int(self.rng.integers(lo, hi + 1))

    def _micro_step(self, batch: dict[str, Any], sync: bool) -> tuple[float, dict[str, float]]:
        dev = self.device
        image = batch['image'].to(dev, non_blocking=True)
        points = batch['points'].to(dev, non_blocking=True)
        mask = batch['mask'].to(dev, non_blocking=True)
        focal = batch['focal'].to(dev)
        metric = batch['metric'].to(dev)
        weights = [loss_weights_for(t, self.cfg.loss.weights) for t in batch['label_type']]
        ctx = self.ddp.no_sync() if (self.dist.enabled and not sync) else _null()
        with ctx:
            with torch.autocast(device_type=dev.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                out = self.ddp(image, num_tokens=self._num_tokens())
            out = {k: v.float() for k, v in out.items()}
            result = moge_losses(out, points, mask, focal, weights, metric, settings=self.loss_settings,
                                 generator=self.generator)
            loss = result.total / self.cfg.accumulation
            self.scaler.scale(loss).backward()
        return float(result.total.detach()), result.terms

    def train_step(self, batches) -> dict[str, float]:
        lr, enc_lr = self._set_lr()
        totals, terms_sum = 0.0, {}
        n = self.cfg.accumulation
        for i in range(n):
            total, terms = self._micro_step(next(batches), sync=i == n - 1)
            totals += total / n
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v / n
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        return {'loss': totals, **terms_sum, 'lr': lr, 'encoder_lr': enc_lr}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(float(self.cfg.ema_decay), (1.0 + self.step) / (10.0 + self.step))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    @property
    def release_model(self) -> torch.nn.Module:
        """The weights that are evaluated and written to final/: the EMA when it is kept, else the live model."""
        return self.ema if self.ema is not None else self.model

    def evaluate(self) -> dict[str, float] | None:
        """Held-out metrics vs the constant baseline (rank 0) from the evaluator handed in; None when none was (said
        once, at construction)."""
        if not self.dist.is_main or self.cfg.eval_count <= 0 or self.evaluator is None:
            return None
        from mgeo_ros.train.holdout import holdout_samples

        if not hasattr(self, '_holdout'):
            size = tuple(self.cfg.eval_size or self.cfg.image_size)
            self._holdout = holdout_samples(self.cfg.eval_count, self.cfg.eval_seed, size, self.cfg.eval_root)
        tokens = int(round(sum(self.cfg.num_tokens) / 2))
        metrics = self.evaluator(self.release_model, self._holdout, tokens)
        metrics['step'] = self.step
        with (self.out / 'eval.jsonl').open('a') as f:
            f.write(json.dumps(metrics) + '\n')
        self._keep_best(metrics)
        return metrics

    def _keep_best(self, metrics: dict[str, float]) -> None:
        """Write the evaluated weights to best/ when `keep_best` improved, so a late, noisy evaluation loses nothing
        (rolling checkpoints keep only the last 3). The record survives --resume."""
        from mgeo_ros.train.holdout import higher_is_better

        key = self.cfg.keep_best                         # a valid evaluation key or None (checked by the config)
        value = metrics.get(key) if key else None
        if value is None or not math.isfinite(value):
            return
        record = self.out / 'best' / 'eval.json'
        if record.is_file():
            old = json.loads(record.read_text()).get(key)
            if old is not None and (value <= old if higher_is_better(key) else value >= old):
                return
        from mgeo_ros.model import save_checkpoint
        save_checkpoint(self.release_model, self.out / 'best')
        record.write_text(json.dumps(metrics))

    def _time_is_up(self, t_start: float) -> bool:
        """Rank 0's clock decides for every rank (ranks stopping at different steps would deadlock DDP)."""
        up = (time.perf_counter() - t_start) / 60.0 >= float(self.cfg.max_minutes)
        if not self.dist.enabled:
            return up
        flag = torch.tensor([1.0 if (up and self.dist.is_main) else 0.0], device=self.device)
        torch.distributed.all_reduce(flag)
        return bool(flag.item() > 0)

    def run(self) -> dict[str, Any]:
        cfg, main = self.cfg, self.dist.is_main
        tlog = None
        if main:
            save_config(cfg, self.out / 'config.yaml')
            tlog = TrainLog(self.out, tensorboard=cfg.tensorboard)
        batches = iter(self._stream())
        bar = None
        if main and cfg.progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.max_steps, initial=self.step, desc='train', dynamic_ncols=True)
        t_start = time.perf_counter()
        t_window, n_window = time.perf_counter(), 0
        samples_per_step = cfg.batch_size * cfg.accumulation * self.dist.world_size
        stats: dict[str, float] = {}
        steps_this_run, rates = 0, []
        last_eval = None
        window: dict[str, list[float]] = {}
        while self.step < cfg.max_steps:
            stats = self.train_step(batches)
            steps_this_run += 1
            n_window += 1
            for key, value in stats.items():
                window.setdefault(key, []).append(value)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f'{stats["loss"]:.4f}')
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                rate = n_window * samples_per_step / max(now - t_window, 1e-9)
                rates.append(rate)
                means = {k: float(np.mean(v)) for k, v in window.items()}     # averaged over the log window
                means['loss'] = all_reduce_mean(means['loss'], self.dist, self.device)
                means.update(lr=stats['lr'], encoder_lr=stats['encoder_lr'])
                if tlog is not None:
                    tlog.row({**means, 'step': self.step, 'samples_per_s': rate, 'elapsed_s': now - t_start})
                t_window, n_window, window = now, 0, {}
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                last_eval = self.evaluate()
                if last_eval and tlog is not None:
                    tlog.scalars('eval', last_eval, self.step)
                barrier(self.dist)
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < cfg.max_steps:
                self.save()
            if cfg.max_minutes is not None and self._time_is_up(t_start):
                if main:
                    log.info('max_minutes reached at step %d', self.step)
                break
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t_start
        ckpt = self.save()
        summary: dict[str, Any] = {'steps': self.step, 'steps_this_run': steps_this_run, 'elapsed_s': elapsed,
                                   'samples_per_s': float(np.median(rates)) if rates else math.nan,
                                   'world_size': self.dist.world_size, 'device': str(self.device)}
        if main:
            from mgeo_ros.model import save_checkpoint
            final = self.out / 'final'
            final.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.release_model, final)
            summary['checkpoint'] = str(final)
            summary['last_checkpoint'] = str(ckpt)
            tlog.close()
            try:
                plot_loss_curve(self.out / 'log.csv', self.out / 'loss_curve.png')
            except Exception as exc:  # a plot must never lose a finished run
                log.warning('loss-curve plot failed: %s', exc)
            try:
                final_eval = self.evaluate()
            except Exception as exc:  # the model is saved; a failing evaluation must not hide that
                log.warning('final evaluation failed: %s', exc)
                final_eval = None
            summary['eval'] = final_eval if final_eval is not None else last_eval
            if (self.out / 'best' / 'eval.json').is_file():
                summary['best'] = json.loads((self.out / 'best' / 'eval.json').read_text())
            summary['final_loss'] = stats.get('loss')
            (self.out / 'summary.json').write_text(json.dumps(summary, indent=2))
        barrier(self.dist)
        cleanup(self.dist)
        return summary


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def train(cfg: TrainConfig, resume: bool = False, evaluator: Evaluator | None = None) -> dict[str, Any]:
    """Train per `cfg` (in this process; under torchrun each rank calls this) and return the summary; `evaluator`
    scores the held-out set (see `holdout.holdout_evaluator`)."""
    return Trainer(cfg, resume=resume, evaluator=evaluator).run()
