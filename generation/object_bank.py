"""Step 2 of CG-Aug: the anomaly object bank, cut from the ADE20K-full release (``ADE20K_2021_17_01``).

An object is one instance (one exact RGB value) of a ``*_seg.png`` whose class ``R // 10 * 256 + G``
maps to a 150-category index in the OOD list (``train`` or ``val``), as in the published pipeline.

``index_ade20k.pkl`` is a pickle, and unpickling runs code named by the file. It is read with
:class:`RestrictedUnpickler`, which admits only plain containers (dict, list, tuple, set, str,
numbers) and numpy arrays/dtypes/scalars (plus ``_codecs.encode``, which protocol-2 pickles use to turn array
bytes into ``bytes``); any other global (a function, a class, ``os.system``...) is
refused with an error. The index is only used to list the images that hold a whole (not part-of) OOD
object (row ``k - 1`` of ``objectPresence`` / ``objectIsPart`` is full class ``k``); that list can be
cached in an ``.npz`` file so later start-ups do not read the pickle again.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from generation.ade20k import ade150, full_to_150, ood_classes
from lib.atomic import atomic_open
from lib.data.io import read_rgb
from lib.labels import pack_rgb, unpack_rgb

INDEX_RELPATH = Path("ADE20K_2021_17_01") / "index_ade20k.pkl"

_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only plain containers and numpy array/dtype/scalar constructors."""

    def find_class(self, module: str, name: str) -> object:
        if (module.replace("__builtin__", "builtins"), name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: the ADE20K index may only hold plain "
                "containers and numpy arrays"
            )
        return super().find_class(module, name)


def load_restricted_pickle(path: str | os.PathLike) -> object:
    """Read a pickle with :class:`RestrictedUnpickler` (error names the file)."""
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f).load()
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(f"{path}: {err}") from None


@dataclass(frozen=True)
class AnomalyObject:
    """One object to paste: ``mask`` bool ``[h, w]``, its 1-based ADE150 ``ade_index``, colour, name."""

    mask: np.ndarray
    ade_index: int
    color: np.ndarray
    name: str
    source: str


class ObjectBank(Protocol):
    """Anything that hands out anomaly objects."""

    def sample(self, rng: np.random.Generator) -> AnomalyObject: ...


def seg_classes(seg: np.ndarray) -> np.ndarray:
    """ADE20K-full object class of each pixel of a ``*_seg.png`` ``[H, W, 3]``: ``R // 10 * 256 + G``."""
    return (seg[..., 0].astype(np.int32) // 10) * 256 + seg[..., 1].astype(np.int32)


def ood_candidate_images(index: dict, ood: tuple[int, ...], source: str) -> list[str]:
    """Relative ``folder/filename`` paths of the images holding a whole object of an OOD category."""
    for key in ("folder", "filename", "objectPresence", "objectIsPart"):
        if key not in index:
            raise KeyError(f"{source}: missing key {key!r}; found {sorted(index)}")
    presence = np.asarray(index["objectPresence"])
    whole = (presence.astype(np.int64) - np.asarray(index["objectIsPart"]).astype(np.int64)) > 0
    if whole.shape[1] != len(index["filename"]):
        raise ValueError(
            f"{source}: objectPresence has {whole.shape[1]} image columns but there are "
            f"{len(index['filename'])} filenames"
        )
    ood_set = set(ood)
    rows = [k - 1 for k, v in full_to_150().items() if v in ood_set and 0 < k <= whole.shape[0]]
    has_ood = whole[rows].any(axis=0) if rows else np.zeros(whole.shape[1], dtype=bool)
    return [str(Path(index["folder"][i]) / index["filename"][i]) for i in np.flatnonzero(has_ood).tolist()]


class ADE20KObjectBank:
    """Random OOD objects from ADE20K-full under ``root`` (the folder holding ``ADE20K_2021_17_01``)."""

    def __init__(
        self,
        *,
        root: str | os.PathLike,
        ood_split: str = "train",
        cache_path: str | os.PathLike | None = None,
        max_tries: int = 100,
    ) -> None:
        self.root = Path(root)
        self.ood = ood_classes(ood_split)
        self.ood_split = ood_split
        self.max_tries = max_tries
        self.images = self._load_images(Path(cache_path) if cache_path else None)
        if not self.images:
            raise ValueError(f"{self.root}: no ADE20K image holds an object of the {ood_split!r} OOD list")

    def _load_images(self, cache: Path | None) -> list[str]:
        if cache is not None and cache.is_file():
            with np.load(cache) as data:
                if str(data["ood_split"]) == self.ood_split:
                    return data["images"].tolist()
        index_path = self.root / INDEX_RELPATH
        if not index_path.is_file():
            raise FileNotFoundError(
                f"ADE20K-full index not found: {index_path}; expected the ADE20K_2021_17_01 release "
                f"(index_ade20k.pkl, images/ADE/...) under {self.root}"
            )
        index = load_restricted_pickle(index_path)
        if not isinstance(index, dict):
            raise ValueError(f"{index_path}: expected a dict, got {type(index).__name__}")
        images = ood_candidate_images(index, self.ood, str(index_path))
        if cache is not None:
            with atomic_open(cache, "wb") as handle:
                np.savez_compressed(handle, images=np.array(images, dtype=str), ood_split=self.ood_split)
        return images

    def objects_in(self, seg: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """The OOD instances of one ``*_seg.png``: (RGB value, 1-based ADE150 index) pairs."""
        colors = unpack_rgb(np.unique(pack_rgb(seg[..., :3])))
        mapping, ood = full_to_150(), set(self.ood)
        found = []
        for rgb, cls in zip(colors, seg_classes(colors[None]).ravel().tolist()):
            ade = mapping.get(cls)
            if ade in ood:
                found.append((rgb, ade))
        return found

    def sample(self, rng: np.random.Generator) -> AnomalyObject:
        """Cut one random OOD instance from a random candidate image."""
        for _ in range(self.max_tries):
            rel = self.images[rng.integers(len(self.images))]
            seg_path = self.root / (str(Path(rel).with_suffix("")) + "_seg.png")
            if not seg_path.is_file():
                raise FileNotFoundError(f"ADE20K segmentation not found: {seg_path}")
            seg = read_rgb(seg_path)
            found = self.objects_in(seg)
            if not found:
                continue
            rgb, ade = found[rng.integers(len(found))]
            return AnomalyObject(
                mask=np.all(seg == rgb, axis=-1),
                ade_index=ade,
                color=ade150().color(ade),
                name=ade150().names[ade - 1],
                source=str(seg_path),
            )
        raise RuntimeError(f"{self.root}: no OOD object found in {self.max_tries} random images")
