"""Training configuration: a dataclass loaded from YAML; CLI overrides (`--set a.b=value`) beat the file.

Every field carries its help text (with units and default) in `metadata['help']`; `describe()` prints them all.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mgeo_ros.cli_args import NUM_TOKENS_MAX, NUM_TOKENS_MIN, nearest
from mgeo_ros.errors import BadInputError


def _f(default: Any = dataclasses.MISSING, help: str = '', factory: Any = None, low: float | None = None,
       high: float | None = None) -> Any:
    """A config field: its help text (units, default) and the range [low, high] a number must lie in."""
    meta = {'help': help, 'low': low, 'high': high}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DatasetSpec:
    """One training source; sources are mixed by `weight` (probability ∝ weight per sample)."""

    type: str = _f('synthetic', "'synthetic' (procedural scenes rendered on the fly, endless stream) or 'folder' "
                                "(the project's folder format, see `mgeo synth`/`mgeo data`)")
    weight: float = _f(1.0, 'relative sampling weight of this source in the mix (unitless, > 0)', low=1e-12)
    label_type: str = _f('A', "loss recipe: 'A' synthetic dense (all terms), 'B' dense real (no local_64), "
                              "'C' real/sparse (global, local_4, metric scale, mask)")
    root: str | None = _f(None, "folder dataset root (type 'folder')")
    split: str | None = _f(None, 'folder dataset split name (None = all frames)')
    seed: int = _f(0, 'synthetic: base seed of the scene stream (each DDP rank/worker offsets it)', low=0)
    augment: bool = _f(True, 'apply mgeo_ros.train.augment (FOV crop/uncrop, flips, colour) to this source')
    metric: bool | None = _f(None, "override the samples' `metric` flag (None = keep; False = no scale loss)")
    augment_config: dict = _f(factory=dict, help='mgeo_ros.train.augment.AugmentConfig fields, e.g. '
                                                 '{fov_scale: [0.9, 1.2], flip_prob: 0.5}')
    pool_size: int = _f(0, 'synthetic: keep this many rendered scenes and reuse them (0 = pure stream, every '
                           'sample freshly rendered); cheap on a slow CPU', low=0)
    pool_refresh: float = _f(0.25, 'synthetic with a pool: share of draws that render a fresh scene into the pool',
                             low=0.0, high=1.0)
    options: dict = _f(factory=dict, help='extra keyword arguments for the dataset constructor (e.g. kinds)')


@dataclass
class LossConfig:
    """Loss weights: start from the label type's table (see losses.LABEL_TYPE_WEIGHTS); `weights` overrides terms."""

    weights: dict = _f(factory=dict, help="term -> weight overrides applied to every dataset (terms: global, "
                                          "local_4, local_16, local_64, edge, normal, metric_scale, mask)")
    local_patches: dict = _f(factory=lambda: {4: 16, 16: 256, 64: 4096},
                             help='patches per local level (MoGe-2: 16/256/4096; fewer is much cheaper on CPU)')
    local_resolution: dict = _f(factory=lambda: {4: 24, 16: 12, 64: 6},
                                help='samples per patch side per level (MoGe-2: 24/12/6)')
    global_resolution: int = _f(48, 'global alignment grid side (MoGe-2: 48; 16-24 is enough on CPU)', low=2)
    max_anchors: int | None = _f(None, 'ROE shift anchors tried per alignment (None = all = exact, GPU; 16 on CPU)',
                                 low=1)


