"""Environment variables that make numpy, its OpenBLAS, torch (ATen, MKL, oneDNN) and OpenCV (its own SIMD and IPP)
run other CPU kernels than the ones they pick on this CPU, for `make test-numerics`: a numeric test that holds only
with one CPU's kernels (the last bits of a sum, an ill-posed solve) fails on this machine, whatever CPU it is.

Levels: `sse` (x86 SSE kernels everywhere; on ARM the generic ARMv8 kernels and numpy without its dispatched
extensions) and `avx2` (x86 only, where the CPU has AVX2: what an AVX2 CPU without AVX-512 runs). Between them at
least one differs from the default choice on any x86 CPU. ONNX Runtime has no switch for its kernels: it runs as
picked.

`python test/kernel_env.py LEVEL` prints the assignments as words for `env`, nothing when the level does not apply
to this CPU; `--show` adds a line saying what each library then runs.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys

LEVELS = ('sse', 'avx2')
_X86 = platform.machine().lower() in ('x86_64', 'amd64', 'i686', 'i386')


def _numpy_dispatch() -> tuple[list[str], dict[str, bool]]:
    """numpy's dispatched extensions that this CPU has (the ones NPY_DISABLE_CPU_FEATURES may switch off)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f)], __cpu_features__


def _opencv_dispatch() -> list[str]:
    """OpenCV's dispatched extensions (starred in its feature line), in the names OPENCV_CPU_DISABLE takes."""
    import cv2

    return [w.strip('*?') for w in cv2.getCPUFeaturesLine().split() if w.startswith('*')]


def kernel_env(level: str) -> dict[str, str] | None:
    """The variables for `level`, or None where the level does not apply to this CPU."""
    if level not in LEVELS:
        raise ValueError(f'level {level!r}: expected one of {LEVELS}')
    found, features = _numpy_dispatch()
    if not _X86:
        if level != 'sse':
            return None
        return {'OPENBLAS_CORETYPE': 'ARMV8', 'NPY_DISABLE_CPU_FEATURES': ','.join(found)}
    if level == 'avx2' and not features.get('AVX2'):
        return None
    opencv = _opencv_dispatch()
    if level == 'sse':
        return {
            'OPENBLAS_CORETYPE': 'Prescott',
            'NPY_DISABLE_CPU_FEATURES': ','.join(found),
            'ATEN_CPU_CAPABILITY': 'default',
            'MKL_ENABLE_INSTRUCTIONS': 'SSE4_2',
            'ONEDNN_MAX_CPU_ISA': 'SSE41',
            'OPENCV_CPU_DISABLE': ','.join(f for f in opencv if not f.startswith('SSE')),
            'OPENCV_IPP': 'sse42',
        }
    return {
        'OPENBLAS_CORETYPE': 'Haswell',
        'NPY_DISABLE_CPU_FEATURES': ','.join(f for f in found if f not in ('X86_V2', 'X86_V3', 'AVX2', 'FMA3')),
        'ATEN_CPU_CAPABILITY': 'avx2',
        'MKL_ENABLE_INSTRUCTIONS': 'AVX2',
        'ONEDNN_MAX_CPU_ISA': 'AVX2',
        'OPENCV_CPU_DISABLE': ','.join(f for f in opencv if f.startswith('AVX512')),
        'OPENCV_IPP': 'avx2',
    }


def _show(env: dict[str, str]) -> str:
    """What numpy's OpenBLAS and torch pick under `env`, from a child process (OpenBLAS reads it at load)."""
    code = ('import numpy, torch\n'
            'numpy.ones((4, 4)) @ numpy.ones((4, 4))\n'
            'print("torch", torch.backends.cpu.get_cpu_capability())\n')
    done = subprocess.run([sys.executable, '-c', code], env={**os.environ, **env, 'OPENBLAS_VERBOSE': '2'},
                          capture_output=True, text=True, timeout=120)
    words = (done.stdout + done.stderr).split()
    core = words[words.index('Core:') + 1] if 'Core:' in words else '?'
    torch = words[words.index('torch') + 1] if 'torch' in words else '?'
    return f'OpenBLAS core {core}, torch {torch}, numpy without [{env.get("NPY_DISABLE_CPU_FEATURES", "")}]'


def main(argv: list[str]) -> int:
    show = '--show' in argv
    args = [a for a in argv if a != '--show']
    if len(args) != 1 or args[0] not in LEVELS:
        print(f'usage: python test/kernel_env.py [--show] {{{",".join(LEVELS)}}}', file=sys.stderr)
        return 2
    env = kernel_env(args[0])
    if env is None:
        return 0
    if show:
        print(_show(env), file=sys.stderr)
    print(' '.join(f'{k}={v}' for k, v in env.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
