"""The variables `make test-numerics` runs the numeric tests under (test/kernel_env.py) really change the kernels:
numpy runs without the extensions they name, and at least one level picks another OpenBLAS core than this CPU's own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_env import LEVELS, kernel_env

REPO = Path(__file__).resolve().parents[1]
PROBE = ('import numpy\n'
         'from numpy._core._multiarray_umath import __cpu_features__\n'
         'numpy.ones((8, 8)) @ numpy.ones((8, 8))\n'
         'print("on", *[f for f, on in __cpu_features__.items() if on])\n')


def _child(env: dict[str, str]) -> tuple[str, set[str]]:
    """(OpenBLAS core, numpy's available features) in a process started with `env` added."""
    base = {k: v for k, v in os.environ.items() if k not in kernel_env('sse')}
    done = subprocess.run([sys.executable, '-c', PROBE], env={**base, **env, 'OPENBLAS_VERBOSE': '2'},
                          capture_output=True, text=True, timeout=120, check=True)
    words = (done.stdout + done.stderr).split()
    core = words[words.index('Core:') + 1] if 'Core:' in words else ''
    return core, set(done.stdout.split('on', 1)[1].split())


def test_each_level_switches_the_kernels_it_names():
    default_core, default_features = _child({})
    cores = set()
    for level in LEVELS:
        env = kernel_env(level)
        if env is None:
            continue
        core, features = _child(env)
        cores.add(core)
        disabled = {f for f in env['NPY_DISABLE_CPU_FEATURES'].split(',') if f}
        assert disabled <= default_features and not disabled & features, (level, disabled, features)
    if default_core:  # OpenBLAS says which core it runs
        assert cores - {default_core}, f'every level runs the default OpenBLAS core {default_core}'


def test_the_command_line_prints_words_for_env_and_refuses_an_unknown_level():
    done = subprocess.run([sys.executable, 'test/kernel_env.py', 'sse'], cwd=REPO, capture_output=True, text=True,
                          check=True)
    words = dict(w.split('=', 1) for w in done.stdout.split())
    assert words == kernel_env('sse')
    bad = subprocess.run([sys.executable, 'test/kernel_env.py', 'avx9'], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and 'usage' in bad.stderr
    with pytest.raises(ValueError, match='avx9'):
        kernel_env('avx9')
