"""The frame stage's per-pixel work as one small ONNX graph, so that it runs where the network runs (ONNX Runtime's
CUDA provider, a TensorRT engine) and only the finished frame-size arrays come back; on the CPU ONNX Runtime runs it
too. It computes what `FrameStage`'s numpy path computes (tested against it): normalized bilinear upsampling of
depth and validity, confidence, the head's normals or normals from the depth (inverse-depth slopes, see
geometry/normals.py), the relative-jump and view-angle tests, min_confidence, max_depth, the cloud's xyz.

The per-frame scalars come in as inputs (`params`), from the focal/shift recovery that stays on the CPU on the
network's small grid. A graph is built for one (network size, frame size, normal head, radius, which tests are on,
points stride); `PostGraph` keeps the last one and rebuilds only when one of these changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mgeo_ros.runtime.flying_pixels import BIG

# params input, in this order (float32): z shift, metric scale, fx, fy, max_depth (+inf: none), flying-pixel max
# relative jump, cos(max view angle), min_confidence
PARAMS = ('shift', 'scale', 'fx', 'fy', 'max_depth', 'max_jump', 'cos_view_angle', 'min_confidence')
OUTPUT_NAMES = ('depth', 'valid', 'beyond', 'confidence', 'normals', 'points')


@dataclass(frozen=True)
class GraphShape:
    """What a graph is built for."""

    net: tuple[int, int]  # network (w, h)
    frame: tuple[int, int]  # frame (W, H)
    head: bool  # the model has a normal head
    radius: int  # flying-pixel window radius
    jump: bool  # relative-jump test on
    angle: bool  # view-angle test on
    normals: bool  # normals output wanted
    stride: int  # cloud stride (0: no cloud)


class _Builder:
    """A few helpers over onnx.helper: each op gets a fresh output name."""

    def __init__(self) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        self._n += 1
        out = f'{kind.lower()}_{self._n}'
        self.nodes.append(self.helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        self._n += 1
        name = f'const_{self._n}'
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def named(self, name: str, source: str) -> str:
        self.nodes.append(self.helper.make_node('Identity', [source], [name]))
        return name

    def slice(self, x: str, starts, ends, axes, steps=None) -> str:
        args = [x, self.const(starts, np.int64), self.const(ends, np.int64), self.const(axes, np.int64)]
        if steps is not None:
            args.append(self.const(steps, np.int64))
        return self.op('Slice', *args)

    def param(self, params: str, name: str) -> str:
        i = PARAMS.index(name)
        return self.slice(params, [i], [i + 1], [0])  # shape [1]: broadcasts

    def nan_to(self, x: str, value: float) -> str:
        return self.op('Where', self.op('IsNaN', x), self.const(value), x)

    def resize(self, x2d: str, size: tuple[int, int]) -> str:
        """Bilinear resize of an [h, w] map to (W, H) with pixel centres aligned (OpenCV's INTER_LINEAR)."""
        w, h = size
        x4 = self.op('Unsqueeze', x2d, self.const([0, 1], np.int64))
        out = self.op('Resize', x4, '', '', self.const([1, 1, h, w], np.int64), mode='linear',
                      coordinate_transformation_mode='half_pixel')
        return self.op('Squeeze', out, self.const([0, 1], np.int64))


def build_post_graph(shape: GraphShape):
    """The ONNX model (onnx.ModelProto) for `shape`."""
    from onnx import TensorProto, helper

    b = _Builder()
    nw, nh = shape.net
    fw, fh = shape.frame
    same = shape.net == shape.frame
    params = 'params'
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info('z', f32, [nh, nw]),
              helper.make_tensor_value_info('probability', f32, [nh, nw]),
              helper.make_tensor_value_info('mask', TensorProto.BOOL, [nh, nw]),
              helper.make_tensor_value_info('params', f32, [len(PARAMS)]),
              helper.make_tensor_value_info('ray_x', f32, [fw]),
              helper.make_tensor_value_info('ray_y', f32, [fh, 1])]
    if shape.head:
        inputs.append(helper.make_tensor_value_info('normal', f32, [nh, nw, 3]))
    if shape.stride:
        sw, sh = -(-fw // shape.stride), -(-fh // shape.stride)
        inputs += [helper.make_tensor_value_info('cloud_ray_x', f32, [sw]),
                   helper.make_tensor_value_info('cloud_ray_y', f32, [sh, 1])]
    nan = b.const(np.nan)

    # depth and validity on the network grid, then at the frame size
    depth_n = b.op('Mul', b.op('Add', 'z', b.param(params, 'shift')), b.param(params, 'scale'))
    finite = b.op('Not', b.op('Or', b.op('IsNaN', depth_n), b.op('IsInf', depth_n)))
    valid_n = b.op('And', b.op('And', 'mask', b.op('Greater', depth_n, b.const(0.0))), finite)
    valid_nf = b.op('Cast', valid_n, to=f32)
    prob = b.op('Clip', b.nan_to('probability', 0.0), b.const(0.0), b.const(1.0))
    if same:
        mask = valid_n
        depth = b.op('Where', valid_n, depth_n, nan)
        confidence = prob
    else:
        coverage = b.resize(valid_nf, shape.frame)
        summed = b.resize(b.op('Where', valid_n, depth_n, b.const(0.0)), shape.frame)
        mask = b.op('GreaterOrEqual', coverage, b.const(0.5))
        depth = b.op('Where', mask, b.op('Div', summed, coverage), nan)
        inside = b.resize(b.op('Mul', prob, valid_nf), shape.frame)
        other = b.op('Sub', b.resize(prob, shape.frame), inside)
        confidence = b.op('Where', mask, b.op('Div', inside, coverage),
                          b.op('Div', other, b.op('Sub', b.const(1.0), coverage)))
        confidence = b.op('Clip', confidence, b.const(0.0), b.const(1.0))

    head = None
    if shape.head:
        head = 'normal'
        if not same:
            chw = b.op('Transpose', 'normal', perm=[2, 0, 1])
            up = b.op('Resize', b.op('Unsqueeze', chw, b.const([0], np.int64)), '', '',
                      b.const([1, 3, fh, fw], np.int64), mode='linear', coordinate_transformation_mode='half_pixel')
            head = b.op('Transpose', b.op('Squeeze', up, b.const([0], np.int64)), perm=[1, 2, 0])
        length = b.op('Sqrt', b.op('ReduceSum', b.op('Mul', head, head), b.const([2], np.int64), keepdims=1))
        head = b.op('Where', b.op('Unsqueeze', mask, b.const([2], np.int64)), b.op('Div', head, length), nan)

    # the filters
    valid = mask
    made = None
    if shape.jump:
        k = 2 * shape.radius + 1
        pool = {'kernel_shape': [k, k], 'pads': [shape.radius] * 4}
        as4 = b.const([0, 1], np.int64)
        high = b.op('MaxPool', b.op('Unsqueeze', b.nan_to(depth, 0.0), as4), **pool)
        low = b.op('Neg', b.op('MaxPool', b.op('Unsqueeze', b.op('Neg', b.nan_to(depth, BIG)), as4), **pool))
        spread = b.op('Squeeze', b.op('Sub', high, low), as4)
        flying = b.op('Greater', spread, b.op('Mul', depth, b.param(params, 'max_jump')))
        valid = b.op('And', valid, b.op('Not', flying))
    if shape.angle:
        made = head if head is not None else _normals_from_depth(b, depth, mask, params)
        nx, ny, nz = (b.op('Squeeze', b.slice(made, [i], [i + 1], [2]), b.const([2], np.int64)) for i in range(3))
        dot = b.op('Add', b.op('Add', b.op('Mul', nx, 'ray_x'), b.op('Mul', ny, 'ray_y')), nz)
        ray_norm = b.op('Sqrt', b.op('Add', b.op('Add', b.op('Mul', 'ray_x', 'ray_x'), b.op('Mul', 'ray_y', 'ray_y')),
                                     b.const(1.0)))
        grazing = b.op('Less', b.op('Abs', dot), b.op('Mul', b.param(params, 'cos_view_angle'), ray_norm))
        valid = b.op('And', valid, b.op('Not', grazing))
    valid = b.op('And', valid, b.op('GreaterOrEqual', confidence, b.param(params, 'min_confidence')))
    beyond = b.op('And', valid, b.op('Greater', depth, b.param(params, 'max_depth')))
    valid = b.op('And', valid, b.op('Not', beyond))
    depth_out = b.op('Where', valid, depth, nan)

    outputs = [('depth', depth_out, f32, [fh, fw]), ('valid', valid, TensorProto.BOOL, [fh, fw]),
               ('beyond', beyond, TensorProto.BOOL, [fh, fw]), ('confidence', confidence, f32, [fh, fw])]
    if shape.normals:
        if made is None:
            made = head if head is not None else _normals_from_depth(b, depth_out, valid, params)
        normals = b.op('Where', b.op('Unsqueeze', valid, b.const([2], np.int64)), made, nan)
        outputs.append(('normals', normals, f32, [fh, fw, 3]))
    if shape.stride:
        s = shape.stride
        d = b.slice(depth_out, [0, 0], [fh, fw], [0, 1], [s, s])
        xyz = [b.op('Mul', d, 'cloud_ray_x'), b.op('Mul', d, 'cloud_ray_y'), d]
        points = b.op('Concat', *(b.op('Unsqueeze', c, b.const([2], np.int64)) for c in xyz), axis=2)
        outputs.append(('points', points, f32, [-(-fh // s), -(-fw // s), 3]))
    out_infos = []
    for name, source, dtype, dims in outputs:
        b.named(name, source)
        out_infos.append(helper.make_tensor_value_info(name, dtype, dims))
    graph = helper.make_graph(b.nodes, 'mgeo_post', inputs, out_infos, initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], producer_name='mgeo_ros')
    model.ir_version = 8
    return model


def _normals_from_depth(b: _Builder, depth: str, valid: str, params: str) -> str:
    """Unit normals [H, W, 3] of a depth map (NaN invalid), as `geometry.normals.DepthNormals` computes them: from
    the mean of the valid one-sided slopes of the inverse depth on each axis."""
    inv = b.op('Reciprocal', depth)
    ok = b.op('And', valid, b.op('And', b.op('Greater', inv, b.const(0.0)), b.op('Less', inv, b.const(np.inf))))
    inv = b.op('Where', ok, inv, b.const(np.nan))
    padded = b.op('Pad', inv, b.const([1, 1, 1, 1], np.int64), b.const(np.nan), mode='constant')

    def at(x: str, dy: int, dx: int) -> str:  # the [H, W] window of the padded map shifted by (dy, dx)
        return b.op('Slice', x, b.const([1 + dy, 1 + dx], np.int64), b.const([-1 + dy or 2 ** 62, -1 + dx or 2 ** 62],
                                                                              np.int64),
                    b.const([0, 1], np.int64))

    def slope(before: str, after: str, focal: str) -> str:  # focal x the mean of the valid one-sided differences
        back, ahead = b.op('Sub', centre, before), b.op('Sub', after, centre)
        both = b.op('Mul', b.op('Sub', after, before), b.const(0.5))
        mean = b.op('Where', b.op('IsNaN', back), ahead, b.op('Where', b.op('IsNaN', ahead), back, both))
        return b.op('Mul', mean, b.param(params, focal))

    centre = at(padded, 0, 0)
    a = slope(at(padded, 0, -1), at(padded, 0, 1), 'fx')
    bb = slope(at(padded, -1, 0), at(padded, 1, 0), 'fy')
    c = b.op('Sub', b.op('Sub', centre, b.op('Mul', a, 'ray_x')), b.op('Mul', bb, 'ray_y'))
    length = b.op('Sqrt', b.op('Add', b.op('Add', b.op('Mul', a, a), b.op('Mul', bb, bb)), b.op('Mul', c, c)))
    scale = b.op('Div', b.const(-1.0), length)  # unit, towards the camera
    parts = [b.op('Unsqueeze', b.op('Mul', t, scale), b.const([2], np.int64)) for t in (a, bb, c)]
    return b.op('Concat', *parts, axis=2)


def cos_view_angle(max_view_angle_deg: float) -> float:
    """The params entry for a view-angle limit (0 = off: no pixel is below cos 0 times its ray)."""
    return math.cos(math.radians(max_view_angle_deg)) if max_view_angle_deg > 0 else 0.0


def onnxruntime_providers(device: str = 'cpu') -> list[str]:
    """ONNX Runtime providers for the post graph: CUDA first when asked and present, always the CPU."""
    import onnxruntime as ort

    providers = ['CPUExecutionProvider']
    if device.startswith('cuda') and 'CUDAExecutionProvider' in ort.get_available_providers():
        providers.insert(0, 'CUDAExecutionProvider')
    return providers


class PostGraph:
    """The post graph on ONNX Runtime, rebuilt only when its `GraphShape` changes; outputs are written into arrays
    the caller gives (its frame buffers) through an IO binding, so a frame allocates nothing frame-sized."""

    def __init__(self, device: str = 'cpu', threads: int | None = None) -> None:
        self.device = device
        self.threads = threads
        self._shape: GraphShape | None = None
        self._session = None
        self.providers: list[str] = []

    def session(self, shape: GraphShape):
        if shape != self._shape:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = int(self.threads)
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(build_post_graph(shape).SerializeToString(), sess_options=opts,
                                                 providers=onnxruntime_providers(self.device))
            self.providers = self._session.get_providers()
            self._shape = shape
        return self._session

    def run(self, shape: GraphShape, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Feed `inputs` (name -> host array) and write each output named in `outputs` into its array (the graph's
        other outputs are not fetched)."""
        session = self.session(shape)
        binding = session.io_binding()
        for name, value in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, array in outputs.items():
            binding.bind_output(name, 'cpu', 0, array.dtype, list(array.shape), array.ctypes.data)
        session.run_with_iobinding(binding)


def build_post_engine(shape: GraphShape, output: str, trt_module: str | None = None,
                      compute_capability: str | None = None) -> str:
    """A TensorRT engine of the post graph for `shape` at `output` (ahead of time for another GPU with
    `compute_capability`, e.g. 'SM87' for a Jetson Orin); the ONNX is written beside it. Returns `output`."""
    import os

    import onnx

    from mgeo_ros.runtime.devices import import_tensorrt
    from mgeo_ros.runtime.engine_cache import trt_build

    onnx_path = os.path.splitext(output)[0] + '.onnx'
    onnx.save(build_post_graph(shape), onnx_path)
    data = trt_build(onnx_path, 'fp32', import_tensorrt(trt_module), compute_capability=compute_capability,
                     progress=False)[0]
    with open(output + '.tmp', 'wb') as f:
        f.write(data)
    os.replace(output + '.tmp', output)
    return output


class TensorRTPostGraph:
    """The post graph as a TensorRT engine on the GPU the network's engine runs on: inputs (network-size) go up,
    the wanted outputs come down straight into the caller's arrays, one copy each, after one stream synchronize
    (which releases the GIL). The engine is built on this GPU when the `GraphShape` changes (about a second)."""

    def __init__(self, cache_dir: str, device: str | None = None, trt_module: str | None = None) -> None:
        from mgeo_ros.runtime.backends.tensorrt_backend import _Cuda, import_cudart
        from mgeo_ros.runtime.devices import import_tensorrt

        self._trt = import_tensorrt(trt_module)
        self._cuda = _Cuda(import_cudart())
        self._index = int(device.split(':')[1]) if device and ':' in device else 0
        self._cache_dir = cache_dir
        self._trt_module = trt_module
        self._shape: GraphShape | None = None
        self._device: dict[str, int] = {}
        self.providers = ['TensorRT']

    def _load(self, shape: GraphShape) -> None:
        import os

        from mgeo_ros.runtime.backends.tensorrt_backend import io_table

        self._free()
        cuda, trt = self._cuda, self._trt
        cuda('cudaSetDevice', self._index)
        os.makedirs(self._cache_dir, exist_ok=True)
        name = 'post_{}x{}_{}x{}_{}.engine'.format(*shape.net, *shape.frame, abs(hash(shape)) % 10 ** 8)
        path = build_post_engine(shape, os.path.join(self._cache_dir, name), self._trt_module)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with open(path, 'rb') as f:
            self._engine = self._runtime.deserialize_cuda_engine(f.read())
        self._context = self._engine.create_execution_context()
        self._stream = cuda('cudaStreamCreate')
        for tensor, _is_input, dims, dtype in io_table(self._engine, trt):
            ptr = cuda('cudaMalloc', max(int(np.prod(dims)) * dtype.itemsize, 1))
            self._device[tensor] = ptr
            self._context.set_tensor_address(tensor, int(ptr))
        self._shape = shape

    def _free(self) -> None:
        for ptr in self._device.values():
            self._cuda.rt.cudaFree(ptr)
        self._device = {}

    def run(self, shape: GraphShape, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """As `PostGraph.run`."""
        if shape != self._shape:
            self._load(shape)
        cuda, rt = self._cuda, self._cuda.rt
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        held = []  # keep the contiguous copies alive until the stream is done with them
        for name, value in inputs.items():
            host = np.ascontiguousarray(value)
            held.append(host)
            cuda('cudaMemcpyAsync', self._device[name], host.ctypes.data, host.nbytes, h2d, self._stream)
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError('post graph: TensorRT execute_async_v3 failed')
        for name, array in outputs.items():
            cuda('cudaMemcpyAsync', array.ctypes.data, self._device[name], array.nbytes, d2h, self._stream)
        cuda('cudaStreamSynchronize', self._stream)

    def __del__(self) -> None:
        try:
            self._free()
        except Exception:  # interpreter shutdown
            pass


def post_graph_for(backend, cache_dir: str):
    """Where the frame stage's per-pixel work runs for a network `backend`: beside a TensorRT engine as an engine,
    beside ONNX Runtime's CUDA provider (or torch on CUDA) as the graph on that provider, else None: numpy/OpenCV
    on the CPU, which measured faster there than ONNX Runtime running the graph. `cache_dir`: where engines go."""
    name = getattr(backend, 'name', '')
    device = str(getattr(backend, 'device', 'cpu'))
    if name == 'tensorrt':
        return TensorRTPostGraph(str(cache_dir), device=device.split(' ')[0])
    if device.startswith('cuda'):
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        if 'CUDAExecutionProvider' in ort.get_available_providers():
            return PostGraph('cuda')
    return None
