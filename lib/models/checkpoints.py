"""Checkpoints: strict loading of external and own weights, atomic saving, rebuilding from a checkpoint.

Loading accepts three layouts, read from a ``.pth`` through ``torch.load(..., weights_only=True)`` or
from a ``.safetensors`` file (no pickle at all; :mod:`lib.models.convert` writes them):

- a plain state dict (optionally with every key prefixed ``module.`` by ``DataParallel``/DDP), e.g. the
  released MultiShiftSeg checkpoints;
- a wrapper ``{"state_dict": {...}, ...}`` (NVIDIA's ``DeepLabV3+_WideResNet38_baseline.pth``) or
  ``{"model": {...}, ...}`` (this project, detectron2);
- an in-memory mapping of either, whose values may be numpy arrays (converted detectron2 pickles).

A ``.safetensors`` file holds the state dict; the JSON file of the same stem beside it, when present,
holds the other entries (``model_name``, ``model_kwargs``, ...), so ``load_model`` rebuilds
from it as from a ``.pth`` written by ``save_checkpoint``.

Renamed or dropped entries of published formats go through an optional model hook
``adapt_state_dict(state_dict) -> state_dict``; everything else that does not fit is an
``IncompatibleCheckpointError`` listing missing keys, unexpected keys and shape mismatches.

A closed-world checkpoint (NVIDIA's DeepLab baseline, Mask2Anomaly's ``bt-f-xl.pth``) has no OOD
head. Only *starting weights for training* may lack it (``load_weights(..., fill_ood_head=True)``):
the model's ``closed_world_ood_head(state_dict)`` hook then copies the classifier into the head, as
the published train scripts do. Everywhere else (testing, ``lib.predict``, ``--resume``) such a
checkpoint is a :class:`MissingOODHeadError` naming the missing keys (the model lists them in
``ood_head_keys``), never silently a copied classifier scored as the learned head. A file that is not
a tensor-only checkpoint is an ``UnreadableCheckpointError``; all of these are user errors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import subprocess
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lib.atomic import atomic_open
from lib.errors import UserError
from lib.models.registry import build_model

logger = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model")
DATA_PARALLEL_PREFIX = "module."
MAX_LISTED = 10
PICKLE_START = b"\x80"
"""The first byte of a pickle (protocol 2 and later): ``torch.save``'s legacy format."""


class IncompatibleCheckpointError(UserError, RuntimeError):
    """The checkpoint's keys or shapes do not match the model."""


class WrongModelError(IncompatibleCheckpointError):
    """The checkpoint was trained as another model than the one the config names."""


class MissingOODHeadError(IncompatibleCheckpointError):
    """A closed-world checkpoint (no OOD head) given where trained OOD-head weights are needed."""


class UnreadableCheckpointError(UserError, ValueError):
    """The file is not a checkpoint of tensors (a pickle, a corrupt file, not a dict of weights)."""


def _load_error(path: Path, err: Exception) -> UnreadableCheckpointError:
    """Why ``torch.load(path, weights_only=True)`` failed, in the user's terms."""
    with open(path, "rb") as f:
        is_pickle = f.read(1) == PICKLE_START
    if not is_pickle and not zipfile.is_zipfile(path):
        return UnreadableCheckpointError(
            f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle); is it "
            "truncated, or another kind of file?"
        )
    detail = str(err).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
    return UnreadableCheckpointError(
        f"cannot read {path} with torch.load(weights_only=True) ({' '.join(detail.split())[:300]}). "
        "Only checkpoints made of tensors, numbers, strings and plain containers are accepted."
    )


SAFETENSORS_SUFFIX = ".safetensors"


def sidecar_path(path: Path) -> Path:
    """The JSON beside a ``.safetensors`` file that holds its model name and arguments."""
    return path.with_suffix(".json")


