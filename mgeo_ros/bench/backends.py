"""`mgeo bench MODEL`: ms per stage for every available backend and input size, medians after warm-up.

Stages of one frame, as the node runs them: convert (raw rgb8 Image bytes -> numpy, through `mgeo_ros.ros.convert`
when rclpy imports, else a numpy reshape), preprocess, forward, postprocess, cloud (the node's PointCloud2 built
from depth by `mgeo_ros.ros.convert`, or `mgeo_ros.ros.cloud` packing without rclpy).
A baseline row is measured in the same run: the reference MoGe-2 pipeline (`model.infer` on the full frame, as the
MoGe repository runs it: its own resize, focal/shift recovery and unprojection at the frame size, no buffer reuse),
so every backend's end-to-end time is also given as a ratio to it.

MODEL: a checkpoint directory / official .pt, an .onnx, an .engine, or `preset:NAME` (random weights of a model
preset, e.g. preset:small — speed does not depend on the weights).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mgeo_ros.errors import BackendUnavailableError, MgeoError

STAGES = ('convert', 'preprocess', 'forward', 'postprocess', 'cloud')
BACKENDS = ('torch', 'onnxruntime', 'tensorrt')
log = logging.getLogger('mgeo_ros.bench')


# ---- one frame as a camera driver would send it -------------------------------------------------------------------
def synthetic_frame(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([np.sin(xx / 23.0), np.cos(yy / 17.0), np.sin((xx + yy) / 31.0)], -1) * 100 + 128
    return img.astype(np.uint8)


def make_converter(rgb: np.ndarray):
    """(convert() -> rgb, description): raw rgb8 bytes as in an Image message -> numpy."""
    h, w = rgb.shape[:2]
    raw = rgb.tobytes()
    try:
        from sensor_msgs.msg import Image

        from mgeo_ros.ros.convert import image_to_rgb8
    except Exception:  # rclpy/messages missing: the same job by hand
        return (lambda: np.frombuffer(raw, np.uint8).reshape(h, w, 3)), 'numpy reshape'
    msg = Image(height=h, width=w, encoding='rgb8', is_bigendian=0, step=w * 3, data=raw)
    return (lambda: image_to_rgb8(msg)), 'ros.convert.image_to_rgb8'


def make_cloud_packer():
    """(pack(prediction, rgb), description): the node's cloud builder (`convert.points_to_pointcloud2`, packed
    straight into the message) when rclpy imports, else the same packing (`cloud.fill_organized`) into an array."""
    try:
        from mgeo_ros.ros.convert import points_to_pointcloud2
    except Exception:  # rclpy/messages missing
        from mgeo_ros.ros.cloud import fill_organized

        def pack(p, rgb):
            h, w = p.depth.shape
            return fill_organized(np.empty((h, w, 3 if rgb is None else 4), np.float32), p.points, rgb)

        return pack, 'cloud.fill_organized'
    return (lambda p, rgb: points_to_pointcloud2(p.points, rgb=rgb)), 'ros.convert.points_to_pointcloud2'


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- model preparation ----------------------------------------------------------------------------------------------
def resolve_model(args) -> tuple[object, str]:
    """(model_path or torch module, label)."""
    if args.default_model:
        from mgeo_ros.runtime.predictor import default_model_path

        path = default_model_path()
        if not (path / 'config.json').is_file():
            raise MgeoError(f'--default-model: no packaged default model at {path} (it is produced by training; '
                            'pass a checkpoint or preset:small instead)')
        return str(path), 'default'
    if not args.model:
        raise MgeoError('give MODEL (checkpoint, .onnx, .engine or preset:NAME) or --default-model')
    if args.model.startswith('preset:'):
        import torch

        from mgeo_ros.model import build_model
        from mgeo_ros.model.configs import preset

        torch.manual_seed(0)
        name = args.model.split(':', 1)[1]
        return build_model(preset(name)).eval(), f'{name} (random weights)'
    if not os.path.exists(args.model):
        raise MgeoError(f'MODEL {args.model}: no such file (expected a checkpoint, .onnx, .engine or preset:NAME, '
                        'e.g. preset:tiny); check the path')
    return args.model, os.path.basename(os.path.normpath(args.model))


def _cache_dir(args) -> Path:
    from mgeo_ros.runtime.predictor import default_cache_dir

    return Path(args.cache_dir) if args.cache_dir else default_cache_dir() / 'bench'


def _model_tag(model, label: str) -> str:
    if isinstance(model, (str, os.PathLike)):
        return hashlib.sha256(os.path.abspath(model).encode()).hexdigest()[:10]
    from mgeo_ros.export.onnx_export import config_hash

    return config_hash(getattr(model, 'config', {'label': label}))


def onnx_for(model, label: str, size: tuple[int, int], num_tokens: int, args, precision: str = 'fp32') -> str:
    """An ONNX for this checkpoint, frame size and precision (exported once, cached). An engine computes in its
    ONNX's types, so the TensorRT row's fp16 needs the fp16 graph (`mgeo export --precision fp16`)."""
    from mgeo_ros.export.onnx_export import export_onnx

    suffix = '' if precision == 'fp32' else f'_{precision}'
    path = _cache_dir(args) / f'{_model_tag(model, label)}_{size[0]}x{size[1]}_{num_tokens}{suffix}.onnx'
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f'[bench] exporting ONNX for {size[0]}x{size[1]} -> {path}', file=sys.stderr)
        logging.getLogger('torch').setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            export_onnx(model, str(path), size, num_tokens=num_tokens, parity=False, precision=precision)
    return str(path)


def make_predictor(backend: str, model, label: str, size, args, precision: str):
    """A Predictor for one backend, or raise BackendUnavailableError with why not."""
    from mgeo_ros.runtime.predictor import Predictor, model_kind

    kind = model_kind(model)
    if backend == 'torch':
        return Predictor(model, backend='torch', num_tokens=args.num_tokens, precision=precision,
                         threads=args.threads)
    if backend == 'onnxruntime':
        if kind == 'engine':
            raise BackendUnavailableError('onnxruntime needs an .onnx or a checkpoint, got an engine')
        onnx_path = model if kind == 'onnx' else onnx_for(model, label, size, args.num_tokens, args)
        return Predictor(onnx_path, backend='onnxruntime', threads=args.threads)
    # tensorrt
    from mgeo_ros.runtime.devices import has_nvidia_gpu, tensorrt_available

    if not tensorrt_available():
        raise BackendUnavailableError('--backend tensorrt: TensorRT (python package `tensorrt`) is not installed; '
                                      'install it (docs/deployment.md) or pick --backend onnxruntime')
    if not has_nvidia_gpu():
        raise BackendUnavailableError('--backend tensorrt: no NVIDIA GPU found; pick --backend onnxruntime')
    if kind == 'engine':
        return Predictor(model, backend='tensorrt')
    onnx_path = model if kind == 'onnx' else onnx_for(model, label, size, args.num_tokens, args, precision)
    return Predictor(onnx_path, backend='tensorrt', precision=precision, cache_dir=_cache_dir(args))


# ---- measurement --------------------------------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float('nan')


def measure_predictor(pred, rgb: np.ndarray, runs: int, warmup: int) -> dict:
    convert, convert_how = make_converter(rgb)
    pack, pack_how = make_cloud_packer()
    per_stage = {s: [] for s in STAGES}
    e2e = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        frame = convert()
        t1 = time.perf_counter()
        p = pred.predict(frame)
        t2 = time.perf_counter()
        pack(p, frame)
        t3 = time.perf_counter()
        if i < warmup:
            continue
        per_stage['convert'].append((t1 - t0) * 1e3)
        for s in ('preprocess', 'forward', 'postprocess'):
            per_stage[s].append(p.timings_ms[s])
        per_stage['cloud'].append((t3 - t2) * 1e3)
        e2e.append((t3 - t0) * 1e3)
    ms = {s: _median(v) for s, v in per_stage.items()}
    e2e_ms = _median(e2e)
    return {'ms': ms, 'e2e_ms': e2e_ms, 'fps': 1e3 / e2e_ms, 'overhead_ratio': (e2e_ms - ms['forward']) / ms['forward'],
            'convert_via': convert_how, 'cloud_via': pack_how, 'valid_fraction': float(p.mask.mean())}


def synthetic_depth(width: int, height: int) -> np.ndarray:
    """A floor-like slanted plane with a box in front of it (occlusion edges) and a NaN hole: metres, float32."""
    rows = np.arange(height, dtype=np.float32)[:, None] + 0.5 * height
    depth = np.broadcast_to(0.6 * 525.0 / rows, (height, width)).astype(np.float32) + 1.0
    depth[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 0.8
    depth[: height // 10, : width // 10] = np.nan
    return depth


def measure_filter(width: int, height: int, runs: int, warmup: int) -> dict:
    """The node's flying-pixel filter (default tolerance, 3x3 window) at this size, timed interleaved with the
    cloud packing of the same depth: on a shared CPU the ratio of the two is steadier than either time."""
    from mgeo_ros.geometry import Intrinsics
    from mgeo_ros.node_params import SPECS
    from mgeo_ros.runtime.flying_pixels import DepthJumpTest

    depth = synthetic_depth(width, height)
    intr = Intrinsics(fx=0.8 * width, fy=0.8 * width, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width,
                      height=height)
    pack, _ = make_cloud_packer()
    test = DepthJumpTest()
    jump, radius = SPECS['flying_pixel_max_jump'].default, SPECS['flying_pixel_radius'].default
    from mgeo_ros.runtime.prediction import Prediction

    frame = Prediction(depth=depth, mask=np.isfinite(depth), intrinsics=intr, metric_scale=1.0)
    filt, cloud = [], []
    for i in range(warmup + 5 * runs):  # the filter is short: more runs for a steady median
        t0 = time.perf_counter()
        test(depth, jump, radius)
        t1 = time.perf_counter()
        pack(frame, None)
        t2 = time.perf_counter()
        if i >= warmup:
            filt.append((t1 - t0) * 1e3)
            cloud.append((t2 - t1) * 1e3)
    ms = _median(filt)
    return {'size': f'{width}x{height}', 'backend': 'flying-pixel filter', 'device': 'cpu', 'precision': 'fp32',
            'ms': {'postprocess': ms, 'cloud': _median(cloud)}, 'e2e_ms': ms, 'fps': 1e3 / ms,
            'overhead_ratio': None, 'speedup_vs_baseline': None, 'filter_vs_cloud': ms / _median(cloud),
            'peak_rss_mib': peak_rss_mib()}


def measure_reference(model, rgb: np.ndarray, num_tokens: int, runs: int, warmup: int, use_fp16: bool) -> dict:
    """The reference pipeline (`model.infer` on the full frame) end to end, including tensor conversion."""
    import torch

    device = next(model.parameters()).device
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        image = torch.from_numpy(rgb).to(device).permute(2, 0, 1).float() / 255.0
        out = model.infer(image, num_tokens=num_tokens, use_fp16=use_fp16)
        out = {k: v.cpu().numpy() for k, v in out.items()}
        t1 = time.perf_counter()
        if i >= warmup:
            times.append((t1 - t0) * 1e3)
    e2e = _median(times)
    return {'e2e_ms': e2e, 'fps': 1e3 / e2e}


def _torch_module(model):
    """The torch module behind a model argument (for the reference baseline), or None for .onnx/.engine."""
    from mgeo_ros.export.onnx_export import load_model
    from mgeo_ros.runtime.predictor import model_kind

    return load_model(model) if model_kind(model) == 'checkpoint' else None


def run_bench(args) -> dict:
    from mgeo_ros.runtime.devices import has_nvidia_gpu, torch_cuda_available
    from mgeo_ros.runtime.predictor import model_kind

    model, label = resolve_model(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    sizes = args.size or [(640, 480)]
    kind = model_kind(model)
    backends = args.backend or {'checkpoint': ['torch', 'onnxruntime', 'tensorrt'],
                                'onnx': ['onnxruntime', 'tensorrt'], 'engine': ['tensorrt']}[kind]
    gpu = has_nvidia_gpu()
    precision = args.precision or ('fp16' if gpu else 'fp32')
    rows, unavailable = [], {}
    torch_model = None if args.no_baseline else _torch_module(model)
    for size in sizes:
        rgb = synthetic_frame(*size)
        baseline = None
        if torch_model is not None:
            use_fp16 = precision == 'fp16' and torch_cuda_available()
            if torch_cuda_available():
                torch_model = torch_model.cuda()
            baseline = measure_reference(torch_model, rgb, args.num_tokens, args.runs, args.warmup, use_fp16)
            rows.append({'size': f'{size[0]}x{size[1]}', 'backend': 'reference (model.infer)',
                         'device': str(next(torch_model.parameters()).device), 'precision': precision if use_fp16
                         else 'fp32', 'ms': {}, 'e2e_ms': baseline['e2e_ms'], 'fps': baseline['fps'],
                         'overhead_ratio': None, 'speedup_vs_baseline': 1.0, 'peak_rss_mib': peak_rss_mib()})
        for backend in backends:
            try:
                pred = make_predictor(backend, model, label, size, args, precision)
            except (BackendUnavailableError, ImportError) as e:
                unavailable[backend] = str(e)
                continue
            with contextlib.suppress(Exception):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
            result = measure_predictor(pred, rgb, args.runs, args.warmup)
            peak_dev = pred.backend.peak_device_memory_bytes()
            net_w, net_h = pred.network_size(*size)
            rows.append({'size': f'{size[0]}x{size[1]}', 'backend': backend, 'device': pred.backend.device,
                         'precision': pred.backend.precision, 'network_input': f'{net_w}x{net_h}', **result,
                         'speedup_vs_baseline': baseline['e2e_ms'] / result['e2e_ms'] if baseline else None,
                         'peak_rss_mib': peak_rss_mib(),
                         'cuda_peak_mib': None if peak_dev is None else peak_dev / 2 ** 20})
            del pred
        rows.append(measure_filter(size[0], size[1], args.runs, args.warmup))
    meta = {'model': label, 'num_tokens': args.num_tokens, 'runs': args.runs, 'warmup': args.warmup,
            'machine': f'{platform.machine()} {os.cpu_count()} cpu', 'python': platform.python_version(),
            'nvidia_gpu': gpu, 'threads': args.threads}
    with contextlib.suppress(ImportError):
        import torch

        meta['torch'] = torch.__version__
        meta['torch_threads'] = torch.get_num_threads()
    with contextlib.suppress(ImportError):
        import onnxruntime

        meta['onnxruntime'] = onnxruntime.__version__
    return {'meta': meta, 'rows': rows, 'unavailable': unavailable}


def format_table(report: dict) -> str:
    head = (f"{'size':>9} {'backend':<24} {'device':<8} {'prec':<5} {'convert':>7} {'prep':>6} {'forward':>8} "
            f"{'post':>6} {'cloud':>6} {'e2e ms':>8} {'fps':>6} {'ovh/fwd':>7} {'vs ref':>6} {'RSS MiB':>7} "
            f"{'CUDA MiB':>8}")
    lines = [head, '-' * len(head)]

    def num(v, fmt):
        return '-' if v is None else format(v, fmt)

    for r in report['rows']:
        ms = r['ms']
        lines.append(f"{r['size']:>9} {r['backend']:<24} {r['device'].split(' ')[0]:<8} {r['precision']:<5} "
                     f"{num(ms.get('convert'), '7.2f')} {num(ms.get('preprocess'), '6.2f')} "
                     f"{num(ms.get('forward'), '8.1f')} {num(ms.get('postprocess'), '6.2f')} "
                     f"{num(ms.get('cloud'), '6.2f')} {r['e2e_ms']:8.1f} {r['fps']:6.2f} "
                     f"{num(r['overhead_ratio'], '7.3f')} {num(r['speedup_vs_baseline'], '5.2f')}x "
                     f"{r['peak_rss_mib']:7.0f} {num(r.get('cuda_peak_mib'), '8.0f')}")
    m = report['meta']
    lines.append(f"model {m['model']}, num_tokens {m['num_tokens']}, medians of {m['runs']} runs after {m['warmup']} "
                 f"warm-up; {m['machine']}, torch {m.get('torch', '-')} ({m.get('torch_threads', '-')} threads), "
                 f"onnxruntime {m.get('onnxruntime', '-')}")
    lines.append('ovh/fwd = (end-to-end - forward) / forward; vs ref = reference model.infer time / this time; '
                 'RSS = process peak so far')
    for r in report['rows']:
        if 'filter_vs_cloud' in r:
            lines.append(f"flying-pixel filter {r['size']}: {r['e2e_ms']:.2f} ms (post column) = "
                         f"{r['filter_vs_cloud']:.2f}x the xyz cloud packing of the same depth (cloud column), "
                         'timed interleaved')
    for b, why in report['unavailable'].items():
        lines.append(f'{b}: not measured — {why}')
    return '\n'.join(lines)


def gil_stall(forward, runs: int = 20) -> dict:
    """Whether `forward()` lets other Python threads run while it waits: it runs `runs` times on a worker thread
    while this thread counts the longest stretch in which it could not run a Python instruction. A forward that
    holds the GIL stalls this thread for about its whole duration; one that releases it, for a scheduler slice
    (the interpreter's switch interval, 5 ms by default, or a busy core). {'forward_ms': median forward,
    'longest_stall_ms': that stretch}."""
    import threading

    forward()  # warm-up (allocations, first-call setup)
    times: list[float] = []
    done = threading.Event()

    def loop() -> None:
        for _ in range(runs):
            t0 = time.perf_counter()
            forward()
            times.append((time.perf_counter() - t0) * 1e3)
        done.set()
    worker = threading.Thread(target=loop, daemon=True)
    longest, last = 0.0, time.perf_counter()
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    return {'forward_ms': _median(times), 'longest_stall_ms': longest * 1e3}
