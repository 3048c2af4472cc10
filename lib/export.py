"""Export a segmenter with its anomaly score for deployment: ``python -m lib.export --cfg YAML
--weight_path W --format torch_export|onnx --out F [section.key=value ...]``.

The exported program takes one normalised image ``image [1, 3, H, W]`` float32 (RGB in [0, 1], minus
``data.mean``, divided by ``data.std``) of any height and width, and returns ``logits [1, C, H, W]``
(the closed-world class scores: DeepLab's logits, Mask2Former's per-class mask scores) and
``anomaly [1, H, W]`` (``eval.score`` after ``eval.postprocess``; higher = more anomalous), the
numbers ``test_*.py`` and ``lib.predict`` compute. Both model families export (Mask2Former pads to a
multiple of 32 inside the program).

- ``torch_export``: a ``torch.export`` program saved with ``torch.export.save`` (``F``, usually
  ``.pt2``); run it with ``torch.export.load(F).module()(image)``.
- ``onnx``: an ONNX model from ``torch.onnx.export(dynamo=True)`` (needs the ``export`` extra:
  ``onnx``, ``onnxscript``; run it with ``onnxruntime``), inputs and outputs named as above, height
  and width dynamic.

Beside ``F`` a JSON (same stem) records the model, weights, score, postprocess, normalisation and
the input and output names. After writing, the exported model is run once on a test image and its
largest difference to the eager model is printed (for ONNX when ``onnxruntime`` is installed).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from lib.atomic import write_text_atomic
from lib.cli_errors import run_cli
from lib.config import Config, load_config
from lib.errors import UserError
from lib.models.checkpoints import load_model
from lib.postprocess import POSTPROCESS, apply_postprocess
from lib.scores import get_score

FORMATS = ("torch_export", "onnx")
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "anomaly")
EXAMPLE_SIZE = (97, 161)
"""Height and width of the tracing example: no multiple of 2, so nothing specialises on a size."""
CHECK_SIZE = (75, 130)
"""A second size, for the check after writing."""


class ScoredSegmenter(nn.Module):
    """``image [B, 3, H, W]`` -> ``(logits [B, C, H, W], anomaly [B, H, W])``: the model, then the
    anomaly score ``score`` of its outputs, then ``postprocess``."""

    def __init__(self, model: nn.Module, *, score: str, postprocess: str) -> None:
        super().__init__()
        POSTPROCESS.get(postprocess)  # an unknown name is an error naming the nearest one
        self.model = model
        self.score = score
        self.score_fn = get_score(score)
        self.postprocess = postprocess

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_score, logits = self.model(image)
        return logits, apply_postprocess(self.postprocess, self.score_fn(logits, anomaly_score))


def _dynamic_shapes() -> dict[str, dict[int, object]]:
    size = torch.export.Dim.DYNAMIC
    return {INPUT_NAME: {2: size, 3: size}}


def example_image(size: tuple[int, int] = EXAMPLE_SIZE, seed: int = 0) -> torch.Tensor:
    """A reproducible normalised-image stand-in ``[1, 3, H, W]``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, *size, generator=generator)


def export_program(segmenter: nn.Module) -> torch.export.ExportedProgram:
    """``torch.export`` of ``segmenter`` (eval mode) with dynamic height and width, batch 1."""
    with torch.no_grad():
        return torch.export.export(segmenter.eval(), (example_image(),), dynamic_shapes=_dynamic_shapes())


def export_onnx(program: torch.export.ExportedProgram, out: Path) -> Path:
    """Write the ONNX model of an exported ``program`` to ``out`` (weights inside the file). The
    program is traced by :func:`export_program`: the ONNX exporter's own tracing is stricter about
    the dynamic sizes and rejects Mask2Former's padding to a multiple of 32."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as err:
        raise UserError(
            "--format onnx needs onnx and onnxscript: pip install 'multishiftseg[export]'"
        ) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_program = torch.onnx.export(
        program,
        (example_image(),),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        external_data=False,
        verbose=False,
    )
    onnx_program.save(str(out), external_data=False)
    return out


def run_onnx(path: Path, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the ONNX model at ``path`` on ``image`` with onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, anomaly = session.run(list(OUTPUT_NAMES), {INPUT_NAME: image.numpy()})
    return torch.from_numpy(logits), torch.from_numpy(anomaly)


def max_difference(eager: Sequence[torch.Tensor], exported: Sequence[torch.Tensor]) -> float:
    """The largest absolute difference between matching outputs (shapes must agree)."""
    for a, b in zip(eager, exported):
        if a.shape != b.shape:
            raise AssertionError(f"exported output shape {tuple(b.shape)} != eager {tuple(a.shape)}")
    return max(float((a - b).abs().max()) for a, b in zip(eager, exported))


def export(cfg: Config, weight_path: str | Path, fmt: str, out: str | Path) -> tuple[Path, float | None]:
    """Build, load, wrap and export; return the written file and the check's largest difference
    (``None`` when it could not run: ONNX without onnxruntime)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    model = load_model(weight_path, name=cfg.model.name, kwargs=cfg.model.kwargs).eval()
    segmenter = ScoredSegmenter(model, score=cfg.eval.score, postprocess=cfg.eval.postprocess).eval()
    check = example_image(CHECK_SIZE, seed=1)
    with torch.no_grad():
        eager = segmenter(check)
    program = export_program(segmenter)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch_export":
        torch.export.save(program, out)
        with torch.no_grad():
            difference = max_difference(eager, torch.export.load(out).module()(check))
    else:
        export_onnx(program, out)
        try:
            difference = max_difference(eager, run_onnx(out, check))
        except ImportError:
            difference = None
    meta = {
        "format": fmt,
        "model": cfg.model.name,
        "model_kwargs": cfg.model.kwargs,
        "weights": str(weight_path),
        "score": cfg.eval.score,
        "postprocess": cfg.eval.postprocess,
        "input": {INPUT_NAME: "[1, 3, H, W] float32, RGB in [0, 1] normalised by mean and std"},
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "outputs": {OUTPUT_NAMES[0]: "[1, C, H, W] class scores", OUTPUT_NAMES[1]: "[1, H, W] anomaly score"},
    }
    write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return out, difference


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Export a segmenter and its anomaly score (torch.export / ONNX)."
    )
    parser.add_argument("--cfg", required=True, help="experiment YAML, e.g. exp/DeepLab.yaml")
    parser.add_argument("--weight_path", required=True, help="checkpoint to load (.pth or .safetensors)")
    parser.add_argument(
        "--format", required=True, choices=FORMATS, help="torch_export (.pt2) or onnx (.onnx)"
    )
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def main(args: argparse.Namespace) -> tuple[Path, float | None]:
    cfg = load_config(Config, args.cfg, args.overrides)
    out, difference = export(cfg, args.weight_path, args.format, args.out)
    check = "not run (onnxruntime not installed)" if difference is None else f"{difference:.3g}"
    print(f"wrote {out} ({args.format}); largest difference to the eager model at {CHECK_SIZE}: {check}")
    return out, difference


if __name__ == "__main__":
    run_cli(main, get_args_parser())
