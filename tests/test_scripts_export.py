"""test_deeplab.py / test_m2f.py end to end with ``--export`` and ``eval.protocol=smiyc`` on tiny SMIYC and
Fishyscapes fixture trees (untrained light DeepLab and tiny Mask2Anomaly checkpoints): HDF5 files of
every frame, labelled or not, read back; component metrics; curves; provenance in results.json and
results.md; ``lib.report`` reading the result."""

import h5py
import numpy as np
import pytest
import torch

import test_deeplab
import test_m2f
from lib import report
from lib.data.benchmarks import build_benchmark
from lib.models import build_model
from lib.results import read_results
from lib.scores import get_score
from lib.submission import AffineUnitMap
from tests.data_fixtures import write_flat_benchmark

SIZE = (32, 48)
"""Big enough that a ground-truth anomaly band (32 x 16 px) survives AnomalyTrack's 100 px filter."""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    smiyc = {"size": SIZE, "n": 2}
    stems = {
        "RoadAnomaly21": write_flat_benchmark(
            root, "dataset_AnomalyTrack", "images", "labels_masks", ".jpg", "_labels_semantic.png",
            [0, 1, 255], unlabelled=2, **smiyc,
        ),
        "RoadObstacle21": write_flat_benchmark(
            root, "dataset_ObstacleTrack", "images", "labels_masks", ".webp", "_labels_semantic.png",
            [255, 0, 1], unlabelled=1, **smiyc,
        ),
        "FS_LostAndFound": write_flat_benchmark(
            root, "fs_lost_and_found", "original", "labels", ".png", ".png", [0, 1, 255], size=(24, 40)
        ),
    }  # fmt: skip
    weights = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(build_model("deeplab_wrn_light").state_dict(), weights / "deeplab.pth")
    torch.save(build_model("mask2anomaly_tiny").state_dict(), weights / "m2f.pth")
    out = tmp_path_factory.mktemp("outputs")
    common = [f"data.root={root}", f"output_root={out}", "data.num_workers=0"]
    return {"root": root, "out": out, "weights": weights, "stems": stems, "common": common}


def _run(script, argv):
    return script.main(script.get_args_parser().parse_intermixed_args(argv))


def _scores(model_name, weights, score, dataset, index):
    model = build_model(model_name)
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        anomaly, logits = model.eval()(dataset[index]["image"][None])
    return get_score(score)(logits, anomaly)[0].numpy()


