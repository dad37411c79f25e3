"""What a user should hear once when the node (or any long-running tool) starts a model, because nothing later
would tell them: the packaged demo model runs when no model was given, and a fixed-size model ignores the token
budget that was asked for. Plain Python over a loaded backend; the caller logs the lines."""
from __future__ import annotations

from mgeo_ros.runtime.preprocess import grid_tokens

MODELS_DOC = 'docs/models.md'


def demo_model_warning(model_param: str) -> str | None:
    """The warning for an empty `model`: the packaged default is a demo model, not a depth model for real cameras."""
    if model_param:
        return None
    return ('no `model` given: running the packaged demo model (mgeo_ros/models/default), trained on synthetic '
            'rooms; it is not a depth model for real cameras. Give a real one with the `model` parameter, e.g. '
            '`-p model:=/path/to/moge-2-vits-normal.onnx` (an official MoGe-2 ONNX, a checkpoint directory, a .pt or '
            f'an .engine; where to get them: {MODELS_DOC})')


def num_tokens_warning(requested: int, backend) -> str | None:
    """The warning for a fixed-size ONNX/engine whose own token count differs from the `num_tokens` asked for: the
    file's input size decides, the request is not used."""
    if backend.input_size is None or backend.metadata.get('dynamic') == '1':
        return None
    w, h = backend.input_size
    in_file = int(backend.metadata.get('num_tokens') or grid_tokens(w, h))
    if in_file == int(requested):
        return None
    return (f'num_tokens {requested} is not used: the model is a fixed-size export for {in_file} tokens (input '
            f'{w}x{h}), which it keeps. To run at {requested} tokens export it again with `mgeo export ... '
            f'--num-tokens {requested}` (or `--dynamic`); set num_tokens to {in_file} to silence this')


def start_warnings(model_param: str, requested_tokens: int, backend) -> list[str]:
    """Every start warning that applies, in the order to log them."""
    return [w for w in (demo_model_warning(model_param), num_tokens_warning(requested_tokens, backend)) if w]