def _read_safetensors(path: Path) -> Mapping:
    """``{"model": state dict, **entries of the sidecar JSON}`` of a ``.safetensors`` file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        checkpoint: dict[str, object] = {"model": load_file(path, device="cpu")}
    except (SafetensorError, OSError) as err:
        raise UnreadableCheckpointError(f"cannot read {path} as safetensors: {err}") from err
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            entries = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UnreadableCheckpointError(f"{sidecar}: not valid JSON ({err})") from err
        if not isinstance(entries, dict) or any(key in entries for key in WRAPPER_KEYS):
            raise UnreadableCheckpointError(
                f"{sidecar}: expected a JSON object of entries such as model_name and model_kwargs, "
                f"without {' or '.join(WRAPPER_KEYS)}"
            )
        checkpoint.update(entries)
    return checkpoint


def _read(path: Path) -> Mapping:
    if path.suffix == ".pkl":
        raise UnreadableCheckpointError(
            f"{path} is a pickle (detectron2 format). Unpickling can run arbitrary code, so it is not "
            "loaded here. Convert it once, in an environment you trust, to a tensor-only .pth:\n"
            "  python -c \"import pickle, torch; d = pickle.load(open('IN.pkl', 'rb')); "
            "d = d.get('model', d); torch.save({k: torch.as_tensor(v) for k, v in d.items()}, 'OUT.pth')\"\n"
            "and pass OUT.pth."
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise _load_error(path, err) from err
    if not isinstance(checkpoint, Mapping):
        raise UnreadableCheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, expected a dict of weights"
        )
    return checkpoint


def _unwrap(checkpoint: Mapping) -> tuple[Mapping, dict[str, object]]:
    """Split ``checkpoint`` into (state dict, the other entries)."""
    for key in WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key], {k: v for k, v in checkpoint.items() if k != key}
    return checkpoint, {}


def _to_tensors(state_dict: Mapping, source: str) -> OrderedDict[str, torch.Tensor]:
    """Strip a ``module.`` prefix carried by every key; numpy arrays -> tensors; reject other values."""
    strip = len(state_dict) > 0 and all(str(k).startswith(DATA_PARALLEL_PREFIX) for k in state_dict)
    tensors: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        name = str(key)[len(DATA_PARALLEL_PREFIX) :] if strip else str(key)
        if isinstance(value, np.ndarray | np.generic):
            value = torch.as_tensor(value)
        if not isinstance(value, torch.Tensor):
            raise UnreadableCheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, expected a tensor"
            )
        tensors[name] = value
    return tensors


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    more = f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def _unwrap_parallel(model: nn.Module) -> nn.Module:
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return model.module
    return model


def check_compatible(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ``IncompatibleCheckpointError`` unless ``state_dict`` has exactly the model's keys and shapes.

    The one tolerated gap is a missing BatchNorm ``num_batches_tracked`` (absent from checkpoints written
    before PyTorch 0.4.1; ``load_state_dict`` fills it with 0 when the state dict has no version metadata).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} checkpoint {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        message = f"cannot load {source} into {type(model).__name__}:"
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected)):
            if items:
                message += _listing(title, items)
        if mismatched:
            message += _listing("shape mismatches", mismatched)
        raise IncompatibleCheckpointError(message)


def _check_ood_head(
    model: nn.Module, tensors: OrderedDict[str, torch.Tensor], source: str, fill: bool
) -> OrderedDict[str, torch.Tensor]:
    """``tensors`` with the model's OOD head present: as given, or (``fill``, whole head absent)
    copied from the classifier by the model's hook; otherwise :class:`MissingOODHeadError`."""
    keys = tuple(getattr(model, "ood_head_keys", ()))
    missing = [k for k in keys if k not in tensors]
    if not missing:
        return tensors
    if fill and len(missing) == len(keys):
        logger.info("%s has no OOD head: %s starts as a copy of the classifier", source, ", ".join(keys))
        return OrderedDict(model.closed_world_ood_head(tensors))
    raise MissingOODHeadError(
        f"{source} has no OOD head for {type(model).__name__}:"
        + _listing("missing keys", missing)
        + "\n  A closed-world checkpoint can only be the starting weights of training (model.weight_path"
        " of train_*.py, where the head starts as a copy of the classifier) or be scored by a function of"
        " its classifier (eval.score=msp, maxlogit, entropy, energy, mask_confidence, rba); the learned"
        " score and --resume need a checkpoint whose OOD head was trained."
    )


def load_weights(
    model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping, *, fill_ood_head: bool = False
) -> dict[str, object]:
    """Load weights into ``model`` strictly; return the checkpoint's other entries (epoch, optimizer, ...).

    Steps: read (``.safetensors``, or ``.pth`` with ``weights_only=True``) -> unwrap ``state_dict``/``model``
    -> strip ``module.`` -> numpy to tensors -> ``model.adapt_state_dict`` if the model defines it -> OOD
    head check (module doc; ``fill_ood_head`` only for training's starting weights) -> key/shape check ->
    load.
    """
    if isinstance(path_or_state_dict, Mapping):
        return _load_into(model, path_or_state_dict, "the given state dict", fill_ood_head)
    return _load_into(model, _read(Path(path_or_state_dict)), str(path_or_state_dict), fill_ood_head)


