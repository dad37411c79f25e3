"""Rosbag dataset (sqlite3 or mcap, read with rosbags — no ROS needed): colour image (raw or compressed) + depth
registered to the colour camera (Image 16UC1 mm or 32FC1 m, or CompressedImage compressedDepth: 32FC1 or 16UC1, png
or rvl) + camera_info, paired by header stamp within a tolerance."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mgeo_ros.bag_files import open_bag, read_messages, require_topic
from mgeo_ros.depth_codec import decode_depth_metres
from mgeo_ros.errors import BadInputError, DepthCodecError
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.image_codec import compressed_to_rgb8, depth_image_to_metres, image_to_rgb8
from mgeo_ros.train.data.bag_writer import COMPRESSED, IMAGE, INFO, TYPESTORE
from mgeo_ros.train.data.sample import Sample


def image_to_rgb(msg) -> np.ndarray:
    """Image or CompressedImage -> RGB uint8 H×W×3, decoded exactly as the node decodes it (`image_codec`)."""
    if hasattr(msg, 'format'):
        return compressed_to_rgb8(msg)
    return image_to_rgb8(msg)


def depth_to_metres(msg) -> np.ndarray:
    """Depth Image (16UC1/mono16 millimetres, 32FC1 metres) or CompressedImage (compressedDepth 32FC1/16UC1 png/rvl,
    or the compressed transport's 16-bit png of millimetres) -> float32 metres, NaN invalid. A malformed
    compressedDepth frame raises DepthCodecError, whose `reason` names the fault."""
    if hasattr(msg, 'format'):
        fmt = msg.format or ''
        if 'compressedDepth' in fmt or ';' not in fmt:   # no ';': compressedDepth png as older bags write it
            return decode_depth_metres(fmt, msg.data)
        data = np.asarray(msg.data, dtype=np.uint8)
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DepthCodecError('png_decode', f'CompressedImage depth ({fmt!r}, {data.size} bytes) is not a png')
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise DepthCodecError('png_channels', f'CompressedImage depth ({fmt!r}) is {raw.dtype} {raw.shape}: '
                                                  'expected one 16-bit channel of millimetres')
        d = raw.astype(np.float32) * 1e-3
        d[~np.isfinite(d) | (d <= 0)] = np.nan
        return d
    return depth_image_to_metres(msg)


def stamp_ns(msg) -> int:
    """A message header's stamp in nanoseconds (the key that pairs messages of one frame)."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def bag_topics(path) -> dict[str, str]:
    """topic -> message type of a bag."""
    with open_bag(path) as r:
        return {c.topic: c.msgtype for c in r.connections}


def guess_topics(path) -> tuple[str, str, str]:
    """(image, depth, info) topics of a bag: the depth topic is the Image topic whose name mentions depth, the image
    topic is another Image/CompressedImage, and the CameraInfo topic sharing most of its prefix with the image."""
    topics = bag_topics(path)
    images = [t for t, ty in topics.items() if ty in (IMAGE, COMPRESSED)]
    depth = [t for t in images if 'depth' in t.lower()]
    colour = [t for t in images if 'depth' not in t.lower()]
    infos = [t for t, ty in topics.items() if ty == INFO]
    if not depth or not colour or not infos:
        raise BadInputError(f'{path}: cannot guess topics (images {colour}, depth {depth}, camera_info {infos}); '
                            'pass --image-topic/--depth-topic/--info-topic')
    image = sorted(colour)[0]
    info = max(infos, key=lambda t: (len(_common_prefix(t, image)), -len(t)))
    return image, sorted(depth)[0], info


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@dataclass
class PairingReport:
    """What pairing did: frames paired, and frames left without a partner on each topic."""

    paired: int = 0
    unpaired_images: int = 0
    unpaired_depths: int = 0
    camera_infos: int = 0
    notes: list = field(default_factory=list)
    refused_depths: dict = field(default_factory=dict)   # reason -> depth frames refused as malformed

    def __str__(self) -> str:
        text = (f'{self.paired} paired, {self.unpaired_images} image(s) and {self.unpaired_depths} depth frame(s) '
                f'unpaired, {self.camera_infos} camera_info message(s)')
        if self.refused_depths:
            text += f', {sum(self.refused_depths.values())} depth frame(s) refused ({refusal_text(self)})'
        return text


def refusal_text(report: PairingReport) -> str:
    """'rvl_underfill: 2, short_header: 1': why depth frames were refused, most frequent first."""
    return ', '.join(f'{k}: {v}' for k, v in sorted(report.refused_depths.items(), key=lambda kv: (-kv[1], kv[0])))


def depth_refusal(msgtype: str, raw: bytes) -> str | None:
    """Why a depth message cannot be read (a DepthCodecError's reason, 'bad_image' for a malformed Image), or
    None when it decodes."""
    try:
        depth_to_metres(TYPESTORE.deserialize_cdr(raw, msgtype))
    except DepthCodecError as exc:
        return exc.reason
    except BadInputError:
        return 'bad_image'
    return None


def pair_stamps(image_ns: list[int], depth_ns: list[int], tolerance_ns: int) -> list[tuple[int, int]]:
    """One-to-one (image index, depth index) pairs whose stamps differ by at most tolerance_ns, closest first."""
    order = sorted(range(len(depth_ns)), key=lambda j: depth_ns[j])
    ds = [depth_ns[j] for j in order]
    cands = []
    for i, t in enumerate(image_ns):
        k = bisect.bisect_left(ds, t)
        for kk in (k - 1, k):
            if 0 <= kk < len(ds) and abs(ds[kk] - t) <= tolerance_ns:
                cands.append((abs(ds[kk] - t), i, order[kk]))
    used_i, used_d, pairs = set(), set(), []
    for _, i, j in sorted(cands):
        if i not in used_i and j not in used_d:
            used_i.add(i)
            used_d.add(j)
            pairs.append((i, j))
    return sorted(pairs)


class BagDataset:
    """Map-style dataset of the paired frames of a bag. One pass at construction keeps the raw bytes of the colour
    and depth messages in memory (fine for test/eval bags; use `mgeo data extract` for big ones) and decodes lazily.
    Each paired depth frame is decoded once at construction: a malformed one (e.g. a compressedDepth frame cut
    short) drops its pair and is counted by reason. `report` says how many frames were paired, left unpaired and
    refused."""

    def __init__(self, path, image_topic: str | None = None, depth_topic: str | None = None,
                 info_topic: str | None = None, tolerance_s: float = 0.02, metric: bool = True) -> None:
        self.path = Path(path)
        if not tolerance_s > 0:
            raise BadInputError(f'tolerance {tolerance_s} s: expected a stamp difference > 0 s (e.g. 0.02)')
        with open_bag(self.path):  # a missing or damaged bag is reported before topics are guessed
            pass
        if image_topic is None or depth_topic is None or info_topic is None:
            g = guess_topics(self.path)
            image_topic, depth_topic, info_topic = image_topic or g[0], depth_topic or g[1], info_topic or g[2]
        self.image_topic, self.depth_topic, self.info_topic = image_topic, depth_topic, info_topic
        self.metric = metric
        images, depths, infos, distorted = [], [], [], False
        with open_bag(self.path) as reader:
            conns = {c.topic: c for c in reader.connections}
            require_topic(self.path, conns, image_topic, 'image topic', (IMAGE, COMPRESSED))
            require_topic(self.path, conns, depth_topic, 'depth topic', (IMAGE, COMPRESSED))
            require_topic(self.path, conns, info_topic, 'camera_info topic', (INFO,))
            wanted = [conns[image_topic], conns[depth_topic], conns[info_topic]]
            for conn, _, raw in read_messages(self.path, reader, wanted):
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                if conn.topic == info_topic:
                    infos.append((stamp_ns(msg), Intrinsics.from_K(msg.k, int(msg.width), int(msg.height))))
                    distorted = distorted or bool(np.any(np.abs(np.asarray(msg.d, dtype=float)) > 1e-9))
                else:
                    (images if conn.topic == image_topic else depths).append((stamp_ns(msg), conn.msgtype,
                                                                             bytes(raw)))
        if not infos:
            raise BadInputError(f'{self.path}: no CameraInfo on {info_topic!r}')
        infos.sort(key=lambda x: x[0])
        self._info_ns, self._infos = [s for s, _ in infos], [i for _, i in infos]
        pairs = pair_stamps([s for s, _, _ in images], [s for s, _, _ in depths], int(round(tolerance_s * 1e9)))
        refused: dict[str, int] = {}
        kept = []
        for i, j in pairs:
            reason = depth_refusal(depths[j][1], depths[j][2])
            if reason is None:
                kept.append((i, j))
            else:
                refused[reason] = refused.get(reason, 0) + 1
        self._frames = [(images[i], depths[j]) for i, j in kept]
        self.report = PairingReport(len(kept), len(images) - len(pairs), len(depths) - len(pairs), len(infos),
                                    refused_depths=refused)
        if not pairs:
            raise BadInputError(f'bag {self.path}: no colour/depth pairs within {tolerance_s} s ({len(images)} '
                                f'image(s) on {image_topic}, {len(depths)} depth frame(s) on {depth_topic}); check '
                                'the topics and raise the tolerance if the stamps are further apart')
        if not kept:
            raise BadInputError(f'bag {self.path}: every one of the {len(pairs)} depth frame(s) on {depth_topic} '
                                f'paired with an image is malformed ({refusal_text(self.report)}); check that the '
                                'topic holds depth (Image 16UC1/32FC1 or CompressedImage compressedDepth)')
        if refused:
            self.report.notes.append(f'{depth_topic}: {sum(refused.values())} depth frame(s) refused as malformed '
                                     f'({refusal_text(self.report)}); their frames are left out')
        if distorted:
            self.report.notes.append(f'{info_topic}: non-zero distortion; images are used as if rectified '
                                     '(record image_rect topics for exact geometry)')

    def __len__(self) -> int:
        return len(self._frames)

    def stamp_ns(self, index: int) -> int:
        return self._frames[index][0][0]

    def _intrinsics_at(self, stamp: int) -> Intrinsics:
        k = bisect.bisect_right(self._info_ns, stamp) - 1
        return self._infos[max(k, 0)]

    def __getitem__(self, index: int) -> Sample:
        (stamp, itype, iraw), (_, dtype_, draw) = self._frames[index]
        rgb = image_to_rgb(TYPESTORE.deserialize_cdr(iraw, itype))
        depth = depth_to_metres(TYPESTORE.deserialize_cdr(draw, dtype_))
        h, w = rgb.shape[:2]
        if depth.shape != (h, w):  # registered but at another resolution: nearest keeps edges unblended
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
        intr = self._intrinsics_at(stamp)
        if (intr.width, intr.height) != (w, h):
            intr = intr.resized(w, h)
        return Sample(rgb, depth, intr, np.isfinite(depth), self.metric, f'{self.path.name}@{stamp}')
