"""PyTorch backend: a project checkpoint (or an in-memory model) on CPU or CUDA; fp16 autocast on CUDA."""
from __future__ import annotations

import numpy as np

from mgeo_ros.errors import BackendUnavailableError
from mgeo_ros.runtime.backends.base import Backend, RawOutput, log, split_raw_outputs
from mgeo_ros.runtime.devices import resolve_threads


class TorchBackend(Backend):
    """Runs the MoGe-2 module eagerly. Accepts any 14-multiple input size (the grid follows each frame).

    By default the module runs with `onnx_compatible_mode=True`, i.e. the very graph that `mgeo export` writes
    (positional embedding resized to the exact grid), so torch, ONNX Runtime and TensorRT give the same Prediction.
    `reference_mode=True` runs the reference MoGe-2 graph instead (DINOv2's historical `scale_factor` resize of the
    positional embedding); the two differ by about 1e-3 relative in depth.
    `threads`: torch.set_num_threads (process-wide in PyTorch; None keeps PyTorch's default, 0 = usable cores - 1).
    """

    name = 'torch'

    def __init__(self, model, device: str | None = None, precision: str = 'fp32', reference_mode: bool = False,
                 threads: int | None = None) -> None:
        try:
            import torch
        except ImportError as e:  # pragma: no cover - torch is in the dev environment
            raise BackendUnavailableError(f'torch backend: PyTorch is not installed ({e})') from e
        self._torch = torch
        self.threads = resolve_threads(threads)
        if self.threads:
            torch.set_num_threads(self.threads)  # process-wide: PyTorch has one intra-op pool
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise BackendUnavailableError(f'torch backend: device {device!r} asked for but CUDA is not available '
                                          '(CPU-only PyTorch build or no NVIDIA GPU/driver); use device cpu')
        self._device = torch.device(device)
        if isinstance(model, torch.nn.Module):
            self.model = model.to(self._device).eval()
        else:
            from mgeo_ros.model import load_checkpoint

            self.model = load_checkpoint(str(model), device=str(self._device))
        if precision not in ('fp32', 'fp16'):
            raise BackendUnavailableError(f'torch backend: precision must be fp32 or fp16, got {precision!r}')
        if precision == 'fp16' and self._device.type != 'cuda':
            log.warning('torch backend: fp16 autocast is CUDA-only; running fp32 on %s', self._device)
            precision = 'fp32'
        self.precision = precision
        self.device = str(self._device) if self._device.type == 'cpu' else \
            f'{self._device} ({torch.cuda.get_device_name(self._device)})'
        self.input_size = None
        self.metadata = {}
        self.reference_mode = bool(reference_mode)
        self.max_batch = 16  # any batch runs natively; this caps the memory of one forward

    def forward(self, image: np.ndarray, num_tokens: int) -> RawOutput:
        return self.forward_batch(image, num_tokens)[0]

    def forward_batch(self, images: np.ndarray, num_tokens: int) -> list[RawOutput]:
        """[B,3,h,w] through the module in one call (the model is batch-agnostic)."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images))
        if self._device.type == 'cuda':
            x = x.to(self._device, non_blocking=False)
        previous = getattr(self.model, 'onnx_compatible_mode', False)
        self.model.onnx_compatible_mode = not self.reference_mode  # the model may be shared: set it per call
        try:
            with torch.inference_mode():
                if self.precision == 'fp16':
                    with torch.autocast('cuda', dtype=torch.float16):
                        out = self.model(x, num_tokens=int(num_tokens))
                else:
                    out = self.model(x, num_tokens=int(num_tokens))
        finally:
            self.model.onnx_compatible_mode = previous

        def host(t):
            return None if t is None else t.float().cpu().numpy()

        return split_raw_outputs(host(out['points']), host(out['mask']), host(out['metric_scale']),
                                 host(out.get('normal')))

    def synchronize(self) -> None:
        if self._device.type == 'cuda':
            self._torch.cuda.synchronize(self._device)

    def peak_device_memory_bytes(self) -> int | None:
        if self._device.type == 'cuda':
            return int(self._torch.cuda.max_memory_allocated(self._device))
        return None