@dataclass
class TrainConfig:
    """All knobs of `mgeo train`. Paths are relative to the current directory."""

    # model
    model: str = _f('tiny', "model preset (mgeo_ros.model.configs.preset): 'tiny', 'small', 'vits', 'vitb', 'vitl'")
    model_overrides: dict = _f(factory=dict, help='dict merged (recursively) into the preset model_config; a null '
                                                  'value removes a key (e.g. normal_head: null drops that head)')
    layer_scale_init: float | None = _f(None, 'from scratch only: every ViT LayerScale gain starts at this value '
                                              "(None = the preset's 1.0). Small gains (0.1) keep the residual stream "
                                              'close to the patch embedding early on, so the tokens do not collapse '
                                              'to one vector (the image then stops mattering) on small runs')
    init_checkpoint: str | None = _f(None, 'start from this checkpoint (project dir or official MoGe-2 / MoGe-3 '
                                           'model.pt; its own model_config wins over `model`)')
    # output / schedule
    out: str = _f('runs/train', 'output directory (checkpoints, logs, plots)')
    max_steps: int = _f(1000, 'optimizer steps to train (a step = grad_accum micro-batches)', low=0)
    max_minutes: float | None = _f(None, 'stop (and save) after this many minutes of wall time (None = no limit)',
                                   low=0.0)
    batch_size: int = _f(4, 'samples per micro-batch per process', low=1)
    grad_accum: int = _f(1, 'micro-batches accumulated per optimizer step', low=1)
    lr: float = _f(1e-4, 'AdamW learning rate of the neck/heads/scale MLP (1/step units)', low=1e-12, high=1.0)
    encoder_lr: float = _f(1e-5, 'AdamW learning rate of the ViT encoder (MoGe-2: 10x lower than heads)', low=0.0,
                           high=1.0)
    freeze_encoder: bool = _f(False, 'never train the encoder (lr 0, no gradients)')
    encoder_frozen_steps: int = _f(0, 'encoder lr is 0 for this many steps, then ramps up over the same count', low=0)
    warmup_steps: int = _f(50, 'linear learning-rate warm-up from 0 (steps)', low=0)
    lr_halve_every: int | None = _f(None, 'halve every lr each N steps after warm-up (None or 0 = constant)', low=0)
    weight_decay: float = _f(0.01, 'AdamW weight decay (decoupled)', low=0.0)
    grad_clip: float | None = _f(1.0, 'clip the global gradient norm to this (None or 0 = off)', low=0.0)
    ema_decay: float | None = _f(None, 'keep an exponential moving average of the weights with this decay per step '
                                       '(e.g. 0.99; warmed up as min(decay, (1+t)/(10+t))); final/ and the '
                                       'evaluation then use the EMA weights (None = off)', low=0.0, high=1.0)
    amp: bool = _f(True, 'bf16/fp16 autocast on CUDA (ignored on CPU)')
    seed: int = _f(0, 'global seed (model init, augmentation, patch sampling)')
    device: str = _f('auto', "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'")
    threads: int | None = _f(None, 'torch intra-op threads on CPU (None or 0 = torch default)', low=0)
    num_workers: int = _f(0, 'DataLoader worker processes for rendering/loading (0 = in the main process)', low=0)
    # images / tokens
    image_size: list = _f(factory=lambda: [96, 72], help='training image size [W, H] in pixels (smallest when a '
                                                         'range is given)')
    image_size_max: list | None = _f(None, 'largest [W, H]; each batch then draws a size between image_size and '
                                          'this (same aspect ratio per batch)')
    num_tokens: list = _f(factory=lambda: [48, 96], help='ViT tokens per image [min, max], drawn per step '
                                                         '(the token grid is ~sqrt(N/a) x sqrt(N·a))')
    # data
    datasets: list = _f(factory=lambda: [DatasetSpec()], help='list of DatasetSpec entries (mixed by weight)')
    loss: LossConfig = _f(factory=LossConfig, help='loss weights and local-patch counts')
    # logs / checkpoints / evaluation
    log_every: int = _f(10, 'write a CSV/TensorBoard row every N steps', low=1)
    ckpt_every: int = _f(500, 'save a checkpoint (and resume state) every N steps (0 = only at the end); always at the '
                                   'end', low=0)
    eval_every: int = _f(0, 'evaluate on the held-out set every N steps (0 = only at the end)', low=0)
    eval_count: int = _f(16, 'held-out synthetic scenes used for evaluation (0 = no evaluation)', low=0)
    eval_seed: int = _f(1_000_003, 'seed of the held-out synthetic scenes (disjoint from training seeds)', low=0)
    eval_size: list | None = _f(None, 'held-out image size [W, H] (None = image_size)')
    eval_root: str | None = _f(None, 'evaluate on this folder dataset instead of synthetic scenes')
    keep_best: str | None = _f('model_metric_abs_rel', 'after each evaluation, write the evaluated weights to best/ '
                                                       'when this eval.jsonl key improved: one of {model,baseline}_'
                                                       '{metric,scale}_{abs_rel,delta1} (delta1 maximized, abs_rel '
                                                       'minimized; null = off)')
    tensorboard: bool = _f(True, 'also write TensorBoard event files (out/tb)')
    progress: bool = _f(True, 'show a tqdm progress bar (rank 0)')

    @property
    def accumulation(self) -> int:
        return max(1, int(self.grad_accum))


class _Loader(yaml.SafeLoader):
    """YAML as people write it: `1e-3` (no dot) is a number, as in YAML 1.2, not the string PyYAML makes of it."""


_Loader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:\d[\d_]*)?\.?\d*[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*(?:[eE][-+]?\d+)?$'
               r'|^[-+]?\.\d+(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$'),
    list('-+0123456789.'))


