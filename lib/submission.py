"""Score files for the benchmark servers: SegmentMeIfYouCan (HDF5) and Fishyscapes (``.npy``).

Both exporters take one image at a time, ``add(name, anomaly_score, segmentation=None)``, then
``close()`` (or use them as context managers), so an evaluation loop can write while it scores.
Every file is written with :mod:`lib.atomic`, so an interrupted run leaves no torn file.

SMIYC (needs ``h5py``: ``pip install 'multishiftseg[smiyc]'``):
``<root>/anomaly_p/<method>/<AnomalyTrack-all|ObstacleTrack-all>/<frame id>.hdf5`` holding the
dataset ``value``: the ``[H, W]`` map as float16 in ``[0, 1]``, gzip level 9, higher = more
anomalous, the layout the official ``road-anomaly-benchmark`` reads. Like that toolkit's own
writer, the file holds the score as a probability-like value cast to float16: here the raw score
mapped affinely, ``(s - low) / (high - low)``, from the score range ``[low, high]`` onto
``[0, 1]`` (:class:`AffineUnitMap`). An affine map keeps both the order of the scores (the
toolkit's rank-based ``PixBinaryClass`` and component metrics) and their spacing (its
``PixBinaryClass-uniThr``, 4096 equal bins on [-0.01, 1.01]), up to float16 rounding: steps of
2^-11 of the range (about 5e-4) in the upper half of ``[0, 1]``, finer below.

The range must cover every score of the export, or the map would leave ``[0, 1]``:

- scores bounded by construction (:data:`BOUNDED_SCORE_RANGES`: ``msp``, ``entropy``) use those
  bounds; each frame is written at once, and a frame outside them is an error;
- every other score (energies, max-logit, ``rba``, the models' learned scores) has no bound, so
  the range is that of the run's data: each frame's raw float32 map is staged in the hidden
  folder ``.staging`` of the track folder while the scores stream, with a running min and max,
  and ``close()`` writes every file with ``[low, high]`` = the smallest and largest score of all
  frames of the export (``low`` maps to 0, ``high`` to 1), then removes the staging. This costs
  one float32 write and read per frame (4 bytes per pixel of disk until ``close``), not a second
  model pass. If the export is left by an error, the staged maps are removed and none is written.

Fishyscapes: ``<root>/<index>_anomaly.npy`` (float32 ``[H, W]``, higher = more anomalous) and,
when given, ``<root>/<index>_segmentation.npy`` (uint8 trainIds ``[H, W]``).

Each exporter says by its ``file_key`` how callers name images: SMIYC by frame id (``"name"``,
the image's file stem), Fishyscapes by ``"index"`` (the image's position in the benchmark's
list, which is sorted by file name).
"""

from __future__ import annotations

import io
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
import torch.distributed as dist

from lib.atomic import atomic_open, write_bytes_atomic
from lib.errors import UserError
from lib.labels import NUM_CLASSES
from lib.protocols import SMIYC_TRACK_OF_BENCHMARK
from lib.registry import Registry
from lib.smiyc import get_track

SMIYC_DATASET = "value"
SMIYC_GZIP_LEVEL = 9
STAGING_FOLDER = ".staging"

BOUNDED_SCORE_RANGES: dict[str, tuple[float, float]] = {
    "msp": (0.0, 1.0),
    "entropy": (0.0, math.log(NUM_CLASSES)),
}
"""``eval.score`` -> the range its formula cannot leave for any logits (:mod:`lib.scores`):
``1 - max softmax`` and the entropy of a 19-class softmax. (``rba`` is bounded only for the
non-negative class scores of mask-classification models, so its range is derived like the others.)"""


def bounded_score_range(score: str) -> tuple[float, float] | None:
    """The range ``score`` cannot leave, or ``None`` if unbounded (then the export derives it)."""
    return BOUNDED_SCORE_RANGES.get(score)


class ScoreRangeError(UserError):
    """Scores outside the range given to the SMIYC export."""


