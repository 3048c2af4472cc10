"""Checkpoints to ``.safetensors``: ``python -m lib.models.convert IN OUT [--cfg YAML | --model NAME]``.

Reads any checkpoint this project loads (NVIDIA's ``DeepLabV3+_WideResNet38_baseline.pth``,
Mask2Anomaly's ``bt-f-xl.pth``, the released MultiShiftSeg weights, this project's own checkpoints)
and writes ``OUT.safetensors`` with its state dict plus ``OUT.json`` with the model name and
arguments, so a release needs no pickle at all. The tensors are kept as they are (only unwrapped,
with the ``module.`` prefix stripped): loading the converted file goes through the same model hooks
as the original and gives the same model, bit for bit; a closed-world file stays without its OOD
head, so testing still refuses it. Before writing, the weights are loaded strictly into the named
model (as training's starting weights), so a file that would not load is never produced.

The model comes from the checkpoint itself (``model_name``/``model_kwargs``, written by training),
else from ``--cfg`` (``model.name``/``model.kwargs`` of an experiment YAML) or ``--model`` (+
``--model_kwargs`` as JSON). The JSON also names the source file.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from lib.atomic import write_bytes_atomic, write_text_atomic
from lib.cli_errors import run_cli
from lib.errors import UserError
from lib.models.checkpoints import SAFETENSORS_SUFFIX, load_weights, read_state_dict, sidecar_path
from lib.models.registry import build_model, model_names


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with storage of its own (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        value = value.detach().contiguous()
        storage = value.untyped_storage().data_ptr()
        if value.numel() and storage in seen:
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out


def convert(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    model_name: str | None = None,
    model_kwargs: Mapping[str, object] | None = None,
) -> tuple[Path, Path]:
    """Write ``target`` (``.safetensors``) and its JSON from the checkpoint ``source``; return both paths.

    ``model_name``/``model_kwargs`` name the model when the checkpoint does not (third-party files);
    a given ``model_name`` replaces the checkpoint's own name and arguments.
    """
    from safetensors.torch import save

    target = Path(target)
    if target.suffix != SAFETENSORS_SUFFIX:
        raise UserError(f"{target}: the output must end in {SAFETENSORS_SUFFIX}")
    tensors, extra = read_state_dict(source)
    name = model_name or extra.get("model_name")
    if not name:
        raise UserError(
            f"{source} does not say which model it holds; pass --cfg exp/<experiment>.yaml or --model NAME "
            f"(one of {', '.join(model_names())})"
        )
    own_kwargs = extra.get("model_kwargs") if model_name is None else None
    kwargs = dict(model_kwargs if model_kwargs is not None else own_kwargs or {})
    load_weights(build_model(name, **kwargs), tensors, fill_ood_head=True)  # as starting weights, at least
    meta = {"model_name": name, "model_kwargs": kwargs, "source": Path(source).name}
    write_bytes_atomic(target, save(_unshared(tensors)))
    sidecar = write_text_atomic(sidecar_path(target), json.dumps(meta, indent=2) + "\n")
    return target, sidecar


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a checkpoint to .safetensors + a JSON of its model."
    )
    parser.add_argument("source", metavar="IN", help="checkpoint (.pth or .safetensors)")
    parser.add_argument("target", metavar="OUT", help="output file, ending in .safetensors")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cfg", default=None, help="experiment YAML whose model.name/model.kwargs to use")
    group.add_argument("--model", default=None, help="registered model name, e.g. deeplab_wrn38")
    parser.add_argument(
        "--model_kwargs", default=None, help="with --model: JSON, e.g. '{\"num_queries\": 100}'"
    )
    return parser


def main(args: argparse.Namespace) -> tuple[Path, Path]:
    name, kwargs = args.model, None
    if args.model_kwargs is not None:
        if args.model is None:
            raise UserError("--model_kwargs needs --model")
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as err:
            raise UserError(f"--model_kwargs {args.model_kwargs!r} is not JSON: {err}") from err
        if not isinstance(kwargs, dict):
            raise UserError(f"--model_kwargs must be a JSON object, got {args.model_kwargs!r}")
    if args.cfg is not None:
        from lib.config import Config, load_config

        model = load_config(Config, args.cfg).model
        name, kwargs = model.name, model.kwargs
    target, sidecar = convert(args.source, args.target, model_name=name, model_kwargs=kwargs)
    print(f"wrote {target} and {sidecar}")
    return target, sidecar


if __name__ == "__main__":
    run_cli(main, get_args_parser())