def test_deeplab_smiyc_export_and_protocol(setup, tmp_path, capsys):
    export = tmp_path / "submission"
    argv = [
        "--cfg",
        "exp/DeepLab.yaml",
        "--id",
        "smiyc_run",
        "--weight_path",
        str(setup["weights"] / "deeplab.pth"),
        "--no_progress",
        "--export",
        "smiyc",
        str(export),
        "model.name=deeplab_wrn_light",
        "eval.protocol=smiyc",
        "eval.datasets=[RoadAnomaly21,RoadObstacle21,FS_LostAndFound]",
        *setup["common"],
    ]
    results = _run(test_deeplab, argv)
    stems = setup["stems"]
    ra = results["RoadAnomaly21"]
    assert (ra["images"], ra["unlabelled"], ra["track"]) == (2, 2, "AnomalyTrack")
    assert (results["RoadObstacle21"]["unlabelled"], results["RoadObstacle21"]["track"]) == (
        1,
        "ObstacleTrack",
    )
    assert results["FS_LostAndFound"]["images"] == 2 and "unlabelled" not in results["FS_LostAndFound"]
    for r in results.values():
        assert {"AP", "FPR95", "AUROC", "best_f1", "best_f1_threshold", "sIoU", "PPV", "F1_mean"} <= set(r)
        assert r["protocol"] == "smiyc" and 0.0 <= r["sIoU"] <= 1.0 and 0.0 <= r["F1_mean"] <= 1.0

    # Every frame of both tracks, labelled or not; FS_LostAndFound is no SMIYC track and is not exported.
    method = export / "anomaly_p" / "smiyc_run"
    assert sorted(p.name for p in method.iterdir()) == ["AnomalyTrack-all", "ObstacleTrack-all"]
    anomaly_files = sorted(p.stem for p in (method / "AnomalyTrack-all").iterdir())
    assert anomaly_files == [*stems["RoadAnomaly21"], "dataset_AnomalyTrack_002", "dataset_AnomalyTrack_003"]
    assert len(list((method / "ObstacleTrack-all").iterdir())) == 3
    # The learned energy has no bound: the files hold it mapped from the range of all exported frames.
    dataset = build_benchmark("RoadAnomaly21", root=setup["root"], include_unlabelled=True)
    raws = [
        _scores("deeplab_wrn_light", setup["weights"] / "deeplab.pth", "learned", dataset, i)
        for i in range(4)
    ]
    with h5py.File(method / "AnomalyTrack-all" / "dataset_AnomalyTrack_003.hdf5", "r") as f:
        value = f["value"][()]
    assert value.shape == SIZE and value.dtype == np.float16
    mapping = AffineUnitMap(min(float(r.min()) for r in raws), max(float(r.max()) for r in raws))
    np.testing.assert_array_equal(value, mapping(raws[3]))
    assert not (method / "AnomalyTrack-all" / ".staging").exists()

    run = setup["out"] / "smiyc_run"
    data = read_results(run)
    assert list(data) == list(results)
    for name, entry in data.items():
        prov = entry["provenance"]
        assert (prov["protocol"], prov["score"], prov["postprocess"], prov["per_image"]) == (
            "smiyc",
            "learned",
            "none",
            False,
        )
        assert prov["model"] == "deeplab_wrn_light" and "binned SMIYC curve" in prov["fpr_rule"]
        exported = {"format": "smiyc", "dir": str(export)} if name != "FS_LostAndFound" else None
        assert prov["export"] == exported
    for name in results:
        assert (run / f"curves_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (run / "results.md").read_text()
    assert "Protocol: `smiyc`" in md and "FPR95 rule:" in md and "Per-image means: no" in md
    assert "| RoadAnomaly21 |" in md and "2 (+2 unlabelled)" in md
    printed = capsys.readouterr().out
    assert "Score: `learned`, postprocess: `none`" in printed and "| sIoU | PPV | F1_mean |" in printed

    report.main(report.get_args_parser().parse_args([str(run)]))
    merged = capsys.readouterr().out
    row = next(line for line in merged.splitlines() if line.startswith("| RoadAnomaly21 |"))
    assert "| smiyc_run | learned | smiyc |" in row and row.endswith("| 2 |")
    assert (
        "| benchmark | run | score | protocol | AUROC | AP | FPR95 | best_f1 | sIoU | PPV | F1_mean" in merged
    )


def test_deeplab_fishyscapes_export(setup, tmp_path):
    export = tmp_path / "fishy"
    argv = [
        "--cfg",
        "exp/DeepLab.yaml",
        "--id",
        "fs_run",
        "--weight_path",
        str(setup["weights"] / "deeplab.pth"),
        "--test_dataset",
        "FS_LostAndFound",
        "--no_progress",
        "model.name=deeplab_wrn_light",
        "eval.score=msp",
        *setup["common"],
        "--export",
        "fishyscapes",
        str(export),
    ]
    _run(test_deeplab, argv)
    folder = export / "FS_LostAndFound"
    assert sorted(p.name for p in folder.iterdir()) == [
        "0_anomaly.npy", "0_segmentation.npy", "1_anomaly.npy", "1_segmentation.npy"
    ]  # fmt: skip
    dataset = build_benchmark("FS_LostAndFound", root=setup["root"])
    expected = _scores("deeplab_wrn_light", setup["weights"] / "deeplab.pth", "msp", dataset, 1)
    np.testing.assert_allclose(np.load(folder / "1_anomaly.npy"), expected, rtol=0, atol=1e-6)
    seg = np.load(folder / "1_segmentation.npy")
    assert seg.dtype == np.uint8 and seg.shape == (24, 40)


def test_m2f_rba_smiyc_export(setup, tmp_path):
    export = tmp_path / "m2f"
    argv = [
        "--cfg",
        "exp/toy_m2f.yaml",
        "--id",
        "m2f_run",
        "--weight_path",
        str(setup["weights"] / "m2f.pth"),
        "--test_dataset",
        "RoadObstacle21",
        "--no_progress",
        "--export",
        "smiyc",
        str(export),
        "eval.score=rba",
        *setup["common"],
    ]
    results = _run(test_m2f, argv)
    assert (results["RoadObstacle21"]["images"], results["RoadObstacle21"]["unlabelled"]) == (2, 1)
    assert read_results(setup["out"] / "m2f_run")["RoadObstacle21"]["provenance"]["score"] == "rba"
    dataset = build_benchmark("RoadObstacle21", root=setup["root"], include_unlabelled=True)
    raws = [_scores("mask2anomaly_tiny", setup["weights"] / "m2f.pth", "rba", dataset, i) for i in range(3)]
    with h5py.File(
        export / "anomaly_p" / "m2f_run" / "ObstacleTrack-all" / "dataset_ObstacleTrack_002.hdf5"
    ) as f:
        value = f["value"][()]
    mapping = AffineUnitMap(min(float(r.min()) for r in raws), max(float(r.max()) for r in raws))
    np.testing.assert_array_equal(value, mapping(raws[2]))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--export", "hdf5", "x"], r"unknown eval.export 'hdf5'\. Known export formats: fishyscapes, smiyc"),
        (
            ["--export", "smiyc", "x", "--test_dataset", "FS_LostAndFound"],
            "none of the benchmarks.*SMIYC track",
        ),
        (["eval.export=smiyc", "--test_dataset", "RoadAnomaly21"], "needs eval.export_dir"),
    ],
)
def test_export_settings_are_checked_before_testing(setup, extra, message):
    argv = [
        "--cfg",
        "exp/DeepLab.yaml",
        "--id",
        "bad",
        "--weight_path",
        str(setup["weights"] / "deeplab.pth"),
        "--no_progress",
        "model.name=deeplab_wrn_light",
        *setup["common"],
        *extra,
    ]
    with pytest.raises((ValueError, KeyError), match=message):
        _run(test_deeplab, argv)
    assert not (setup["out"] / "bad" / "results.json").exists()
