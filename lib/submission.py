"""Score files for the benchmark servers: SegmentMeIfYouCan (HDF5) and Fishyscapes (``.npy``).

Both exporters take one image at a time, ``add(name, anomaly_score, segmentation=None)``, then
``close()`` (or use them as context managers), so an evaluation loop can write while it scores.
Every file is written to a temporary name and renamed, so an interrupted run leaves no torn file.

SMIYC (needs ``h5py``: ``pip install 'multishiftseg[smiyc]'``):
``<root>/anomaly_p/<method>/<AnomalyTrack-all|ObstacleTrack-all>/<frame id>.hdf5`` holding the
dataset ``value``: the ``[H, W]`` map as float16 in ``[0, 1]``, gzip level 9, higher = more
anomalous, the layout the official ``road-anomaly-benchmark`` reads.

How raw scores become float16 in ``[0, 1]`` (:class:`UnitScoreMap`): the official metrics only
use the order of the scores, and float16 has just 15361 values in ``[0, 1]``, packed densely
near 0 (a plain ``sigmoid`` would leave the anomalous end, near 1, 1024 levels). So the map
works in float16 code space: a score is mapped to a position ``u`` in ``[0, 1]``, ``u`` to the
integer code ``round(u · 15360)``, and the code is stored as the float16 with that bit pattern
(bit patterns of non-negative float16 numbers are ordered like their values; 15360 is 1.0).
Scores in the method's documented range ``[low, high]`` fill ``u`` in ``[1/16, 15/16]``
linearly, i.e. 13440 equal steps of ``(high − low) / 13440``; scores outside are not clipped
but squashed into the two end sixteenths by ``u = 1/16 / (1 + 14·(low − s)/(high − low))``
below and its mirror above (continuous with the same slope at the range ends), so the order of
any finite scores is kept up to that rounding, only with coarser steps far outside the range.
The stored values are not probabilities; they are an order-preserving code. Suggested ranges
per model family and score are in :data:`SCORE_RANGES` (DeepLab's learned energy −30..0 gives
steps of 0.0022; Mask2Former's ``1 − confidence`` −20..1 steps of 0.0016).

Fishyscapes: ``<root>/<index>_anomaly.npy`` (float32 ``[H, W]``, higher = more anomalous) and,
when given, ``<root>/<index>_segmentation.npy`` (uint8 trainIds ``[H, W]``).

Each exporter says by its ``file_key`` how callers name images: SMIYC by frame id (``"name"``,
the image's file stem), Fishyscapes by ``"index"`` (the image's position in the benchmark's
list, which is sorted by file name).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import torch

from lib.labels import NUM_CLASSES
from lib.protocols import SMIYC_TRACK_OF_BENCHMARK
from lib.smiyc import get_track

FLOAT16_ONE_CODE = 0x3C00
"""Bit pattern of float16 1.0 = the number of float16 steps from 0 to 1."""
TAIL_SHARE = 1.0 / 16.0
"""Share of the code space reserved below ``low`` and above ``high``."""
SMIYC_DATASET = "value"
SMIYC_GZIP_LEVEL = 9
EXPORT_FORMATS = ("smiyc", "fishyscapes")

SCORE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "deeplab": {
        "learned": (-30.0, 0.0),
        "energy": (-30.0, 0.0),
        "maxlogit": (-30.0, 0.0),
        "msp": (0.0, 1.0),
        "entropy": (0.0, math.log(NUM_CLASSES)),
    },
    "mask2former": {
        "learned": (-20.0, 1.0),
        "mask_confidence": (-20.0, 1.0),
        "rba": (-float(NUM_CLASSES), 0.0),
        "energy": (-25.0, 0.0),
        "maxlogit": (-20.0, 0.0),
        "msp": (0.0, 1.0),
        "entropy": (0.0, math.log(NUM_CLASSES)),
    },
}
"""Typical raw-score range per model family and ``eval.score``: where the float16 code is finest."""

_FAMILY_PREFIXES = {"deeplab": "deeplab", "mask2": "mask2former"}


def score_range(model_name: str, score: str) -> tuple[float, float]:
    """The suggested :class:`UnitScoreMap` range for ``score`` on model ``model_name``."""
    family = next((f for prefix, f in _FAMILY_PREFIXES.items() if model_name.startswith(prefix)), None)
    if family is None:
        raise KeyError(
            f"no score range known for model {model_name!r} (known families: names starting with "
            f"{', '.join(_FAMILY_PREFIXES)}); pass score_range=(low, high) explicitly"
        )
    if score not in SCORE_RANGES[family]:
        raise KeyError(
            f"no score range known for score {score!r} on {family} models (known: "
            f"{', '.join(sorted(SCORE_RANGES[family]))}); pass score_range=(low, high) explicitly"
        )
    return SCORE_RANGES[family][score]


@dataclass(frozen=True)
class UnitScoreMap:
    """Monotone map of raw anomaly scores onto float16 codes in ``[0, 1]`` (module doc)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"score range needs finite low < high, got ({self.low}, {self.high})")

    @property
    def step(self) -> float:
        """Score difference of one float16 code inside ``[low, high]``."""
        return (self.high - self.low) / ((1.0 - 2.0 * TAIL_SHARE) * FLOAT16_ONE_CODE)

    def position(self, scores: np.ndarray) -> np.ndarray:
        """``u`` in ``[0, 1]`` (float64), strictly increasing in the score."""
        f = (np.asarray(scores, dtype=np.float64) - self.low) / (self.high - self.low)
        slope = (1.0 - 2.0 * TAIL_SHARE) / TAIL_SHARE
        u = TAIL_SHARE + (1.0 - 2.0 * TAIL_SHARE) * f
        below, above = f < 0.0, f > 1.0
        u[below] = TAIL_SHARE / (1.0 - slope * f[below])
        u[above] = 1.0 - TAIL_SHARE / (1.0 + slope * (f[above] - 1.0))
        return u

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """float16 values in ``[0, 1]``, same shape; NaN or inf is an error."""
        scores = np.asarray(scores)
        if scores.dtype.kind not in "fiu":
            raise ValueError(f"anomaly scores must be real numbers, got dtype {scores.dtype}")
        if not np.isfinite(scores).all():
            raise ValueError(f"anomaly scores hold {np.count_nonzero(~np.isfinite(scores))} NaN/inf values")
        codes = np.rint(self.position(scores) * FLOAT16_ONE_CODE).astype(np.uint16)
        return codes.view(np.float16)


