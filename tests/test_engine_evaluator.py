"""The one evaluation loop on tiny benchmark trees: streamed metrics equal the metrics of the
concatenated maps; sinks for export, heat maps and curves; several scores in one pass; a benchmark
without anomalies reported as not applicable; the results file keyed by benchmark and merged."""

import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from lib.data.benchmarks import build_benchmark
from lib.engine.evaluator import (
    CurveSink,
    ExportSink,
    HeatmapSink,
    Inference,
    MetricSink,
    SemanticSink,
    benchmark_result,
    evaluate_model,
    model_images,
    stream,
)
from lib.errors import UnknownNameError, UserError
from lib.labels import IGNORE, NUM_CLASSES
from lib.metrics import ConfusionMatrix, fpr_at_threshold, ood_metrics, threshold_at_tpr
from lib.postprocess import apply_postprocess
from lib.protocols import get_protocol, smiyc_track
from lib.results import provenance, read_results, results_header, results_table, write_results
from lib.scores import get_score
from lib.submission import FishyscapesExporter, SMIYCExporter
from tests.data_fixtures import write_all_flat_benchmarks, write_flat_benchmark, write_muad_like
from tests.utils import smiyc_metrics

CPU = Inference(device=torch.device("cpu"))


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
    write_flat_benchmark(
        root, "toy_covariate", "leftImg8bit", "leftLabel", ".png", ".png", [0, 5, 18, IGNORE]
    )
    return root


def _evaluate(model, dataset, score="learned", **kwargs):
    return evaluate_model(model, dataset, score=score, score_fn=get_score(score), progress=False, **kwargs)


def _stream(model, dataset, sinks, scores=("learned",), inference=CPU):
    images = model_images(
        model, dataset, {s: get_score(s) for s in scores}, inference, indices=range(len(dataset))
    )
    stream(images, sinks, desc="test", total=len(dataset), progress=False)


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
    result = _evaluate(model, dataset, score, inference=CPU, protocol=protocol)
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


def test_several_scores_and_batches_in_one_pass_equal_separate_runs(root):
    """One pass feeds a metric sink per score; batching images of one size changes nothing."""
    model = PixelModel().eval()
    dataset = build_benchmark("toy_shift", root=root)
    sinks = {s: MetricSink(s) for s in ("learned", "msp", "energy")}
    _stream(
        model,
        dataset,
        list(sinks.values()),
        scores=list(sinks),
        inference=Inference(torch.device("cpu"), batch_size=2),
    )
    for score, sink in sinks.items():
        expected = _evaluate(model, dataset, score, inference=CPU)
        assert benchmark_result(sink) == {k: v for k, v in expected.items() if k not in ("mIoU", "mAcc")}


