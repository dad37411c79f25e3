"""The shell commands the documentation shows, as words: read by test_docs.py (every command parses) and by the tests
that run a documented recipe end to end, so that what they run is what a reader copies."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# values a documented command leaves to the reader
PLACEHOLDERS = {'$PWD': '/tmp', '$HOME': '/tmp'}


def shell_blocks(text: str) -> list[str]:
    return re.findall(r'^ *```bash\n(.*?)^ *```', text, flags=re.M | re.S)


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or a higher level (a `#` line inside
    a fenced block is a shell comment, not a heading)."""
    lines, start, level, fenced = text.splitlines(keepends=True), None, 0, False
    for i, line in enumerate(lines):
        if line.lstrip().startswith('```'):
            fenced = not fenced
        heading_level = len(line) - len(line.lstrip('#')) if not fenced and line.startswith('#') else 0
        if start is None and heading_level and line.strip('# \n') == heading:
            start, level = i + 1, heading_level
        elif start is not None and 0 < heading_level <= level:
            return ''.join(lines[start:i])
    assert start is not None, f'no heading {heading!r}'
    return ''.join(lines[start:])


def commands(text: str) -> list[list[str]]:
    """Each command line of the shell blocks as words: continuation lines joined, comments dropped, `$(python -m
    mgeo_ros...)` replaced by what it prints."""
    out = []
    for block in shell_blocks(text):
        joined = re.sub(r'\\\n', ' ', block)
        for line in joined.splitlines():
            for key, value in PLACEHOLDERS.items():
                line = line.replace(key, value)
            line = re.sub(r'\$\((python -m mgeo_ros[^)]*)\)', lambda m: _run_python_m(m.group(1)), line)
            if '$(' in line:
                continue   # a substitution of another tool (ros2 pkg prefix ...): not ours to run
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def _run_python_m(command: str) -> str:
    """What a documented `$(python -m mgeo_ros...)` prints, run outside the repository (a reader's shell is anywhere
    once the package is installed; PYTHONPATH stands in for the install)."""
    words = shlex.split(command)
    with tempfile.TemporaryDirectory() as elsewhere:
        done = subprocess.run([sys.executable, *words[1:]], capture_output=True, text=True, cwd=elsewhere,
                              env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert done.returncode == 0, f'`{command}` failed from {elsewhere}: {done.stderr}'
    return done.stdout