def _as_map(x: np.ndarray | torch.Tensor, what: str, name: str) -> np.ndarray:
    """A ``[H, W]`` numpy view of ``x`` (``[1, H, W]`` accepted)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"{name}: {what} must be one [H, W] map, got shape {x.shape}")
    return x


def _check_name(name: str | int) -> str:
    text = str(name)
    if not text or text in (".", "..") or "/" in text or "\\" in text or os.sep in text:
        raise ValueError(f"export name {text!r} must be a plain file stem (no path separators)")
    return text


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


class _Exporter:
    """Shared bookkeeping: each name once, context-manager use, ``close`` returns the count."""

    file_key: str
    """``"name"`` or ``"index"``: what callers pass as ``name`` to ``add`` (module doc)."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._closed = False

    def _new_name(self, name: str | int) -> str:
        """``name`` as a file stem, checked to be new; :meth:`_written` records it."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed; cannot add {name!r}")
        text = _check_name(name)
        if text in self._names:
            raise ValueError(f"{type(self).__name__}: image {text!r} was already exported")
        return text

    def _written(self, text: str, path: Path) -> Path:
        self._names.add(text)
        return path

    @property
    def count(self) -> int:
        return len(self._names)

    def close(self) -> int:
        """Finish; returns the number of images written."""
        self._closed = True
        return self.count

    def __enter__(self):
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SMIYCExporter(_Exporter):
    """Writes ``anomaly_p/<method>/<track>-all/<frame id>.hdf5`` under ``root`` (module doc).

    ``score_range``: the ``(low, high)`` of :class:`UnitScoreMap`, e.g. from :func:`score_range`.
    ``segmentation`` given to :meth:`add` is not part of the SMIYC format and is not written.
    """

    file_key = "name"

    def __init__(
        self, root: str | Path, *, method: str, track: str, score_range: tuple[float, float]
    ) -> None:
        try:
            import h5py
        except ImportError as err:
            raise ImportError(
                "SMIYC export writes HDF5 files and needs h5py: pip install 'multishiftseg[smiyc]' "
                "(or pip install h5py)"
            ) from err
        super().__init__()
        get_track(track)
        self._h5py = h5py
        self.track = track
        self.folder = Path(root) / "anomaly_p" / _check_name(method) / f"{track}-all"
        self.mapping = UnitScoreMap(*score_range)

    def path(self, name: str | int) -> Path:
        return self.folder / f"{_check_name(name)}.hdf5"

    def add(
        self,
        name: str | int,
        anomaly_score: np.ndarray | torch.Tensor,
        segmentation: np.ndarray | torch.Tensor | None = None,
    ) -> Path:
        """Write frame ``name``'s ``[H, W]`` anomaly map; returns the file path."""
        text = self._new_name(name)
        value = self.mapping(_as_map(anomaly_score, "anomaly_score", text))

        def write(tmp: Path) -> None:
            with self._h5py.File(tmp, "w") as f:
                f.create_dataset(
                    SMIYC_DATASET, data=value, compression="gzip", compression_opts=SMIYC_GZIP_LEVEL
                )

        return self._written(text, _atomic_write(self.path(text), write))


