"""`mgeo synth --out DIR --count N --seed S [--size WxH]`: render procedural scenes into the folder format."""
from __future__ import annotations

import argparse
import time

from mgeo_ros.cli_args import check_new_output, choice_list, non_negative_int, positive_int, size_wxh

KINDS = ('indoor', 'outdoor')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, help='output dataset root (folder format); must be new or empty')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty --out (replaces its frames)')
    parser.add_argument('--count', type=positive_int, default=100, help='number of frames (100)')
    parser.add_argument('--seed', type=non_negative_int, default=0, help='first scene seed; frame i uses seed + i (0)')
    parser.add_argument('--size', type=size_wxh, default=(320, 240), help='WxH in pixels (320x240)')
    parser.add_argument('--kinds', type=choice_list(KINDS), default=KINDS, help='comma list of indoor,outdoor (both)')
    parser.add_argument('--device', default='cpu', help='torch device: cpu or cuda (cpu)')
    parser.add_argument('--batch', type=positive_int, default=8, help='frames rendered together (8)')
    parser.add_argument('--workers', type=positive_int, default=1,
                        help='CPU rendering processes (1); each renders with one torch thread')
    parser.add_argument('--shadow-samples', type=non_negative_int, default=1,
                        help='shadow rays per pixel and light (dithered over the light: soft edges); 0 = none (1)')
    parser.add_argument('--depth-format', choices=('npy', 'png'), default='npy',
                        help='npy = float32 metres (default); png = 16-bit mm (outdoor depth beyond 65.5 m is lost)')


def _render(job):
    """One batch -> list of Samples (runs in a worker process when --workers > 1)."""
    from mgeo_ros.train.data.synth import render_batch

    seeds, size, kinds, device, shadow_samples = job
    return seeds, render_batch(seeds, size, kinds, device, shadow_samples).samples()


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from mgeo_ros.errors import BadInputError
    from mgeo_ros.train.data.folder import write_folder, write_sample

    if str(args.device).startswith('cuda') and not torch.cuda.is_available():
        raise BadInputError(f'--device {args.device}: this torch has no usable CUDA device; use --device cpu')
    check_new_output(args.out, '--out', args.overwrite)
    kinds = tuple(args.kinds)
    write_folder([], args.out)  # creates the folder and meta.json (metric)
    jobs = [(list(range(args.seed + s, args.seed + min(s + args.batch, args.count))), args.size, kinds, args.device,
             args.shadow_samples) for s in range(0, args.count, args.batch)]
    t0 = time.perf_counter()
    with tqdm(total=args.count, unit='frame', desc='synth') as bar:
        if args.workers > 1 and args.device == 'cpu':
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(args.workers, mp_context=mp.get_context('spawn')) as pool:
                results = pool.map(_render, jobs)
                _write_all(results, args, bar, write_sample)
        else:
            _write_all(map(_render, jobs), args, bar, write_sample)
    total = time.perf_counter() - t0
    w, h = args.size
    print(f'{args.count} frames {w}x{h} on {args.device} ({args.workers} worker(s)): '
          f'{args.count / max(total, 1e-9):.1f} samples/s including writing')
    return 0


def _write_all(results, args, bar, write_sample) -> None:
    for seeds, samples in results:
        for seed, sample in zip(seeds, samples):
            write_sample(sample, args.out, f'{seed:06d}', args.depth_format)
        bar.update(len(samples))
