"""ONNX Runtime backend: a MoGe `.onnx` on CPU, or CUDA when the provider and a GPU exist.

Both graph layouts of `model_layout` run: a fixed-size export (input size and token count baked in) and a dynamic one
(the MoGe authors' ONNX release or `mgeo export --dynamic`), which gets each frame at its token-grid size and the
token count as its `num_tokens` input. A file of the uint8-input form (`mgeo export --input-form uint8`) is fed the
resized frame's bytes; given the float form, the backend converts it (so every caller runs both kinds of file).
"""
from __future__ import annotations

import os

import numpy as np

from mgeo_ros.errors import BackendUnavailableError
from mgeo_ros.runtime.backends.base import Backend, RawOutput, log, split_raw_outputs
from mgeo_ros.runtime.devices import has_nvidia_gpu, resolve_threads
from mgeo_ros.runtime.model_layout import IMAGE, TOKENS, classify, ort_specs
from mgeo_ros.runtime.preprocess import as_input_form, input_hw


def ort_cuda_available() -> bool:
    """True when onnxruntime has the CUDA provider and this machine has an NVIDIA GPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return 'CUDAExecutionProvider' in ort.get_available_providers() and has_nvidia_gpu()


class OnnxRuntimeBackend(Backend):
    """A fixed graph takes its input size and token count from the file; a dynamic one takes any 14-multiple size and
    the token count per call.

    threads: intra_op_num_threads (None: ONNX Runtime's default, one per physical core; 0: usable cores - 1).
    """

    name = 'onnxruntime'

    def __init__(self, onnx_path: str, device: str | None = None, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(f'onnxruntime backend: onnxruntime is not installed ({e})') from e
        if not os.path.isfile(onnx_path):
            raise BackendUnavailableError(f'onnxruntime backend: no ONNX file at {onnx_path}')
        want_cuda = device is not None and device.startswith('cuda')
        if device is None:
            want_cuda = ort_cuda_available()
        providers = ['CPUExecutionProvider']
        if want_cuda:
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise BackendUnavailableError('onnxruntime backend: CUDA asked for but this onnxruntime has no '
                                              f'CUDAExecutionProvider (has {ort.get_available_providers()}); '
                                              'install onnxruntime-gpu')
            if not has_nvidia_gpu():
                raise BackendUnavailableError('onnxruntime backend: CUDA asked for but no NVIDIA GPU is visible')
            providers.insert(0, 'CUDAExecutionProvider')
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = resolve_threads(threads)
        if self.threads:
            opts.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(onnx_path, sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendUnavailableError(f'onnxruntime backend: cannot load {onnx_path}: {e}') from e
        used = self.session.get_providers()
        self.device = 'cuda' if used[0] == 'CUDAExecutionProvider' else 'cpu'
        self.layout = classify(ort_specs(self.session.get_inputs()), ort_specs(self.session.get_outputs()),
                               onnx_path)
        self._input_name = IMAGE
        self.input_size = self.layout.input_size
        self.input_form = self.layout.input_form
        # `mgeo export --batch N` writes a static batch N: that many frames run per forward (fewer are padded)
        self.max_batch = self.layout.batch or 1
        self._output_names = list(self.layout.output_names)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = self.metadata.get('precision', 'fp32')
        log.debug('onnxruntime backend: %s on %s, input %s', onnx_path, used, self.input_size)

    def forward(self, image: np.ndarray, num_tokens: int) -> RawOutput:
        return self.forward_batch(image, num_tokens)[0]

    def forward_batch(self, images: np.ndarray, num_tokens: int) -> list[RawOutput]:
        """[B,3,h,w] float or [B,h,w,3] uint8, in chunks of the model's batch; a short chunk is padded with its last
        frame (outputs dropped)."""
        feed = {}
        images = as_input_form(images, self.input_form)
        if self.layout.dynamic:
            feed[TOKENS] = np.array(int(num_tokens), dtype=np.int64)
        elif input_hw(images) != (self.input_size[1], self.input_size[0]):
            raise ValueError(f'onnxruntime backend: input {images.shape} does not match the model {self.input_size}')
        results: list[RawOutput] = []
        for start in range(0, images.shape[0], self.max_batch):
            chunk = images[start:start + self.max_batch]
            count = chunk.shape[0]
            if count < self.max_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.max_batch - count, axis=0)])
            feed[self._input_name] = np.ascontiguousarray(chunk)
            values = self.session.run(self._output_names, feed)
            out = dict(zip(self._output_names, values, strict=True))
            results += split_raw_outputs(out['points'], out['mask'], out['metric_scale'], out.get('normal'), count)
        return results
