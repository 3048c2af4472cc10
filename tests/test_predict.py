"""``lib.predict`` end to end: a light DeepLab saved as a plain state dict, two images (a file and
a folder), outputs compared with the model's own forward; config overrides; input errors."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

import lib.predict
from lib.errors import UnknownNameError, UserError
from lib.labels import colorize
from lib.models import build_model
from lib.models.checkpoints import MissingOODHeadError, WrongModelError, save_checkpoint
from lib.postprocess import gaussian_blur
from lib.predict import find_images, get_args_parser, main, split_overrides
from lib.scores import msp

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = build_model("deeplab_wrn_light").eval()
    weights = tmp_path / "light.pth"
    torch.save(model.state_dict(), weights)
    cfg = tmp_path / "light.yaml"
    cfg.write_text("model:\n  name: deeplab_wrn_light\neval:\n  score: learned\n")
    rng = np.random.default_rng(0)
    images = {
        "street": rng.integers(0, 256, (40, 72, 3), dtype=np.uint8),
        "nested": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
    }
    Image.fromarray(images["street"]).save(tmp_path / "street.png")
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    Image.fromarray(images["nested"]).save(tmp_path / "folder" / "sub" / "nested.png")
    return model, weights, cfg, images, tmp_path


def _forward(model, rgb):
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        return model(x[None])


def test_predict_end_to_end(setup):
    model, weights, cfg, images, root = setup
    out = root / "out"
    args = ["--cfg", str(cfg), "--weight_path", str(weights), "--out", str(out), "--device", "cpu"]
    written = main(
        get_args_parser().parse_args([*args, "--input", str(root / "street.png"), str(root / "folder")])
    )
    assert written == [out / "street_anomaly.npy", out / "sub" / "nested_anomaly.npy"]
    for stem, rgb in (("street", images["street"]), ("sub/nested", images["nested"])):
        anomaly, logits = _forward(model, rgb)
        saved = np.load(out / f"{stem}_anomaly.npy")
        assert saved.dtype == np.float32 and saved.shape == rgb.shape[:2]
        np.testing.assert_allclose(saved, anomaly[0].numpy(), rtol=1e-5, atol=1e-4)
        pred = np.asarray(Image.open(out / f"{stem}_pred.png").convert("RGB"))
        np.testing.assert_array_equal(pred, colorize(logits.argmax(1)[0].numpy()))
        with Image.open(out / f"{stem}_heatmap.png") as panel:
            assert panel.format == "PNG" and panel.width == 1400  # the 3-column heat-map panel
    # Score and post-processing come from the config and its overrides.
    main(
        get_args_parser().parse_args(
            [*args, "--input", str(root / "street.png"), "eval.score=msp", "eval.postprocess=gaussian_blur"]
        )
    )
    anomaly, logits = _forward(model, images["street"])
    expected = gaussian_blur(msp(logits, anomaly))[0].numpy()
    np.testing.assert_allclose(np.load(out / "street_anomaly.npy"), expected, rtol=1e-5, atol=1e-5)


def test_cli_runs_as_module(setup):
    _, weights, cfg, _, root = setup
    out = root / "cli"
    cmd = [sys.executable, "-m", "lib.predict", "--cfg", str(cfg), "--weight_path", str(weights)]
    subprocess.run(
        [*cmd, "--input", str(root / "street.png"), "--out", str(out)], check=True, capture_output=True
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "street_anomaly.npy",
        "street_heatmap.png",
        "street_pred.png",
    ]


def test_overrides_after_inputs_are_split():
    inputs, overrides = split_overrides(["a.png", "eval.score=msp", "dir"], ["data.root=x"])
    assert inputs == ["a.png", "dir"] and overrides == ["eval.score=msp", "data.root=x"]


def test_input_errors(setup, tmp_path):
    _, weights, cfg, _, root = setup
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_images([root / "missing.png"])
    (root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        find_images([root / "empty"])
    (root / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not an image file"):
        find_images([root / "notes.txt"])
    (root / "other").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "other" / "street.jpg")
    with pytest.raises(UserError, match=r"would both write outputs named street_\*"):
        find_images([root / "street.png", root / "other"])
    args = ["--cfg", str(cfg), "--weight_path", str(weights), "--input", str(root / "street.png")]
    with pytest.raises(UnknownNameError, match="unknown eval.postprocess 'blur'"):
        main(get_args_parser().parse_args([*args, "--out", str(tmp_path / "o"), "eval.postprocess=blur"]))
    with pytest.raises(KeyError, match="unknown anomaly score 'energyy'"):
        main(get_args_parser().parse_args([*args, "--out", str(tmp_path / "o"), "eval.score=energyy"]))


def test_a_checkpoint_without_ood_head_is_refused(setup, tmp_path):
    model, _, cfg, _, root = setup
    closed = tmp_path / "closed_world.pth"
    torch.save({k: v for k, v in model.state_dict().items() if k != "ood_head.weight"}, closed)
    args = ["--cfg", str(cfg), "--weight_path", str(closed), "--input", str(root / "street.png")]
    with pytest.raises(MissingOODHeadError, match=r"missing keys \(1\): ood_head\.weight"):
        main(get_args_parser().parse_args([*args, "--out", str(tmp_path / "o")]))
    assert not any((tmp_path / "o").rglob("*")), "nothing is written with refused weights"


def test_a_trained_checkpoint_rebuilds_its_own_model(setup, tmp_path):
    """A save_checkpoint file names its model and arguments: the config need not repeat them, and a
    config that names another model is refused, naming both."""
    _, _, cfg, images, root = setup
    torch.manual_seed(5)
    seven = build_model("deeplab_wrn_light", num_classes=7).eval()
    path = tmp_path / "last.pth"
    save_checkpoint(
        path,
        model=seven,
        epoch=0,
        stage=1,
        config={},
        model_name="deeplab_wrn_light",
        model_kwargs={"num_classes": 7},
        metrics={},
    )
    args = ["--cfg", str(cfg), "--weight_path", str(path), "--input", str(root / "street.png")]
    main(get_args_parser().parse_args([*args, "--out", str(tmp_path / "o"), "eval.score=msp"]))
    _, logits = _forward(seven, images["street"])
    saved = np.load(tmp_path / "o" / "street_anomaly.npy")
    np.testing.assert_allclose(saved, msp(logits, None)[0].numpy(), rtol=1e-5, atol=1e-5)
    other = [*args, "--out", str(tmp_path / "p"), "model.name=deeplab_wrn38"]
    with pytest.raises(WrongModelError, match="'deeplab_wrn_light' model .* model.name is 'deeplab_wrn38'"):
        main(get_args_parser().parse_args(other))


def test_panels_state_the_missing_labels_and_draw_a_given_threshold(setup, monkeypatch):
    """Unlabelled images: no ground truth and no binary map unless --threshold T, then score >= T."""
    _, weights, cfg, images, root = setup
    drawn = {}
    monkeypatch.setattr(lib.predict, "save_figure", lambda path, fig: drawn.__setitem__(str(path), fig))
    args = ["--cfg", str(cfg), "--weight_path", str(weights), "--device", "cpu"]
    args += ["--input", str(root / "street.png")]
    main(get_args_parser().parse_args([*args, "--out", str(root / "plain")]))
    (fig,) = drawn.values()
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert any("unlabelled image" in t for t in texts) and any("--threshold T" in t for t in texts)
    assert not [im for ax in fig.axes for im in ax.get_images() if (im.get_gid() or "").startswith("binary:")]
    drawn.clear()
    main(get_args_parser().parse_args([*args, "--out", str(root / "thr"), "--threshold", "0.5"]))
    (fig,) = drawn.values()
    (binary,) = [im for ax in fig.axes for im in ax.get_images() if im.get_gid() == "binary:learned"]
    score = np.load(root / "thr" / "street_anomaly.npy")
    np.testing.assert_array_equal(np.asarray(binary.get_array()), score >= 0.5)
    with pytest.raises(UserError, match="--threshold must be a finite number"):
        main(get_args_parser().parse_args([*args, "--out", str(root / "nan"), "--threshold", "nan"]))
