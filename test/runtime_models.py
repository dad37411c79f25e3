"""ONNX models for the torch-free runtime tests, exported once by a venv that has torch.

The Jazzy job (`make test-jazzy`) runs the node tests in a venv without torch, so it cannot export; `make` runs
`python test/runtime_models.py DIR` in the main venv first and points the tests at DIR through MGEO_RUNTIME_MODELS.
Without that variable the fixture exports in-process (the main venv), so both venvs test the same model.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = 'MGEO_RUNTIME_MODELS'
TINY_SIZE = (160, 120)  # W, H the node transport tests feed
TINY_NAME = 'tiny_160x120.onnx'
AUTHORS_NAME = 'tiny_authors_layout.onnx'  # the MoGe authors' dynamic ONNX layout (authors_onnx.py), TorchScript


def export_tiny(path: Path) -> Path:
    """The tiny preset with seed 0, exported at TINY_SIZE (needs torch)."""
    import torch

    from mgeo_ros.export.onnx_export import export_onnx
    from mgeo_ros.model import build_model, preset

    torch.manual_seed(0)
    torch.set_num_threads(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(build_model(preset('tiny')).eval(), str(path), TINY_SIZE, num_tokens=300, parity=False)
    return path


def export_authors_tiny(path: Path) -> Path:
    """The tiny preset with seed 0 in the MoGe authors' ONNX layout (TorchScript exporter, opset 14; needs torch)."""
    import torch
    from authors_onnx import export_authors_layout

    from mgeo_ros.model import build_model, preset

    torch.manual_seed(0)
    torch.set_num_threads(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    return export_authors_layout(build_model(preset('tiny')).eval(), path, 'torchscript', opset=14)


def _model(tmp_dir: Path, name: str, export) -> Path:
    """The pre-exported model when MGEO_RUNTIME_MODELS names a folder, else a fresh export into tmp_dir."""
    folder = os.environ.get(ENV)
    if folder:
        path = Path(folder) / name
        if not path.is_file():
            raise FileNotFoundError(f'{ENV}={folder} has no {name}: run `python test/runtime_models.py {folder}` '
                                    'in a venv with torch first')
        return path
    return export(tmp_dir / name)


def tiny_onnx(tmp_dir: Path) -> Path:
    """The tiny project export at TINY_SIZE (see `_model`)."""
    return _model(tmp_dir, TINY_NAME, export_tiny)


def authors_onnx(tmp_dir: Path) -> Path:
    """The tiny model in the authors' dynamic layout (see `_model`)."""
    return _model(tmp_dir, AUTHORS_NAME, export_authors_tiny)


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    out = Path(sys.argv[1] if len(sys.argv) > 1 else 'build/runtime_models')
    print(export_authors_tiny(out / AUTHORS_NAME))
    print(export_tiny(out / TINY_NAME))
