"""``lib.export``: the exported segmenter (``torch.export`` program and ONNX model run by onnxruntime)
gives the eager model's class scores and anomaly map, to float32 rounding, at image sizes other than
the traced one. Light DeepLab in the default suite; the tiny Mask2Anomaly (a minute to trace on two
cores) under ``-m slow``."""

from __future__ import annotations

import json

import pytest
import torch

from lib.config import Config, load_config
from lib.errors import UserError
from lib.export import EXAMPLE_SIZE, OUTPUT_NAMES, export, export_onnx, get_args_parser, main
from lib.models import build_model
from lib.postprocess import gaussian_blur
from lib.scores import get_score

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # inside torch.export.load
SIZES = [(64, 96), (75, 130), (121, 203)]
FAMILIES = [
    pytest.param(
        (
            "deeplab_wrn_light",
            "exp/toy_pretrain.yaml",
            ["eval.score=energy", "eval.postprocess=gaussian_blur"],
        ),
        id="deeplab",
    ),
    pytest.param(("mask2anomaly_tiny", "exp/toy_m2f.yaml", []), id="m2f", marks=pytest.mark.slow),
]


def eager_reference(
    model: torch.nn.Module, cfg: Config, image: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``test_*.py`` computes: model -> score of ``eval.score`` -> ``eval.postprocess``."""
    with torch.no_grad():
        anomaly_score, logits = model(image)
    score = get_score(cfg.eval.score)(logits, anomaly_score)
    return logits, gaussian_blur(score) if cfg.eval.postprocess == "gaussian_blur" else score


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, tmp_path_factory):
    name, cfg_path, overrides = request.param
    folder = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    model = build_model(name).eval()
    weights = folder / "weights.pth"
    torch.save(model.state_dict(), weights)
    cfg = load_config(Config, cfg_path, overrides)
    pt2, difference = main(
        get_args_parser().parse_args(
            [
                "--cfg",
                cfg_path,
                "--weight_path",
                str(weights),
                "--format",
                "torch_export",
                "--out",
                str(folder / "m.pt2"),
                *overrides,
            ]
        )
    )
    assert difference is not None and difference < 1e-3
    return model, cfg, pt2, folder


def assert_float32_close(expected: torch.Tensor, actual: torch.Tensor) -> None:
    """Equal up to float32 rounding of differently ordered sums: relative 1e-5 of the output's scale."""
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def test_exported_program_gives_the_eager_outputs_at_any_size(exported):
    model, cfg, pt2, folder = exported
    program = torch.export.load(pt2).module()
    meta = json.loads(pt2.with_suffix(".json").read_text())
    assert meta["score"] == cfg.eval.score and meta["postprocess"] == cfg.eval.postprocess
    for i, size in enumerate(SIZES):
        image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(i))
        expected = eager_reference(model, cfg, image)
        with torch.no_grad():
            actual = program(image)
        assert len(actual) == len(OUTPUT_NAMES)
        for e, a in zip(expected, actual):
            assert_float32_close(e, a)


def test_onnx_model_gives_the_eager_outputs_at_any_size(exported):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, cfg, pt2, folder = exported
    program = torch.export.load(pt2)
    path = export_onnx(program, folder / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    for i, size in enumerate([*SIZES, EXAMPLE_SIZE]):
        image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(10 + i))
        expected = eager_reference(model, cfg, image)
        actual = session.run(list(OUTPUT_NAMES), {"image": image.numpy()})
        for e, a in zip(expected, actual):
            assert_float32_close(e, torch.from_numpy(a))


def test_unknown_format_and_postprocess_are_user_errors(tmp_path):
    cfg = load_config(Config, "exp/toy_pretrain.yaml")
    with pytest.raises(UserError, match="unknown --format 'tflite'"):
        export(cfg, tmp_path / "absent.pth", "tflite", tmp_path / "m.tflite")
    cfg = load_config(Config, "exp/toy_pretrain.yaml", ["eval.postprocess=median"])
    torch.save(build_model("deeplab_wrn_light").state_dict(), tmp_path / "w.pth")
    with pytest.raises(UserError, match="unknown eval.postprocess 'median'"):
        export(cfg, tmp_path / "w.pth", "torch_export", tmp_path / "m.pt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]