def load_yaml(text: str) -> Any:
    """Parse config YAML (numbers like 1e-3 are numbers)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass: builds plain Python objects only


_KIND_WORDS = {'int': 'an integer', 'float': 'a number', 'str': 'a string', 'bool': 'true or false',
               'list': 'a list', 'dict': 'a mapping', 'None': 'null'}


def _check_field(where: str, f: dataclasses.Field, value: Any) -> Any:
    """`value` as field `f` declares it (int -> float where a number is wanted), or BadInputError naming the key,
    the expected type or range and the value given."""
    kinds = [k.strip() for k in str(f.type).split('|')]
    if value is None and 'None' in kinds:
        return None
    ok = None
    for kind in kinds:
        if kind == 'bool' and isinstance(value, bool):
            ok = value
        elif kind == 'int' and isinstance(value, int) and not isinstance(value, bool):
            ok = value
        elif kind == 'int' and isinstance(value, float) and value.is_integer():
            ok = int(value)
        elif kind == 'float' and isinstance(value, (int, float)) and not isinstance(value, bool):
            ok = float(value)
        elif kind == 'str' and isinstance(value, str):
            ok = value
        elif kind == 'list' and isinstance(value, (list, tuple)):
            ok = list(value)
        elif kind == 'dict' and isinstance(value, dict):
            ok = value
        if ok is not None:
            break
    if ok is None:
        expected = ' or '.join(_KIND_WORDS.get(k, k) for k in kinds)
        got = f'the string {value!r}' if isinstance(value, str) else f'{type(value).__name__} {value!r}'
        raise BadInputError(f'{where}{f.name}: expected {expected}, got {got}; fix it in the config or with '
                            f'--set {where}{f.name}=...')
    low, high = f.metadata.get('low'), f.metadata.get('high')
    if isinstance(ok, (int, float)) and not isinstance(ok, bool):
        if not math.isfinite(ok) or (low is not None and ok < low) or (high is not None and ok > high):
            bounds = f'in [{low:g}, {high:g}]' if low is not None and high is not None else (
                f'>= {low:g}' if low is not None else f'<= {high:g}')
            raise BadInputError(f'{where}{f.name}: expected a value {bounds}, got {ok!r}')
    return ok


def _check_fields(cls: type, data: dict[str, Any], where: str = '') -> dict[str, Any]:
    """Type- and range-check every key of `data` that is a plain field of `cls` (nested ones are built apart)."""
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name in out and f.name not in ('datasets', 'loss'):
            out[f.name] = _check_field(where, f, out[f.name])
    return out


def _check_pair(name: str, value: Any, low: int, high: int) -> list[int]:
    """[a, b] of integers in [low, high] (a single integer stands for [n, n])."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise BadInputError(f'{name}: expected two integers [a, b], got {value!r}')
    if not all(low <= v <= high for v in value):
        raise BadInputError(f'{name}: expected values in [{low}, {high}], got {list(value)}')
    return list(value)


def _near(unknown, known) -> str:
    """' (did you mean lr?)' for misspelled keys that are close to a known one; '' when none is."""
    hints = [f'{word} -> {near}' for word in sorted(unknown) if (near := nearest(word, known))]
    return f' (did you mean {", ".join(hints)}?)' if hints else ''


