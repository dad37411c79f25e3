"""Argument types and up-front checks shared by every command line (`mgeo ...`, `mgeo_depth_node`), so a typo is
refused before any work starts, with the same words everywhere: what was given, what is expected, what to do.

Plain Python (no torch, no rclpy): every layer may use it.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mgeo_ros.errors import BadInputError

# ViT token budget accepted by every command and the node: the grid of the smallest test models (4x4) up to what
# a 16-bit-index attention on a large GPU still holds; 0 and 100000 (a typo for 1000) are refused.
NUM_TOKENS_MIN = 16
NUM_TOKENS_MAX = 10000


def _number(kind: type, lo: float | None, hi: float | None, unit: str, what: str) -> Callable[[str], float]:
    words = {int: 'an integer', float: 'a number'}[kind]
    suffix = f' {unit}' if unit else ''
    if lo is not None and hi is not None:
        expect = f'{words} in [{lo:g}, {hi:g}]{suffix}'
    elif lo is not None:
        expect = f'{words} >= {lo:g}{suffix}'
    elif hi is not None:
        expect = f'{words} <= {hi:g}{suffix}'
    else:
        expect = words

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected {expect}, got {text!r}') from None
        if kind is float and value != value:
            raise argparse.ArgumentTypeError(f'expected {expect}, got {text!r}')
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f'expected {expect}{what}, got {text}')
        return value

    parse.__name__ = f'{kind.__name__}_range'  # argparse names the type in its own messages
    return parse


def int_in(lo: int | None = None, hi: int | None = None, unit: str = '', what: str = '') -> Callable[[str], int]:
    """argparse type: an integer within [lo, hi] (either bound may be None); `what` is appended to the expectation."""
    return _number(int, lo, hi, unit, what)  # type: ignore[return-value]


def float_in(lo: float | None = None, hi: float | None = None, unit: str = '',
             what: str = '') -> Callable[[str], float]:
    """argparse type: a finite number within [lo, hi] (either bound may be None)."""
    return _number(float, lo, hi, unit, what)


num_tokens = int_in(NUM_TOKENS_MIN, NUM_TOKENS_MAX, 'tokens')
positive_int = int_in(1)
non_negative_int = int_in(0)


def size_wxh(text: str) -> tuple[int, int]:
    """argparse type: a frame size 'WxH' in pixels, e.g. 640x480 -> (640, 480)."""
    parts = text.lower().replace('×', 'x').split('x')
    try:
        w, h = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a size WxH in pixels (e.g. 640x480), got {text!r}') from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f'expected a size of at least 8x8 pixels (e.g. 640x480), got {text!r}')
    return w, h


def size_list(text: str) -> tuple[tuple[int, int], ...]:
    """argparse type: comma-separated frame sizes 'WxH,WxH', each as `size_wxh` takes it."""
    items = [t.strip() for t in text.split(',') if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f'expected comma-separated sizes WxH (e.g. 640x480,1280x720), got {text!r}')
    return tuple(size_wxh(t) for t in items)


def choice_list(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """argparse type: a comma list whose items are all in `choices` (e.g. --kinds indoor,outdoor)."""
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(k.strip() for k in text.split(',') if k.strip())
        bad = [k for k in items if k not in choices]
        if bad or not items:
            hint = _nearest_hint(bad[0], choices) if bad else ''
            raise argparse.ArgumentTypeError(f'{", ".join(bad) or "nothing"} is not one of {", ".join(choices)} '
                                             f'(a comma list){hint}')
        return items

    parse.__name__ = 'choice_list'
    return parse


def _nearest_hint(word: str, known) -> str:
    near = nearest(word, known)
    return f'; did you mean {near}?' if near else ''


def nearest(word: str, known) -> str | None:
    """The declared name closest to a misspelled one (difflib), or None when nothing is close."""
    import difflib

    found = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def check_new_output(path: str | Path, flag: str = '--out', overwrite: bool = False, *, is_dir: bool = True) -> Path:
    """Refuse an output that would overwrite or mix with existing data unless `overwrite`: an existing file where a
    folder is wanted is always refused; a non-empty folder (or an existing file, for a file output) needs
    --overwrite."""
    p = Path(path)
    if is_dir and p.exists() and not p.is_dir():
        raise BadInputError(f'{flag} {p} is an existing file, expected a folder; give a folder path')
    if not is_dir and p.is_dir():
        raise BadInputError(f'{flag} {p} is a folder, expected a file path')
    exists = (p.is_dir() and any(p.iterdir())) if is_dir else p.exists()
    if exists and not overwrite:
        what = 'folder is not empty' if is_dir else 'file exists'
        raise BadInputError(f'{flag} {p}: the {what}; writing there would mix with or replace its data. Choose a '
                            'new path, or pass --overwrite')
    return p


def check_input_file(path: str | Path, what: str, expected: str = '') -> Path:
    """An input file that must exist (not a folder): the message names the flag and the expected kind."""
    p = Path(path)
    kind = f' ({expected})' if expected else ''
    if not p.exists():
        raise BadInputError(f'{what} {p}: no such file{kind}; check the path')
    if p.is_dir():
        raise BadInputError(f'{what} {p} is a folder, expected a file{kind}')
    return p
