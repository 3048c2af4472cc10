"""Typed configuration: nested dataclasses with defaults, YAML files on top, ``key=value`` overrides last.

Every section is a dataclass, so a typo is an error rather than a silently ignored key: an unknown
key names the file (or the command line), the dotted key and the closest valid key; a value of the
wrong type names the expected type. A YAML file may start from another one with ``_base_: other.yaml``
(path relative to the file). The loader is generic over the schema, so ``generation/`` uses it for
its own tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lib.atomic import atomic_open
from lib.errors import UserError

T = TypeVar("T")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(UserError, ValueError):
    """A configuration file or override does not fit the schema."""


def fixed_list(length: int, default: Sequence[Any]) -> Any:
    """A list field that must hold exactly ``length`` values (a mean per RGB channel, a range's two ends)."""
    return field(default_factory=lambda: list(default), metadata={"length": length})


@dataclass
class DataConfig:
    """Dataset locations and the training data pipeline.

    ``augmentation`` picks the joint transform of each training pair: ``deeplab`` (random rescale in
    ``scale_range``, ``crop_size`` crop, flip) or ``mask2former`` (the published Mask2Former recipe:
    colour, blur, sharpness, contrast, equalize, rescale, rotation, flips, then the crop).
    ``crop_early`` processes only the part of each frame that the crop keeps (same draws, same
    values up to interpolation rounding; false: whole frames, for comparison). With
    ``num_workers`` > 0 the training workers persist across epochs and each prefetches
    ``prefetch_factor`` batches.
    ``max_image_pixels``: the largest width x height an image header may claim before it is decoded
    (a larger claim is an error naming the file; see :mod:`lib.data.image_file`).
    """

    root: str = "./datasets"
    cityscapes: str = "cityscapes"
    multishift: str = "multishift_cityscapes"
    coco: str = "coco"
    use_generated: bool = True
    augmentation: str = "deeplab"
    crop_size: int = 700
    scale_range: list[float] = fixed_list(2, [0.5, 2.0])
    mean: list[float] = fixed_list(3, IMAGENET_MEAN)
    std: list[float] = fixed_list(3, IMAGENET_STD)
    num_workers: int = 4
    prefetch_factor: int = 2
    crop_early: bool = True
    ood_prob: float = 1.0
    ood_scale_array: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])
    mixup_max: float = 0.3
    val_ds: str = "RoadAnomaly21"
    val_max_images: int = 0
    max_image_pixels: int = 2**27


@dataclass
class ModelConfig:
    """Which network to build, which weights to start from and which parameters each stage trains.

    ``init_ood_head``: after loading ``weight_path`` (not on resume), set the OOD head to a copy of
    the classifier, as the published train scripts always do (DeepLab ``final.6 -> ood_head``,
    Mask2Former ``class_embed -> class_embed2``); false keeps the loaded OOD head, e.g. to fine-tune
    a released MultiShiftSeg checkpoint.

    A checkpoint this project wrote names its model: starting weights, testing and ``lib.predict``
    rebuild that model (``kwargs`` here override its arguments), and a different ``name`` is an
    error; external weights are built as ``name(**kwargs)``.
    """

    name: str = "deeplab_wrn38"
    kwargs: dict[str, Any] = field(default_factory=dict)
    weight_path: str = ""
    trainable_params_name: list[str] = field(default_factory=lambda: ["ood_head"])
    trainable_params_name_update: list[str] = field(
        default_factory=lambda: ["aspp", "bot_fine", "bot_aspp", "ood_head"]
    )
    bn_train_mode: bool = True
    init_ood_head: bool = True


@dataclass
class TrainConfig:
    """Optimisation schedule: stage 1 (OOD head) until ``warmup_epoch``, stage 2 after.

    Stage 2 uses ``lr_update`` and, where set, ``optimizer_update`` / ``weight_decay_update`` /
    ``grad_clip_update`` (``None``: the same as stage 1); ``backbone_lr_mult`` applies to both stages.
    ``grad_clip`` is the stage-1 bound on the global gradient norm of the trained parameters (0: no
    clipping); the published Mask2Former run clips only in stage 2 (``grad_clip_update`` 0.01).
    ``val_heatmaps``: heat-map panels of the first validation images, drawn into TensorBoard at every
    validation (0: none).
    """

    epochs: int = 50
    warmup_epoch: int = 10
    batch_size: int = 8
    iters_per_epoch: int = 0
    optimizer: str = "adam"
    lr: float = 1e-4
    lr_update: float = 1e-6
    weight_decay: float = 0.0
    optimizer_update: str | None = None
    weight_decay_update: float | None = None
    backbone_lr_mult: float = 1.0
    grad_clip: float = 0.0
    grad_clip_update: float | None = None
    amp_dtype: str = "bf16"
    seed: int = 0
    log_interval: int = 20
    val_interval: int = 1
    val_heatmaps: int = 2