@dataclass(frozen=True)
class AffineUnitMap:
    """``(s - low) / (high - low)`` as float16: the range ``[low, high]`` onto ``[0, 1]`` (module doc).
    With ``low == high`` (a constant map) every score becomes 0."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"score range needs finite low <= high, got ({self.low}, {self.high})")

    def __call__(self, scores: np.ndarray, name: str = "") -> np.ndarray:
        """float16 values in ``[0, 1]``, same shape; a score outside ``[low, high]`` is an error."""
        scores = _finite_scores(scores, name)
        if scores.size and (scores.min() < self.low or scores.max() > self.high):
            raise ScoreRangeError(
                f"{name or 'scores'}: anomaly scores span [{scores.min()}, {scores.max()}], outside the "
                f"export's score range [{self.low}, {self.high}]"
            )
        span = self.high - self.low
        unit = (scores.astype(np.float64) - self.low) / (span if span > 0 else 1.0)
        return unit.astype(np.float16)


def _finite_scores(scores: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.dtype.kind not in "fiu":
        raise ValueError(f"{name or 'scores'}: anomaly scores must be real numbers, got dtype {scores.dtype}")
    if not np.isfinite(scores).all():
        n_bad = np.count_nonzero(~np.isfinite(scores))
        raise ValueError(f"{name or 'scores'}: anomaly scores hold {n_bad} NaN/inf values")
    return scores


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


def _write_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_open(path, "wb") as handle:
        np.save(handle, array)
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

    def abandon(self) -> None:
        """Stop after an error: keep what is written, start nothing new."""
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


class SMIYCExporter(_Exporter):
    """Writes ``anomaly_p/<method>/<track>-all/<frame id>.hdf5`` under ``root`` (module doc).

    ``score_range``: ``(low, high)`` that every score lies in (e.g. :func:`bounded_score_range`;
    frames are written as they come), or ``None`` to use the smallest and largest score of all
    frames (staged, written by :meth:`close`; under ``torch.distributed`` every process's exporter
    must be closed, as they agree on one range). After ``close``, ``mapping`` is the map used.
    ``segmentation`` given to :meth:`add` is not part of the SMIYC format and is not written.
    """

    file_key = "name"

    def __init__(
        self, root: str | Path, *, method: str, track: str, score_range: tuple[float, float] | None = None
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
        self.mapping = AffineUnitMap(*score_range) if score_range is not None else None
        self._staged: list[str] = []
        self._low, self._high = math.inf, -math.inf

    @property
    def staging(self) -> Path:
        return self.folder / STAGING_FOLDER

    def path(self, name: str | int) -> Path:
        return self.folder / f"{_check_name(name)}.hdf5"

    def add(
        self,
        name: str | int,
        anomaly_score: np.ndarray | torch.Tensor,
        segmentation: np.ndarray | torch.Tensor | None = None,
    ) -> Path:
        """Take frame ``name``'s ``[H, W]`` anomaly map; returns the path its file has (or will
        have, for a derived range, after :meth:`close`)."""
        text = self._new_name(name)
        score = _as_map(anomaly_score, "anomaly_score", text)
        if self.mapping is not None:
            return self._written(text, self._write(text, self.mapping(score, text)))
        score = _finite_scores(score, text).astype(np.float32, copy=False)
        if score.size:
            self._low, self._high = min(self._low, float(score.min())), max(self._high, float(score.max()))
        _write_npy(self.staging / f"{text}.npy", score)
        self._staged.append(text)
        return self._written(text, self.path(text))

    def _write(self, text: str, value: np.ndarray) -> Path:
        buffer = io.BytesIO()
        with self._h5py.File(buffer, "w") as f:
            f.create_dataset(SMIYC_DATASET, data=value, compression="gzip", compression_opts=SMIYC_GZIP_LEVEL)
        return write_bytes_atomic(self.path(text), buffer.getvalue())

    def close(self) -> int:
        """Write the staged frames with the range of all scores (module doc); returns the count."""
        if self._closed or self.mapping is not None:
            return super().close()
        self.mapping = AffineUnitMap(*self._all_ranks_range())
        for text in self._staged:
            self._write(text, self.mapping(np.load(self.staging / f"{text}.npy"), text))
        self._staged = []
        shutil.rmtree(self.staging, ignore_errors=True)
        return super().close()

    def _all_ranks_range(self) -> tuple[float, float]:
        """The smallest and largest staged score over all processes (each exports its share of the
        frames, and all files of a track need one map); ``(0, 0)`` if no score was staged."""
        bounds = [(self._low, self._high)]
        if dist.is_available() and dist.is_initialized():
            bounds = [None] * dist.get_world_size()
            dist.all_gather_object(bounds, (self._low, self._high))
        low, high = min(b[0] for b in bounds), max(b[1] for b in bounds)
        return (low, high) if low <= high else (0.0, 0.0)

    def abandon(self) -> None:
        """Stop after an error: remove the staged maps; the files already written stay."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._staged = []
        super().abandon()


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
        score = _finite_scores(_as_map(anomaly_score, "anomaly_score", text), text).astype(
            np.float32, copy=False
        )
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
            _write_npy(self.folder / f"{text}_segmentation.npy", seg.astype(np.uint8))
        return self._written(text, _write_npy(self.folder / f"{text}_anomaly.npy", score))


Exporter = SMIYCExporter | FishyscapesExporter
"""What :func:`build_exporter` returns and the evaluator writes to."""


ExporterBuilder = Callable[..., Exporter]
"""``(root, *, benchmark, method, score_range) -> Exporter``."""
EXPORT_FORMATS: Registry[ExporterBuilder] = Registry("export format", key="eval.export")
"""``eval.export`` / ``--export`` values; a module of one's own can add one with
``@register_export_format("name")``."""
register_export_format = EXPORT_FORMATS.register


@register_export_format("smiyc")
def smiyc_exporter(
    root: str | Path, *, benchmark: str, method: str, score_range: tuple[float, float] | None
) -> SMIYCExporter:
    """SMIYC files of ``benchmark``'s track under ``root`` (``score_range`` None: derived)."""
    if not method:
        raise ValueError("SMIYC export needs a method name")
    if benchmark not in SMIYC_TRACK_OF_BENCHMARK:
        raise ValueError(
            f"benchmark {benchmark!r} is not a SMIYC track; SMIYC export covers "
            f"{', '.join(SMIYC_TRACK_OF_BENCHMARK)}"
        )
    return SMIYCExporter(
        root, method=method, track=SMIYC_TRACK_OF_BENCHMARK[benchmark], score_range=score_range
    )


@register_export_format("fishyscapes")
def fishyscapes_exporter(
    root: str | Path, *, benchmark: str, method: str, score_range: tuple[float, float] | None
) -> FishyscapesExporter:
    """Fishyscapes files in ``root/<benchmark>`` (``method`` and ``score_range`` unused)."""
    return FishyscapesExporter(Path(root) / _check_name(benchmark))


def build_exporter(
    kind: str,
    root: str | Path,
    *,
    benchmark: str,
    method: str = "",
    score_range: tuple[float, float] | None = None,
) -> Exporter:
    """The exporter of ``--export kind`` (an entry of :data:`EXPORT_FORMATS`) for ``benchmark``."""
    return EXPORT_FORMATS.get(kind)(root, benchmark=benchmark, method=method, score_range=score_range)
