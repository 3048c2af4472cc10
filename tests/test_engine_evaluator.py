"""Evaluator on tiny benchmark trees: streamed metrics equal the metrics of the concatenated maps."""

import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from lib.data.benchmarks import build_benchmark
from lib.engine.evaluator import (
    evaluate_benchmark,
    protocol_rule,
    results_header,
    results_table,
    smiyc_track,
    write_results,
)
from lib.labels import NUM_CLASSES
from lib.metrics import ConfusionMatrix, ood_metrics
from lib.postprocess import apply_postprocess
from lib.scores import get_score
from lib.smiyc import smiyc_metrics
from lib.submission import FishyscapesExporter, SMIYCExporter
from tests.data_fixtures import write_all_flat_benchmarks, write_muad_like


class PixelModel(nn.Module):
    """Deterministic per-pixel model: logits = 1x1 conv of the image; anomaly = mean of channel 0."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.head = nn.Conv2d(3, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, 0] * 2.0 + x[:, 1], self.head(x)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_all_flat_benchmarks(root)
    write_muad_like(root, "toy_shift", n=3)  # MUAD encoding; the nested MUAD folder trips the writer
    return root


def _reference(model, dataset, score):
    scores, labels, cm = [], [], ConfusionMatrix()
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            anomaly, logits = model(item["image"][None])
            scores.append(get_score(score)(logits, anomaly)[0].flatten())
            labels.append(item["ood_label"].flatten())
            if "sem_label" in item:
                cm.update(logits.argmax(1)[0], item["sem_label"])
    return torch.cat(scores), torch.cat(labels), cm


@pytest.mark.parametrize(
    ("name", "score", "protocol"), [("RoadAnomaly21", "learned", "published"), ("toy_shift", "msp", "exact")]
)
def test_streamed_metrics_equal_concatenated(root, name, score, protocol):
    model = PixelModel().eval()
    dataset = build_benchmark(name, root=root)
    result = evaluate_benchmark(
        model,
        dataset,
        score_fn=get_score(score),
        device=torch.device("cpu"),
        protocol=protocol,
        progress=False,
    )
    scores, labels, cm = _reference(model, dataset, score)
    expected = ood_metrics(
        scores, labels, fpr_rule={"published": "published", "exact": "first_tpr_geq"}[protocol]
    )
    assert {k: result[k] for k in expected} == expected
    assert result["protocol"] == protocol
    assert result["images"] == len(dataset)
    if name == "toy_shift":
        semantic = cm.compute()
        assert (result["mIoU"], result["mAcc"]) == (semantic["mIoU"], semantic["mAcc"])
    else:
        assert "mIoU" not in result


def test_smiyc_protocol_and_per_image_means(root):
    model = PixelModel().eval()
    dataset = build_benchmark("RoadObstacle21", root=root)
    result = evaluate_benchmark(
        model,
        dataset,
        score_fn=get_score("learned"),
        device=torch.device("cpu"),
        protocol="smiyc",
        per_image=True,
        track=smiyc_track("RoadObstacle21"),
        progress=False,
    )
    frames, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            frames.append(model(item["image"][None])[0][0])
            labels.append(item["ood_label"])
    expected = smiyc_metrics(frames, labels, track="ObstacleTrack")
    assert (result["protocol"], result["track"]) == ("smiyc", "ObstacleTrack")
    assert {k: result[k] for k in expected} == expected
    assert result["per_image"]["n_images"] == len(dataset)
    table = results_table({"RoadObstacle21": result})
    assert table.splitlines()[0] == (
        "| benchmark | AUROC | AP | FPR95 | best_f1 | sIoU | PPV | F1_mean | img AUROC | img AP | img FPR95 "
        "| images |"
    )


def test_postprocess_blurs_each_map_before_scoring(root):
    model = PixelModel().eval()
    dataset = build_benchmark("RoadAnomaly", root=root)
    result = evaluate_benchmark(
        model,
        dataset,
        score_fn=get_score("learned"),
        device=torch.device("cpu"),
        postprocess="gaussian_blur",
        progress=False,
    )
    scores, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            scores.append(apply_postprocess("gaussian_blur", model(item["image"][None])[0]).flatten())
            labels.append(item["ood_label"].flatten())
    expected = ood_metrics(torch.cat(scores), torch.cat(labels))
    assert {k: result[k] for k in expected} == expected and result["postprocess"] == "gaussian_blur"


def test_max_images_and_heatmaps(root, tmp_path, caplog):
    model = PixelModel()
    dataset = build_benchmark("toy_shift", root=root)
    caplog.set_level("INFO", logger="lib.engine.evaluator")
    result = evaluate_benchmark(
        model,
        dataset,
        score_fn=get_score("learned"),
        device=torch.device("cpu"),
        max_images=2,
        heatmap_dir=tmp_path / "maps",
        num_heatmaps=1,
        progress=False,
    )
    assert result["images"] == 2
    assert "first 2 of 3 images" in caplog.text
    first = dataset[0]
    files = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert files == [f"{first['name']}_heatmap.png", f"{first['name']}_pred.png"]
    heat = np.asarray(Image.open(tmp_path / "maps" / files[0]))
    assert heat.shape == (*first["ood_label"].shape, 3) and heat.dtype == np.uint8


def test_export_covers_unlabelled_frames_that_metrics_skip(root, tmp_path):
    """SMIYC export of every frame; the unlabelled test frame is exported but not scored."""
    model = PixelModel().eval()
    full = build_benchmark("RoadAnomaly21", root=root, include_unlabelled=True)
    labelled = build_benchmark("RoadAnomaly21", root=root)
    common = {"score_fn": get_score("learned"), "device": torch.device("cpu"), "progress": False}
    expected = evaluate_benchmark(model, labelled, **common)
    with SMIYCExporter(tmp_path, method="m", track="AnomalyTrack") as exporter:
        result = evaluate_benchmark(
            model,
            full,
            exporter=exporter,
            curves_path=tmp_path / "curves.png",
            curve_label="learned",
            **common,
        )
    assert exporter.count == len(full) == 3
    assert result == {**expected, "unlabelled": 1}
    assert "| RoadAnomaly21 |" in results_table({"RoadAnomaly21": result})
    assert results_table({"RoadAnomaly21": result}).endswith("| 2 (+1 unlabelled) |")
    assert Image.open(tmp_path / "curves.png").format == "PNG"
    name, image_path, _ = full.samples[-1]
    with torch.no_grad():
        anomaly = model(full[2]["image"][None])[0][0].numpy()
    with h5py.File(tmp_path / "anomaly_p" / "m" / "AnomalyTrack-all" / f"{name}.hdf5", "r") as f:
        np.testing.assert_array_equal(f["value"][()], exporter.mapping(anomaly))


def test_fishyscapes_export_by_index_with_predictions(root, tmp_path):
    model = PixelModel().eval()
    dataset = build_benchmark("toy_shift", root=root)
    with FishyscapesExporter(tmp_path) as exporter:
        result = evaluate_benchmark(
            model,
            dataset,
            score_fn=get_score("msp"),
            device=torch.device("cpu"),
            exporter=exporter,
            progress=False,
        )
    assert result["images"] == 3 and "unlabelled" not in result
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{i}_{kind}.npy" for i in range(3) for kind in ("anomaly", "segmentation")
    ]
    with torch.no_grad():
        anomaly, logits = model(dataset[1]["image"][None])
    seg = np.load(tmp_path / "1_segmentation.npy")
    assert seg.dtype == np.uint8 and np.array_equal(seg, logits[0].argmax(0).numpy())
    np.testing.assert_allclose(
        np.load(tmp_path / "1_anomaly.npy"), get_score("msp")(logits, anomaly)[0].numpy()
    )


def test_only_unlabelled_frames_give_counts_without_metrics(tmp_path, caplog):
    write_all_flat_benchmarks(tmp_path)
    for label in (tmp_path / "dataset_ObstacleTrack" / "labels_masks").iterdir():
        label.unlink()
    dataset = build_benchmark("RoadObstacle21", root=tmp_path, include_unlabelled=True)
    result = evaluate_benchmark(
        PixelModel().eval(),
        dataset,
        score_fn=get_score("learned"),
        device=torch.device("cpu"),
        curves_path=tmp_path / "curves.png",
        progress=False,
    )
    assert result == {"protocol": "published", "images": 0, "unlabelled": 3}
    assert not (tmp_path / "curves.png").exists()
    assert "no labelled image among 3" in caplog.text
    assert "| RoadObstacle21 | - | - | - | 0 (+3 unlabelled) |" in results_table({"RoadObstacle21": result})


def test_results_files(tmp_path):
    results = {
        "RoadAnomaly": {"AUROC": 0.9, "AP": 0.5, "FPR95": 0.25, "images": 2},
        "MUAD": {"AUROC": 0.8, "AP": 0.125, "FPR95": 0.5, "mIoU": 0.3, "mAcc": 0.75, "images": 3},
    }
    table = results_table(results)
    assert table.splitlines()[0] == "| benchmark | AUROC | AP | FPR95 | mIoU | mAcc | images |"
    assert "| RoadAnomaly | 90.00 | 50.00 | 25.00 | - | - | 2 |" in table
    assert "| MUAD | 80.00 | 12.50 | 50.00 | 30.00 | 75.00 | 3 |" in table
    json_path, md_path = write_results(
        tmp_path, results, protocol="published", score="learned", weights="w.pth", skipped=["FS_Static"]
    )
    data = json.loads(json_path.read_text())
    assert data["benchmarks"] == results and data["skipped"] == ["FS_Static"]
    assert data["protocol"] == "published" and "recall closest to 0.95" in data["fpr_rule"]
    assert data["protocol_rule"] == protocol_rule("published")
    assert (data["postprocess"], data["per_image"], data["model"]) == ("none", False, "")
    assert "export" not in data
    text = md_path.read_text()
    assert table in text and "recall closest to 0.95" in text and "FS_Static" in text


def test_header_names_every_choice(tmp_path):
    header = results_header(
        protocol="smiyc",
        score="rba",
        postprocess="gaussian_blur",
        per_image=True,
        weights="w.pth",
        model="m2f",
    )
    assert header.splitlines() == [
        "Weights: `w.pth` (model `m2f`)  ",
        "Score: `rba`, postprocess: `gaussian_blur`  ",
        f"Protocol: `smiyc` — {protocol_rule('smiyc')}  ",
        "FPR95 rule: FPR95 at the first point of the binned SMIYC curve with TPR >= 0.95  ",
        "Per-image means: yes: `img` columns are means over the images that have both classes",
    ]
    json_path, md_path = write_results(
        tmp_path,
        {"RoadAnomaly21": {"AUROC": 0.5, "AP": 0.5, "FPR95": 0.5, "images": 1}},
        protocol="smiyc",
        score="rba",
        weights="w.pth",
        postprocess="gaussian_blur",
        per_image=True,
        model="m2f",
        export={"format": "smiyc", "dir": "out"},
    )
    data = json.loads(json_path.read_text())
    assert (data["score"], data["postprocess"], data["per_image"], data["model"]) == (
        "rba",
        "gaussian_blur",
        True,
        "m2f",
    )
    assert data["export"] == {"format": "smiyc", "dir": "out"}
    assert md_path.read_text().startswith(header + "\n| benchmark |")


def test_unknown_protocol():
    with pytest.raises(ValueError, match="'fishy'; expected one of published, exact, smiyc"):
        protocol_rule("fishy")