@dataclass
class LossConfig:
    """Loss terms and their weights (RCL margins, CE weights, pixel selection, set criterion)."""

    name: str = "rcl"
    margins: list[float] = fixed_list(3, [10.0, 5.0, 5.0])
    ce_weights: list[float] = fixed_list(2, [50.0, 10.0])
    selection_ratio: float = 0.8
    class_weight: float = 5.0
    mask_weight: float = 10.0
    dice_weight: float = 10.0
    ood_weight: float = 1.0
    no_object_weight: float = 0.1
    deep_supervision: bool = False
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass
class EvalConfig:
    """Benchmarks, anomaly score and metric protocol for testing.

    ``threshold_from``: a benchmark of ``datasets`` (evaluated first) whose highest score threshold
    finding 95% of its anomaly pixels is applied to every benchmark: each then also reports the
    false-positive rate at that threshold (``FPR_at_threshold``), the one anomaly number a set
    without anomalies (``toy_covariate``) has.
    """

    datasets: list[str] = field(default_factory=list)
    score: str = "learned"
    protocol: str = "published"
    per_image: bool = False
    postprocess: str = "none"
    threshold_from: str = ""
    save_heatmaps: int = 0
    export: str = ""
    """Server-format score files while testing: "" (none), "smiyc" or "fishyscapes" (``--export``)."""
    export_dir: str = ""


@dataclass
class Config:
    """The whole experiment; ``run_dir`` = ``output_root/id`` holds logs, checkpoints and results."""

    id: str = "debug"
    output_root: str = "./outputs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_root) / self.id


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` checked against the annotation ``tp`` (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is bool or tp is int:
        if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    else:
        raise ConfigError(f"{where}: unsupported annotation {tp!r}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _fields(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _check_length(obj: Any, key: str, value: Any, where: str) -> None:
    """Raise unless a :func:`fixed_list` field's ``value`` has its number of entries."""
    length = next(f.metadata.get("length") for f in dataclasses.fields(obj) if f.name == key)
    if length is not None and len(value) != length:
        raise ConfigError(f"{where}: expected {length} values, got {len(value)}: {value!r}")


def _unknown_key(key: str, valid: Iterable[str], where: str, source: str) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{where}{close[0]}'?" if close else ""
    return ConfigError(f"{source}: unknown key '{where}{key}'.{hint} Valid keys here: {', '.join(valid)}")


def _merge(obj: Any, updates: dict[str, Any], source: str, where: str = "") -> None:
    """Apply a nested mapping onto the dataclass ``obj`` in place, validating every key and value."""
    fields = _fields(obj)
    for key, value in updates.items():
        if key not in fields:
            raise _unknown_key(str(key), fields, where, source)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{where}{key}' is a section; expected a mapping, got {value!r}")
            _merge(current, value, source, f"{where}{key}.")
        else:
            try:
                value = _coerce(value, fields[key], f"{where}{key}")
                _check_length(obj, key, value, f"{where}{key}")
                setattr(obj, key, value)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a repeated key (YAML would keep the last one).

    ``source`` names the file (or the override) in the error.
    """

    source = "YAML"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in lines:
                raise ConfigError(
                    f"{self.source}: key {key!r} appears twice (lines {lines[key]} and {line}); "
                    "YAML would silently keep only the last one, so merge the two into one"
                )
            if isinstance(key, typing.Hashable):
                lines[key] = line
        return super().construct_mapping(node, deep)


def _load_yaml(text: str | typing.TextIO, source: str) -> Any:
    """Parse YAML with :class:`_UniqueKeyLoader`; a syntax error is a ``ConfigError`` naming ``source``."""
    loader = _UniqueKeyLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict[str, Any], str]]:
    """Return the mappings to merge in order: bases first, ``path`` last."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ chain")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = _load_yaml(f, str(path))
    if data is None:
        raise ConfigError(
            f"{path}: the file is empty (or only comments); expected a mapping of config sections"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    layers: list[tuple[dict[str, Any], str]] = []
    base = data.pop("_base_", None)
    if base is not None:
        layers += _read_yaml(path.parent / str(base), (*seen, path))
    layers.append((data, str(path)))
    return layers


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"a.b=value"`` into ``{"a": {"b": value}}``; the value is parsed like YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"command line: bad override {text!r}; expected section.key=value")
    value = _load_yaml(raw, f"command line: the value of {text!r}") if raw.strip() else ""
    nested: dict[str, Any] = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``schema()`` defaults, merge the YAML file at ``path`` (with its bases), then ``overrides``."""
    cfg = schema()
    if path is not None:
        for data, source in _read_yaml(Path(path)):
            _merge(cfg, data, source)
    for text in overrides:
        _merge(cfg, parse_override(text), "command line")
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (safe for YAML, JSON and ``weights_only`` checkpoints)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    with atomic_open(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


def add_experiment_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The published scripts' arguments (``--cfg --id --weight_path --test_dataset --seed``) + overrides."""
    parser.add_argument("--cfg", required=True, help="experiment YAML, e.g. exp/DeepLab.yaml")
    parser.add_argument("--id", default=None, help="run name; outputs go to output_root/id")
    parser.add_argument("--weight_path", default=None, help="checkpoint to start from or to test")
    parser.add_argument("--test_dataset", default=None, help="one benchmark name (default: all in eval)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """Resolve an experiment config from parsed :func:`add_experiment_args` arguments."""
    cfg = load_config(Config, args.cfg, args.overrides)
    if args.id is not None:
        cfg.id = args.id
    if args.weight_path is not None:
        cfg.model.weight_path = args.weight_path
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.test_dataset is not None:
        cfg.eval.datasets = [args.test_dataset]
    return cfg
