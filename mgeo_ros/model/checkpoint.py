"""Build models from configs and load/save weights strictly, never unpickling code.

Two formats:
(a) the official MoGe-2 / MoGe-3 release: a `.pt` dict {'model_config': dict, 'model': state_dict}, read with
    `torch.load(weights_only=True)`;
(b) the project format: a directory with `config.json` (the model_config) and `model.safetensors` (fp32 or fp16).

A MoGe-3 file (see `moge2.model_family`) loads as its base network: its `refiner.*` tensors, when present, are set
aside (the refiner cannot run here) and the load log says so.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from mgeo_ros.errors import CheckpointError
from mgeo_ros.model.moge2 import REFINER_PREFIX, REFINER_UNAVAILABLE, MoGeModel, model_family

log = logging.getLogger('mgeo_ros.model')
CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'


def build_model(config: dict[str, Any]) -> MoGeModel:
    """A randomly initialised model for a model_config; a malformed config raises CheckpointError."""
    if not isinstance(config, dict) or 'encoder' not in config or 'neck' not in config:
        found = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f'model_config must be a dict with at least "encoder" and "neck", found {found}; this '
                              'is not a MoGe-2 / MoGe-3 checkpoint: use an official model.pt or a directory written '
                              'by `mgeo import-moge` or `mgeo train`')
    if model_family(config) == 'moge-3':
        config = {**config, 'remap_output': None}  # MoGe-3's points head is always the `exp` parametrisation
    try:
        return MoGeModel(**config)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f'invalid model_config: {exc}') from exc


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(f'{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})'
                       for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    problems = []
    if missing:
        problems.append(f'missing keys: {_listing(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_listing(unexpected)}')
    if misshaped:
        problems.append(f'mis-shaped keys: {_listing(misshaped)}')
    if problems:
        raise CheckpointError('checkpoint does not match its model_config; ' + '; '.join(problems)
                              + '; the weights and the config come from different models or the file is damaged: '
                              'import or copy it again')


def _listing(keys: list[str], limit: int = 12) -> str:
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def model_from_state(config: dict[str, Any], state: dict[str, torch.Tensor], device: str | torch.device = 'cpu'
                     ) -> MoGeModel:
    """Build from config, check keys/shapes strictly, copy weights (cast to fp32), return in eval mode."""
    model = build_model(config)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f'state_dict entry {key!r} is not a tensor')
    if model.family == 'moge-3':
        kept = {k: v for k, v in state.items() if not k.startswith(REFINER_PREFIX)}
        model.refiner_tensors_set_aside = len(state) - len(kept)
        state = kept
    check_state_dict(model, state)
    reference = model.state_dict()
    state = {k: v.to(dtype=reference[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _load_official(path: Path) -> tuple[dict, dict]:
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for our users
            warnings.simplefilter('ignore')
            payload = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        refusal = _code_refusal(path, str(exc))
        if refusal:
            raise CheckpointError(refusal) from None  # no chained torch message: its advice is to unpickle code
        raise CheckpointError(f'{path}: not a readable PyTorch checkpoint ({_unpickling_detail(str(exc))})') from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f'{path}: not a readable PyTorch checkpoint: {exc}') from exc
    if not isinstance(payload, dict) or 'model_config' not in payload or 'model' not in payload:
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f'{path}: expected a dict with "model_config" and "model" (official MoGe-2 format), '
                              f'found {found}')
    config, state = payload['model_config'], payload['model']
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise CheckpointError(f'{path}: "model_config" and "model" must both be dicts')
    return config, state


_GLOBAL = re.compile(r'GLOBAL ([A-Za-z_][\w.]*)')


def _torch_lines(message: str) -> list[str]:
    """The lines of torch's weights-only error that describe the file, without its advice (which includes loading
    with `weights_only=False`, i.e. running code from the file) or its documentation pointers."""
    lines = []
    for line in message.splitlines():
        line = line.split('WeightsUnpickler error:', 1)[-1].strip()
        if line and not any(k in line.lower() for k in ('weights_only', 'weights only', 'documentation', 'safe_globals',
                                                         'allowlist', 'please')):
            lines.append(line)
    return lines


def _code_refusal(path: Path, message: str) -> str:
    """Our one-line refusal when loading would need to run code from the file ('' when that is not the cause)."""
    named = _GLOBAL.search(message)
    if named is None and 'global' not in message.lower():
        return ''
    what = f' ({named.group(1)})' if named else ''
    return (f'{path}: refused: unpickling it needs code{what}, which could run anything; mgeo_ros loads tensors '
            'only: save the weights alone (a state_dict of tensors) and use that file')


def _unpickling_detail(message: str) -> str:
    """What torch's weights-only error says about the file, in one line."""
    lines = _torch_lines(message)
    return lines[0] if lines else 'not a pickle torch can read'


def _load_project(directory: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (config_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f'{directory}: project checkpoint lacks {p.name} (expected {CONFIG_NAME} + '
                                  f'{WEIGHTS_NAME}, as `mgeo import-moge` and `mgeo train` write them); give such a '
                                  'directory or an official model.pt')
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f'{config_path}: unreadable JSON: {exc}; the checkpoint is damaged: write or copy it '
                              'again') from exc
    config = config.get('model_config', config) if isinstance(config, dict) else config
    try:
        state = load_file(str(weights_path), device='cpu')
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f'{weights_path}: unreadable safetensors: {exc}; the checkpoint is damaged: write or '
                              'copy it again') from exc
    return config, state


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = 'cpu') -> MoGeModel:
    """Load (a) an official `.pt`, or (b) a project directory (or its config.json / model.safetensors).
    Every key must match; the model is returned in eval mode on `device`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'{path}: no such file or directory (expected a checkpoint directory or an official '
                              'MoGe-2 / MoGe-3 model.pt); check the path')
    if path.is_dir():
        config, state = _load_project(path)
    elif path.name in (CONFIG_NAME, WEIGHTS_NAME) or path.suffix == '.safetensors':
        config, state = _load_project(path.parent)
    else:
        config, state = _load_official(path)
    try:
        model = model_from_state(config, state, device)
    except CheckpointError as exc:
        raise CheckpointError(f'{path}: {exc}') from exc
    log.info('%s: %s', path, describe_family(model, model.refiner_tensors_set_aside))
    return model


def describe_family(model: MoGeModel, refiner_tensors: int = 0) -> str:
    """What a loaded file was taken for, in words: 'MoGe-2 (remap exp)' or 'MoGe-3 (base path; ...)'."""
    if model.family != 'moge-3':
        return f'MoGe-2 (remap {model.remap_output})'
    refiner = (f'{refiner_tensors} refiner tensors set aside' if refiner_tensors else 'no refiner tensors')
    return f'MoGe-3 (base path; {refiner}; {REFINER_UNAVAILABLE})'


def save_checkpoint(model: MoGeModel, out_dir: str | os.PathLike, fp16: bool = False) -> Path:
    """Write the project format: `out_dir/config.json` + `out_dir/model.safetensors` (fp16 halves the size)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().to('cpu')
        if fp16 and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous().clone()
    save_file(state, str(out / WEIGHTS_NAME), metadata={'format': 'mgeo_ros.moge2', 'dtype': 'fp16' if fp16 else
                                                        'fp32'})
    (out / CONFIG_NAME).write_text(json.dumps(model.config, indent=2) + '\n')
    return out


def save_official(model: MoGeModel, path: str | os.PathLike) -> Path:
    """Write the official release envelope {'model_config', 'model'} (for tests and interchange)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'model_config': model.config, 'model': model.state_dict()}, path)
    return path