class FishyscapesExporter(_Exporter):
    """Writes ``<index>_anomaly.npy`` (float32) and ``<index>_segmentation.npy`` (uint8 trainIds)."""

    file_key = "index"

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.folder = Path(root)

    def add(
        self,
        name: str | int,
        anomaly_score: np.ndarray | torch.Tensor,
        segmentation: np.ndarray | torch.Tensor | None = None,
    ) -> Path:
        """Write image ``name``'s maps; returns the anomaly file path."""
        text = self._new_name(name)
        score = _as_map(anomaly_score, "anomaly_score", text).astype(np.float32, copy=False)
        if not np.isfinite(score).all():
            n_bad = np.count_nonzero(~np.isfinite(score))
            raise ValueError(f"{text}: anomaly_score holds {n_bad} NaN/inf values")
        if segmentation is not None:
            seg = _as_map(segmentation, "segmentation", text)
            if seg.shape != score.shape:
                raise ValueError(f"{text}: segmentation {seg.shape} and anomaly_score {score.shape} differ")
            if seg.dtype.kind not in "iu":
                raise ValueError(f"{text}: segmentation must hold integer trainIds, got dtype {seg.dtype}")
            if seg.size and (seg.min() < 0 or seg.max() >= NUM_CLASSES):
                raise ValueError(
                    f"{text}: segmentation holds values {seg.min()}..{seg.max()}; expected trainIds "
                    f"0..{NUM_CLASSES - 1}"
                )
            _atomic_write(self.folder / f"{text}_segmentation.npy", _npy_writer(seg.astype(np.uint8)))
        return self._written(text, _atomic_write(self.folder / f"{text}_anomaly.npy", _npy_writer(score)))


def _npy_writer(array: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return write


Exporter = SMIYCExporter | FishyscapesExporter
"""What :func:`build_exporter` returns and the evaluator writes to."""


def build_exporter(
    kind: str,
    root: str | Path,
    *,
    benchmark: str,
    method: str = "",
    score_range: tuple[float, float] | None = None,
) -> Exporter:
    """The exporter of ``--export kind``: SMIYC files of ``benchmark``'s track, or Fishyscapes files
    in ``root/<benchmark>``. ``method`` and ``score_range`` are needed by SMIYC only."""
    if kind == "smiyc":
        if score_range is None or not method:
            raise ValueError("SMIYC export needs a method name and a score_range=(low, high)")
        if benchmark not in SMIYC_TRACK_OF_BENCHMARK:
            raise ValueError(
                f"benchmark {benchmark!r} is not a SMIYC track; SMIYC export covers "
                f"{', '.join(SMIYC_TRACK_OF_BENCHMARK)}"
            )
        return SMIYCExporter(
            root, method=method, track=SMIYC_TRACK_OF_BENCHMARK[benchmark], score_range=score_range
        )
    if kind == "fishyscapes":
        return FishyscapesExporter(Path(root) / _check_name(benchmark))
    raise ValueError(f"unknown export format {kind!r}; expected one of {', '.join(EXPORT_FORMATS)}")