def test_smiyc_protocol_and_per_image_means(root):
    model = PixelModel().eval()
    dataset = build_benchmark("RoadObstacle21", root=root)
    result = _evaluate(
        model, dataset, inference=CPU, protocol="smiyc", per_image=True, track=smiyc_track("RoadObstacle21")
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
    result = _evaluate(model, dataset, inference=Inference(torch.device("cpu"), postprocess="gaussian_blur"))
    scores, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            scores.append(apply_postprocess("gaussian_blur", model(item["image"][None])[0]).flatten())
            labels.append(item["ood_label"].flatten())
    expected = ood_metrics(torch.cat(scores), torch.cat(labels))
    assert {k: result[k] for k in expected} == expected and result["postprocess"] == "gaussian_blur"
    with pytest.raises(UnknownNameError, match="unknown eval.postprocess 'blur'"):
        Inference(torch.device("cpu"), postprocess="blur")


def test_max_images(root, caplog):
    dataset = build_benchmark("toy_shift", root=root)
    caplog.set_level("INFO", logger="lib.engine.evaluator")
    result = _evaluate(PixelModel(), dataset, inference=CPU, max_images=2)
    assert result["images"] == 2
    assert "first 2 of 3 images" in caplog.text


def test_heatmaps_denormalise_with_the_benchmarks_mean_and_std(root, tmp_path):
    """A benchmark built with another normalisation gives the same heat-map panels when the sink
    de-normalises with that normalisation (data.mean/std reach both)."""
    model = PixelModel().eval()
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    plain = build_benchmark("toy_shift", root=root, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    other = build_benchmark("toy_shift", root=root, mean=mean, std=std)
    torch.testing.assert_close(other[0]["image"], (plain[0]["image"] - 0.5) / 0.25)

    def shown_image(mean, std, folder):
        metric = MetricSink("learned")
        sink = HeatmapSink(
            folder, count=1, score="learned", label="learned", benchmark="toy_shift", mean=mean, std=std,
            references=[("toy_shift", metric)],
        )  # fmt: skip
        _stream(model, other, [metric, sink])
        ((name, fig),) = sink.figures
        tile = next(ax for ax in fig.axes if ax.get_title() == "image")
        return name, np.asarray(tile.get_images()[0].get_array()).astype(int)

    name, right = shown_image(mean, std, tmp_path / "maps")
    first = other[0]
    assert name == first["name"]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [f"{first['name']}_heatmap.png"]
    rgb = np.asarray(Image.open(other.samples[0][1]).convert("RGB")).astype(int)
    assert right.shape == rgb.shape and np.abs(right - rgb).max() <= 1
    _, wrong = shown_image((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    assert np.abs(wrong - rgb).mean() > 10


def test_export_covers_unlabelled_frames_that_metrics_skip(root, tmp_path):
    """SMIYC export of every frame; the unlabelled test frame is exported but not scored."""
    model = PixelModel().eval()
    full = build_benchmark("RoadAnomaly21", root=root, include_unlabelled=True)
    labelled = build_benchmark("RoadAnomaly21", root=root)
    expected = _evaluate(model, labelled, inference=CPU)
    metric = MetricSink("learned")
    with SMIYCExporter(tmp_path, method="m", track="AnomalyTrack") as exporter:
        sinks = [
            metric,
            ExportSink(exporter, "learned"),
            CurveSink(tmp_path / "curves.png", {"learned": metric}, title="x"),
        ]
        _stream(model, full, sinks)
    result = benchmark_result(metric)
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
    metric = MetricSink("msp")
    with FishyscapesExporter(tmp_path) as exporter:
        _stream(model, dataset, [metric, ExportSink(exporter, "msp")], scores=["msp"])
    result = benchmark_result(metric)
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


def test_only_unlabelled_frames_give_counts_without_metrics(tmp_path):
    write_all_flat_benchmarks(tmp_path)
    for label in (tmp_path / "dataset_ObstacleTrack" / "labels_masks").iterdir():
        label.unlink()
    dataset = build_benchmark("RoadObstacle21", root=tmp_path, include_unlabelled=True)
    metric = MetricSink("learned")
    _stream(
        PixelModel().eval(), dataset, [metric, CurveSink(tmp_path / "curves.png", {"l": metric}, title="x")]
    )
    result = benchmark_result(metric)
    assert result == {"protocol": "published", "images": 0, "unlabelled": 3}
    assert not (tmp_path / "curves.png").exists()
    assert "| RoadObstacle21 | - | - | - | 0 (+3 unlabelled) |" in results_table({"RoadObstacle21": result})


@pytest.mark.parametrize("protocol", ["published", "smiyc"])
def test_benchmark_without_anomaly_is_not_applicable_with_fpr_at_threshold(root, protocol, tmp_path):
    """A covariate-only set: no AUROC/AP/FPR95 but the reason, its mIoU, and the false-positive rate
    at the threshold that finds 95% of another benchmark's anomalies."""
    model = PixelModel().eval()
    shift = MetricSink("learned", protocol)
    _stream(model, build_benchmark("toy_shift", root=root), [shift])
    threshold = shift.evaluation.threshold_at_tpr()
    covariate = build_benchmark("toy_covariate", root=root)
    metric, semantic = MetricSink("learned", protocol, per_image=True), SemanticSink()
    _stream(model, covariate, [metric, semantic, CurveSink(tmp_path / "c.png", {"l": metric}, title="x")])
    result = benchmark_result(metric, semantic, threshold=threshold)
    scores, labels, cm = _reference(model, covariate, "learned")
    s_shift, l_shift, _ = _reference(model, build_benchmark("toy_shift", root=root), "learned")
    assert threshold == threshold_at_tpr(s_shift, l_shift)
    assert result["FPR_at_threshold"] == fpr_at_threshold(scores, labels, threshold)
    assert 0.0 < result["FPR_at_threshold"] < 1.0
    assert "no anomaly pixel (label 1)" in result["not_applicable"]
    assert not {"AUROC", "AP", "FPR95"} & set(result)
    assert result["mIoU"] == cm.compute()["mIoU"] and result["images"] == 2
    assert result["per_image"] == {"n_images": 0, "n_skipped": 2}
    assert not (tmp_path / "c.png").exists()
    table = results_table({"toy_covariate": result})
    assert "| toy_covariate | n/a | n/a | n/a |" in table and "not applicable: no anomaly pixel" in table


def _entry(ap, **prov):
    return {"AUROC": 0.9, "AP": ap, "FPR95": 0.25, "images": 2, "provenance": provenance(**prov)}


def test_results_file_keeps_each_benchmark_with_its_provenance(tmp_path):
    """Two single-benchmark runs under one folder are both kept; a rerun replaces only its benchmark."""
    write_results(
        tmp_path, {"RoadAnomaly": _entry(0.5, weights="a.pth", score="learned", protocol="published")}
    )
    write_results(tmp_path, {"FS_Static": _entry(0.25, weights="b.pth", score="msp", protocol="exact")})
    data = read_results(tmp_path)
    assert list(data) == ["RoadAnomaly", "FS_Static"]
    assert (data["RoadAnomaly"]["AP"], data["FS_Static"]["AP"]) == (0.5, 0.25)
    prov = data["FS_Static"]["provenance"]
    assert (prov["weights"], prov["score"], prov["protocol"]) == ("b.pth", "msp", "exact")
    assert prov["fpr_rule"] == get_protocol("exact").fpr_rule and prov["date"].endswith("+00:00")
    assert "commit" in prov and data["RoadAnomaly"]["provenance"]["weights"] == "a.pth"
    write_results(
        tmp_path, {"RoadAnomaly": _entry(0.75, weights="c.pth", score="learned", protocol="published")}
    )
    data = read_results(tmp_path)
    assert (data["RoadAnomaly"]["AP"], data["FS_Static"]["AP"]) == (0.75, 0.25)
    md = (tmp_path / "results.md").read_text()
    assert "Weights: `c.pth`" in md and "Weights: `b.pth`" in md and "Weights: `a.pth`" not in md
    assert (
        "| RoadAnomaly | 90.00 | 75.00 | 25.00 | 2 |" in md
        and "| FS_Static | 90.00 | 25.00 | 25.00 | 2 |" in md
    )
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_results_reader_names_bad_entries(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"benchmarks": {"RoadAnomaly": 0.5}}))
    with pytest.raises(UserError, match=f"{path}: benchmark 'RoadAnomaly' holds 0.5; expected a mapping"):
        read_results(path)
    with pytest.raises(UserError, match=f"{path}: benchmark 'RoadAnomaly' holds 0.5"):
        write_results(tmp_path, {"FS_Static": _entry(0.25, weights="b.pth", score="msp", protocol="exact")})


def test_results_table_columns():
    results = {
        "RoadAnomaly": {"AUROC": 0.9, "AP": 0.5, "FPR95": 0.25, "images": 2},
        "MUAD": {"AUROC": 0.8, "AP": 0.125, "FPR95": 0.5, "mIoU": 0.3, "mAcc": 0.75, "images": 3},
    }
    table = results_table(results)
    assert table.splitlines()[0] == "| benchmark | AUROC | AP | FPR95 | mIoU | mAcc | images |"
    assert "| RoadAnomaly | 90.00 | 50.00 | 25.00 | - | - | 2 |" in table
    assert "| MUAD | 80.00 | 12.50 | 50.00 | 30.00 | 75.00 | 3 |" in table


def test_header_names_every_choice():
    prov = provenance(
        protocol="smiyc",
        score="rba",
        postprocess="gaussian_blur",
        per_image=True,
        weights="w.pth",
        model="m2f",
        export={"format": "smiyc", "dir": "out"},
    )
    assert results_header(prov).splitlines() == [
        "Weights: `w.pth` (model `m2f`)  ",
        "Score: `rba`, postprocess: `gaussian_blur`  ",
        f"Protocol: `smiyc` — {get_protocol('smiyc').description}  ",
        "FPR95 rule: FPR95 at the first point of the binned SMIYC curve with TPR >= 0.95  ",
        "Per-image means: yes: `img` columns are means over the images that have both classes  ",
        "Exported: `smiyc` files in `out`",
    ]


def test_unknown_protocol():
    with pytest.raises(
        UserError, match="unknown eval.protocol 'fishy'.*Known protocols: exact, published, smiyc"
    ):
        get_protocol("fishy")


def test_results_file_of_the_earlier_run_wide_layout_is_merged(tmp_path):
    """A results.json written before entries carried their provenance: its run-wide fields become
    each of its entries' provenance, and a new benchmark is added beside them."""
    legacy = {
        "protocol": "published",
        "fpr_rule": "old rule",
        "score": "learned",
        "weights": "old.pth",
        "benchmarks": {
            "RoadAnomaly": {"protocol": "published", "AUROC": 0.9, "AP": 0.5, "FPR95": 0.2, "images": 60}
        },
    }
    (tmp_path / "results.json").write_text(json.dumps(legacy))
    write_results(tmp_path, {"FS_Static": _entry(0.25, weights="new.pth", score="msp", protocol="exact")})
    data = read_results(tmp_path)
    assert list(data) == ["RoadAnomaly", "FS_Static"]
    old = data["RoadAnomaly"]["provenance"]
    assert (old["weights"], old["score"], old["protocol"], old["fpr_rule"]) == (
        "old.pth",
        "learned",
        "published",
        "old rule",
    )
    assert data["RoadAnomaly"]["AP"] == 0.5 and data["FS_Static"]["provenance"]["weights"] == "new.pth"
