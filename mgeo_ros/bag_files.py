"""Opening a ROS 2 bag (rosbags, no ROS needed) so that every way a bag can be wrong — missing, empty, truncated,
a folder without metadata.yaml, not a bag at all, a topic it does not have — is one BadInputError that names the
bag and says what is wrong with it. Used by the datasets, `mgeo distill` and bag replay."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mgeo_ros.errors import BadInputError

BAG_KINDS = 'a rosbag2 folder with metadata.yaml, or a .mcap / .db3 file'


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.rstrip('.')


def open_reader(path: str | Path) -> Any:
    """An opened rosbags Reader for `path` (the caller closes it); BadInputError naming the bag when it cannot be
    read as one. A .db3/.mcap file inside a bag folder opens the folder."""
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if p.is_file() and (p.parent / 'metadata.yaml').is_file():
        p = p.parent
    if not p.exists():
        raise BadInputError(f'bag {p}: does not exist (expected {BAG_KINDS})')
    if p.is_dir() and not (p / 'metadata.yaml').is_file():
        raise BadInputError(f'bag {p}: this folder has no metadata.yaml, so it is not a rosbag2 bag (expected '
                            f'{BAG_KINDS}); give the .mcap/.db3 file itself, or the bag folder')
    if p.is_file() and p.suffix not in ('.mcap', '.db3'):
        raise BadInputError(f'bag {p}: not a bag file (expected {BAG_KINDS})')
    if p.is_file() and p.stat().st_size == 0:
        raise BadInputError(f'bag {p}: the file is empty (0 bytes); was the recording interrupted?')
    reader = Reader(p)
    try:
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, struct/KeyError, ... for a damaged file
        raise BadInputError(f'bag {p}: cannot be read ({_why(exc)}); it is damaged, truncated or not a bag '
                            f'(expected {BAG_KINDS})') from exc
    return reader


@contextmanager
def open_bag(path: str | Path) -> Iterator[Any]:
    """`open_reader` as a context manager."""
    reader = open_reader(path)
    try:
        yield reader
    finally:
        reader.close()


def read_messages(path: str | Path, reader: Any, connections: Iterable[Any]) -> Iterator[tuple[Any, int, bytes]]:
    """reader.messages(connections=...) with a damaged (e.g. truncated) bag reported as BadInputError."""
    try:
        yield from reader.messages(connections=list(connections))
    except BadInputError:
        raise
    except Exception as exc:  # a chunk cut short surfaces from the storage plugin as any of several types
        raise BadInputError(f'bag {path}: reading its messages failed ({_why(exc)}); the bag is damaged or '
                            'truncated (re-record it, or `ros2 bag reindex` a folder bag)') from exc


def require_topic(path: str | Path, connections: Mapping[str, Any], topic: str, flag: str,
                  types: tuple[str, ...] = ()) -> None:
    """BadInputError unless the bag has `topic` (of one of `types`); the message lists the topics it has."""
    listing = ', '.join(f'{t} ({c.msgtype})' for t, c in sorted(connections.items())) or 'none'
    if topic not in connections:
        raise BadInputError(f'{flag} {topic}: bag {path} has no such topic; its topics: {listing}')
    if types and connections[topic].msgtype not in types:
        raise BadInputError(f'{flag} {topic}: is a {connections[topic].msgtype} topic, expected '
                            f'{" or ".join(types)}; its topics: {listing}')