def _to_dataset(item: Any) -> DatasetSpec:
    if isinstance(item, DatasetSpec):
        return item
    if not isinstance(item, dict):
        raise BadInputError(f'datasets: each entry must be a mapping, got {item!r}')
    known = {f.name for f in dataclasses.fields(DatasetSpec)}
    unknown = set(item) - known
    if unknown:
        raise BadInputError(f'datasets: unknown keys {sorted(unknown)} (known: {sorted(known)})')
    spec = DatasetSpec(**_check_fields(DatasetSpec, item, 'datasets.'))
    if spec.type not in ('synthetic', 'folder'):
        raise BadInputError(f"datasets.type must be 'synthetic' or 'folder', got {spec.type!r}")
    if spec.type == 'folder' and not spec.root:
        raise BadInputError('datasets.root is required for a folder dataset, got none; set it (e.g. '
                            '--set datasets.0.root=runs/my_bag/frames)')
    if spec.label_type not in ('A', 'B', 'C'):
        raise BadInputError(f"datasets.label_type must be 'A', 'B' or 'C', got {spec.label_type!r}")
    if spec.weight <= 0:
        raise BadInputError(f'datasets.weight must be > 0, got {spec.weight}; give each dataset a positive weight')
    return spec


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a validated TrainConfig; unknown keys are an error naming the key."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(data) - known
    if unknown:
        raise BadInputError(f'train config: unknown keys {sorted(unknown)}{_near(unknown, known)}; '
                            '`mgeo train --print-config` lists every key')
    if 'datasets' in data:
        if not isinstance(data['datasets'], (list, tuple)):
            raise BadInputError(f'datasets: expected a list of mappings (type: ..., weight: ...), got '
                                f'{data["datasets"]!r}')
        data['datasets'] = [_to_dataset(d) for d in data['datasets']]
    if 'loss' in data and isinstance(data['loss'], dict):
        loss_known = {f.name for f in dataclasses.fields(LossConfig)}
        bad = set(data['loss']) - loss_known
        if bad:
            raise BadInputError(f'loss: unknown keys {sorted(bad)}{_near(bad, loss_known)}; '
                                '`mgeo train --print-config` lists every key')
        loss = LossConfig(**_check_fields(LossConfig, data['loss'], 'loss.'))
        loss.local_patches = {int(k): int(v) for k, v in loss.local_patches.items()}
        loss.local_resolution = {int(k): int(v) for k, v in loss.local_resolution.items()}
        data['loss'] = loss
    if isinstance(data.get('num_tokens'), int):
        data['num_tokens'] = [data['num_tokens'], data['num_tokens']]
    cfg = TrainConfig(**_check_fields(TrainConfig, data))
    cfg.image_size = _check_pair('image_size', cfg.image_size, 8, 8192)
    if cfg.image_size_max is not None:
        cfg.image_size_max = _check_pair('image_size_max', cfg.image_size_max, 8, 8192)
    if cfg.eval_size is not None:
        cfg.eval_size = _check_pair('eval_size', cfg.eval_size, 8, 8192)
    cfg.num_tokens = _check_pair('num_tokens', cfg.num_tokens, NUM_TOKENS_MIN, NUM_TOKENS_MAX)
    if cfg.eval_root and cfg.eval_count > 0 and not Path(cfg.eval_root).is_dir():
        raise BadInputError(f'eval_root {cfg.eval_root} is not a folder dataset (make one with `mgeo synth --out '
                            f'{cfg.eval_root} ...`, or set eval_root: null to evaluate on synthetic scenes)')
    if cfg.keep_best:
        from mgeo_ros.train.holdout import METRIC_KEYS
        if cfg.keep_best not in METRIC_KEYS:
            raise BadInputError(f'keep_best {cfg.keep_best!r} is not an evaluation key (one of {", ".join(METRIC_KEYS)}'
                                ', or null)')
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split('.')
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if nxt.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        idx = int(last)
        while len(node) <= idx:
            node.append({})
        node[idx] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', YAML-parsed value), so numbers, lists and null work: `--set lr=3e-4`."""
    if '=' not in text:
        raise BadInputError(f'--set expects key=value, got {text!r}')
    key, raw = text.split('=', 1)
    value = load_yaml(raw) if raw.strip() else None
    return key.strip(), value


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file (may be None: defaults) with dotted-key overrides applied after it."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise BadInputError(f'config: no such file {p}; check the path (shipped configs: config/train/*.yaml)')
        try:
            data = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BadInputError(f'config {p} is not valid YAML: {str(exc).splitlines()[0]} '
                                f'({getattr(exc, "problem_mark", "") or "see the file"})') from exc
        if not isinstance(data, dict):
            raise BadInputError(f'config: {p} must hold a mapping (key: value lines), got a '
                                f'{type(data).__name__}; `mgeo train --print-config` shows the form')
    base = to_dict(TrainConfig())
    base.update(data)
    if 'datasets' in data:
        if not isinstance(data['datasets'], list) or not all(isinstance(d, dict) for d in data['datasets']):
            raise BadInputError(f'datasets: expected a list of mappings (type: ..., weight: ...), got '
                                f'{data["datasets"]!r}')
        base['datasets'] = [dict(to_dict(DatasetSpec()), **d) for d in data['datasets']]
    if 'loss' in data:
        if not isinstance(data['loss'], dict):
            raise BadInputError(f'loss: expected a mapping (weights: ..., local_patches: ...), got {data["loss"]!r}')
        base['loss'] = dict(to_dict(LossConfig()), **data['loss'])
    for key, value in (overrides or {}).items():
        _set_dotted(base, key, value)
    return from_dict(base)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False))


def describe() -> str:
    """One line per field: name, default, help (used for docs/training.md)."""
    lines = []
    for cls, prefix in ((TrainConfig, ''), (DatasetSpec, 'datasets[].'), (LossConfig, 'loss.')):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                default = f.default_factory()  # type: ignore[misc]
                if isinstance(default, (DatasetSpec, LossConfig)) or (
                        isinstance(default, list) and default and isinstance(default[0], DatasetSpec)):
                    default = '…'
            lines.append(f'{prefix}{f.name} (default {default!r}): {f.metadata.get("help", "")}')
    return '\n'.join(lines)