def _load_into(model: nn.Module, checkpoint: Mapping, source: str, fill_ood_head: bool) -> dict[str, object]:
    model = _unwrap_parallel(model)
    state_dict, extra = _unwrap(checkpoint)
    tensors = _to_tensors(state_dict, source)
    adapt = getattr(model, "adapt_state_dict", None)
    if adapt is not None:
        tensors = adapt(tensors)
    tensors = _check_ood_head(model, tensors, source, fill_ood_head)
    check_compatible(model, tensors, source)
    model.load_state_dict(tensors, strict=True)
    return extra


def load_model(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    kwargs: Mapping[str, object] | None = None,
    fill_ood_head: bool = False,
    name_key: str = "model.name",
) -> nn.Module:
    """The model the checkpoint at ``path`` holds, built and loaded strictly (:func:`load_weights`).

    A checkpoint of :func:`save_checkpoint` names the model it was trained as, so it is rebuilt from
    its ``model_name`` and ``model_kwargs``; ``kwargs`` (the caller's config) override same-named
    arguments (e.g. a kernel choice). A ``name`` other than its
    ``model_name`` is a :class:`WrongModelError` naming both (``name_key``: the config key that holds
    ``name``). Weights without these entries — external checkpoints (NVIDIA's, Mask2Anomaly's, the
    released MultiShiftSeg files) — build ``name(**kwargs)``; they need a ``name``.
    """
    checkpoint = _read(Path(path))
    trained_as = checkpoint.get("model_name")
    if trained_as is None or "model_kwargs" not in checkpoint:
        if name is None:
            raise UnreadableCheckpointError(
                f"{path} has no model_name/model_kwargs (not written by save_checkpoint); name its "
                f"model ({name_key})"
            )
        model_name, model_kwargs = name, dict(kwargs or {})
    else:
        if name is not None and name != trained_as:
            raise WrongModelError(
                f"{path} holds a {trained_as!r} model (its model_name) but {name_key} is {name!r}; set "
                f"{name_key}={trained_as} or pass weights trained as {name!r}"
            )
        model_name, model_kwargs = trained_as, {**checkpoint["model_kwargs"], **(kwargs or {})}
    model = build_model(model_name, **model_kwargs)
    _load_into(model, checkpoint, str(path), fill_ood_head)
    return model


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the source tree this package runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _check_plain(value: object, where: str) -> None:
    """Reject anything ``torch.load(weights_only=True)`` would refuse, naming where it sits."""
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; use str or int keys")
            _check_plain(item, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoints hold only tensors, numbers, strings, None "
        "and lists/dicts of them (convert it before saving)"
    )


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int,
    stage: int,
    config: Mapping | object,
    model_name: str,
    model_kwargs: Mapping[str, object],
    metrics: Mapping[str, object],
    extra: Mapping[str, object] | None = None,
) -> None:
    """Write a checkpoint atomically (:func:`lib.atomic.atomic_open`), loadable with ``weights_only=True``.

    Holds ``model`` (state dict, DDP/DataParallel unwrapped), ``optimizer``, ``scaler``, ``epoch``,
    ``stage``, ``config`` (a plain dict; a dataclass config is converted), ``model_name`` and
    ``model_kwargs`` (what :func:`load_model` rebuilds from), ``metrics``, ``git_commit``
    and ``extra`` (e.g. RNG states as tensors).
    """
    model = _unwrap_parallel(model)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "epoch": epoch,
        "stage": stage,
        "config": dict(config),
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs),
        "metrics": dict(metrics),
        "git_commit": git_commit(),
        "extra": {} if extra is None else dict(extra),
    }
    _check_plain(checkpoint, "checkpoint")
    with atomic_open(path, "wb") as handle:
        torch.save(checkpoint, handle)


def read_state_dict(path: str | os.PathLike) -> tuple[OrderedDict[str, torch.Tensor], dict[str, object]]:
    """``(state dict, other entries)`` of a checkpoint file in any layout ``load_weights`` reads, without
    a model: unwrapped, ``module.`` stripped, numpy arrays as tensors, nothing renamed or added."""
    state_dict, extra = _unwrap(_read(Path(path)))
    return _to_tensors(state_dict, str(path)), extra
