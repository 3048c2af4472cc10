"""Benchmark-server exports: SMIYC HDF5 files read back (layout, float16, gzip 9, the score mapped
affinely onto [0, 1], read by both official pixel metrics as the unexported scores) and
Fishyscapes ``.npy`` files."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.distributed as dist

from lib.errors import UnknownNameError, UserError
from lib.labels import NUM_CLASSES, OOD_IN, OOD_OUT, OOD_VOID
from lib.smiyc import PIXEL_METRICS, frame_bins, pixel_metrics
from lib.submission import (
    AffineUnitMap,
    FishyscapesExporter,
    ScoreRangeError,
    SMIYCExporter,
    bounded_score_range,
    build_exporter,
)
from tests.utils import smiyc_metrics

FIXTURES = Path(__file__).parent / "fixtures"


def _read_back(ex: SMIYCExporter, names: list[str]) -> list[np.ndarray]:
    out = []
    for name in names:
        with h5py.File(ex.path(name), "r") as f:
            out.append(f["value"][()])
    return out


def test_affine_map_values_and_range_check():
    mapping = AffineUnitMap(-30.0, 0.0)
    values = mapping(np.array([-30.0, -22.5, -15.0, -7.5, 0.0]))
    assert values.dtype == np.float16 and values.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # float16 rounding is the only loss: 1/3 of the range is stored as the nearest float16.
    assert mapping(np.array([-20.0]))[0] == np.float16(1 / 3)
    with pytest.raises(
        ScoreRangeError, match=r"frame_7: anomaly scores span \[-31.0, 0.0\], outside .* \[-30.0, 0.0\]"
    ):
        mapping(np.array([-31.0, 0.0]), "frame_7")
    assert issubclass(ScoreRangeError, UserError)
    assert AffineUnitMap(2.0, 2.0)(np.full((2, 2), 2.0)).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="finite low <= high"):
        AffineUnitMap(1.0, 0.0)
    assert bounded_score_range("msp") == (0.0, 1.0) and bounded_score_range("entropy") == (
        0,
        np.log(NUM_CLASSES),
    )
    assert [bounded_score_range(s) for s in ("energy", "learned", "rba")] == [None, None, None]


def test_smiyc_files_read_back_with_a_declared_range(tmp_path):
    rng = np.random.default_rng(0)
    grid = np.linspace(-30.0, 0.0, 24 * 40, dtype=np.float32)
    maps = {
        "validation0000": rng.permutation(grid).reshape(24, 40),
        "validation0001": torch.from_numpy(rng.permutation(grid).reshape(1, 24, 40)),
    }
    with SMIYCExporter(tmp_path, method="MultiShiftSeg", track="AnomalyTrack", score_range=(-30, 0)) as ex:
        paths = [ex.add(name, m) for name, m in maps.items()]
        assert all(p.is_file() for p in paths)  # written at once: the range is known
    assert ex.count == 2
    folder = tmp_path / "anomaly_p" / "MultiShiftSeg" / "AnomalyTrack-all"
    assert paths == [folder / "validation0000.hdf5", folder / "validation0001.hdf5"]
    assert sorted(p.name for p in folder.iterdir()) == ["validation0000.hdf5", "validation0001.hdf5"]
    for path, raw in zip(paths, maps.values()):
        raw = np.asarray(raw).reshape(24, 40)
        with h5py.File(path, "r") as f:
            assert list(f.keys()) == ["value"]
            ds = f["value"]
            assert ds.shape == (24, 40) and ds.dtype == np.float16
            assert ds.compression == "gzip" and ds.compression_opts == 9
            value = ds[()]
        np.testing.assert_array_equal(value, ((raw.astype(np.float64) + 30) / 30).astype(np.float16))
    with pytest.raises(ScoreRangeError, match="late: anomaly scores span"):
        SMIYCExporter(tmp_path, method="m", track="AnomalyTrack", score_range=(-30, 0)).add(
            "late", np.array([[0.5]])
        )


def test_smiyc_range_derived_from_all_frames(tmp_path):
    frames = {"a": np.array([[-3.0, 1.0]]), "b": np.array([[5.0, -1.0]])}
    with SMIYCExporter(tmp_path, method="m", track="ObstacleTrack") as ex:
        for name, frame in frames.items():
            ex.add(name, frame)
        assert not ex.path("a").exists() and len(list(ex.staging.iterdir())) == 2
    assert ex.mapping == AffineUnitMap(-3.0, 5.0) and ex.count == 2
    assert [v.tolist() for v in _read_back(ex, ["a", "b"])] == [[[0.0, 0.5]], [[1.0, 0.25]]]
    assert sorted(p.name for p in ex.folder.iterdir()) == ["a.hdf5", "b.hdf5"]  # staging removed
    # An error inside the export: the staged maps go, no file is written.
    with pytest.raises(RuntimeError, match="model failed"):
        with SMIYCExporter(tmp_path / "x", method="m", track="ObstacleTrack") as ex:
            ex.add("a", frames["a"])
            raise RuntimeError("model failed")
    assert not ex.folder.exists() or not any(ex.folder.iterdir())


def test_derived_range_is_shared_by_all_processes(tmp_path, monkeypatch):
    """Under torch.distributed each process exports its share; all map with the overall range.
    Here a second process (simulated) saw scores from -10 to 2."""

    def gather(out, own):
        out[:] = [own, (-10.0, 2.0)]

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", gather)
    with SMIYCExporter(tmp_path, method="m", track="AnomalyTrack") as ex:
        ex.add("a", np.array([[-4.0, 0.0]]))
    assert ex.mapping == AffineUnitMap(-10.0, 2.0)
    assert _read_back(ex, ["a"])[0].tolist() == [[0.5, np.float16(10 / 12)]]
    with SMIYCExporter(tmp_path / "idle", method="m", track="AnomalyTrack") as idle:
        pass  # a process without frames still takes part in the agreement
    assert idle.mapping == AffineUnitMap(-10.0, 2.0) and idle.count == 0


def test_export_of_the_official_fixture_reproduces_the_official_metrics(tmp_path):
    """Raw scores = 64 * official scores - 48: the derived range [-48, 16] maps them back onto the
    official k/1024 values exactly, so the files read back give every official number."""
    with np.load(FIXTURES / "smiyc_official.npz") as data:
        scores, labels = data["scores_x1024"].astype(np.float32) / 1024, data["labels"]
    official = json.loads((FIXTURES / "smiyc_official.json").read_text())
    names = [f"frame{i}" for i in range(len(scores))]
    with SMIYCExporter(tmp_path, method="m", track="AnomalyTrack") as ex:
        for name, s in zip(names, scores):
            ex.add(name, 64 * s - 48)
    back = _read_back(ex, names)
    assert ex.mapping == AffineUnitMap(-48.0, 16.0)
    assert all(np.array_equal(b, s.astype(np.float16)) for b, s in zip(back, scores))
    for track in ("AnomalyTrack", "ObstacleTrack"):
        out, expected = smiyc_metrics(back, list(labels), track), official[f"SegEval-{track}"]
        assert abs(out["sIoU"] - expected["sIoU_gt"]) <= 1e-12
        assert abs(out["F1_mean"] - expected["f1_mean"]) <= 1e-12
    assert abs(out["AP"] - official["PixBinaryClass"]["area_PRC"]) <= 1e-12
    assert abs(out["FPR95"] - official["PixBinaryClass"]["tpr95_fpr"]) <= 1e-12


def _model_like_frames(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Energy-like float32 maps (inliers around -20, anomalies around -8, unbounded) with a void
    band and one anomaly box per frame."""
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(n):
        lab = np.full((120, 160), OOD_IN, np.uint8)
        lab[40:80, 50:110] = OOD_OUT
        lab[:10] = OOD_VOID
        s = np.where(lab == OOD_OUT, rng.normal(-8, 4, lab.shape), rng.normal(-20, 5, lab.shape))
        scores.append(s.astype(np.float32))
        labels.append(lab)
    return scores, labels


@pytest.mark.parametrize("metric", PIXEL_METRICS)
def test_exported_scores_read_by_both_official_pixel_metrics(tmp_path, metric):
    """The files hold (s - min) / (max - min) as float16. Read back under either official pixel
    metric, they give the numbers of the unexported map (float64), within float16 rounding: each
    value moves by at most half a float16 step (2^-12 in the upper half of [0, 1]) and, under
    PixBinaryClass-uniThr, the toolkit's float16 binning puts it up to two of its 4096 bins higher;
    here that changes AP, AUROC, FPR95 and best F1 by less than 1e-3."""
    scores, labels = _model_like_frames(4, seed=0)
    names = [f"f{i}" for i in range(len(scores))]
    with SMIYCExporter(tmp_path, method="m", track="AnomalyTrack") as ex:
        for name, s in zip(names, scores):
            ex.add(name, s)
    low, high = min(float(s.min()) for s in scores), max(float(s.max()) for s in scores)
    assert ex.mapping == AffineUnitMap(low, high)
    unexported = [(s.astype(np.float64) - low) / (high - low) for s in scores]
    back = _read_back(ex, names)
    assert all(b.dtype == np.float16 and b.min() >= 0 and b.max() <= 1 for b in back)
    ours = pixel_metrics([frame_bins(b, lab, metric) for b, lab in zip(back, labels)])
    reference = pixel_metrics([frame_bins(u, lab, metric) for u, lab in zip(unexported, labels)])
    for key in ("AP", "AUROC", "FPR95", "best_f1"):
        assert abs(ours[key] - reference[key]) < 1e-3, key
    if metric == "PixBinaryClass":  # rank-based: the raw scores give the same numbers
        raw = pixel_metrics([frame_bins(s, lab, metric) for s, lab in zip(scores, labels)])
        for key in ("AP", "AUROC", "FPR95"):
            assert abs(ours[key] - raw[key]) < 1e-3, key


def test_smiyc_errors(tmp_path, monkeypatch):
    ex = SMIYCExporter(tmp_path, method="m", track="ObstacleTrack", score_range=(-20, 1))
    assert ex.folder == tmp_path / "anomaly_p" / "m" / "ObstacleTrack-all"
    ex.add("a", np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="'a' was already exported"):
        ex.add("a", np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="2 NaN/inf values"):
        ex.add("b", np.array([[np.nan, np.inf], [0.0, 1.0]], np.float32))
    with pytest.raises(ValueError, match=r"one \[H, W\] map, got shape \(2, 8, 8\)"):
        ex.add("c", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="plain file stem"):
        ex.add("../x", np.zeros((8, 8), np.float32))
    assert ex.close() == 1
    with pytest.raises(RuntimeError, match="closed"):
        ex.add("d", np.zeros((8, 8), np.float32))
    assert not list((tmp_path / "anomaly_p" / "m" / "ObstacleTrack-all").glob(".*"))  # no temporaries left
    with pytest.raises(ValueError, match="unknown SMIYC track 'Anomaly'"):
        SMIYCExporter(tmp_path, method="m", track="Anomaly", score_range=(0, 1))
    with pytest.raises(ValueError, match="finite low <= high"):
        SMIYCExporter(tmp_path, method="m", track="AnomalyTrack", score_range=(1, 0))
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"needs h5py: pip install 'multishiftseg\[smiyc\]'"):
        SMIYCExporter(tmp_path, method="m", track="AnomalyTrack", score_range=(0, 1))


def test_fishyscapes_files(tmp_path):
    score = np.linspace(-3, 3, 30, dtype=np.float64).reshape(5, 6)
    seg = torch.arange(30).reshape(5, 6) % NUM_CLASSES
    with FishyscapesExporter(tmp_path) as ex:
        ex.add(0, score, seg)
        ex.add(1, torch.from_numpy(score).float())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0_anomaly.npy",
        "0_segmentation.npy",
        "1_anomaly.npy",
    ]
    anomaly = np.load(tmp_path / "0_anomaly.npy")
    assert anomaly.dtype == np.float32 and anomaly.shape == (5, 6)
    np.testing.assert_array_equal(anomaly, score.astype(np.float32))
    segmentation = np.load(tmp_path / "0_segmentation.npy")
    assert segmentation.dtype == np.uint8
    np.testing.assert_array_equal(segmentation, seg.numpy())
    with pytest.raises(ValueError, match=r"values 0\.\.19; expected trainIds 0\.\.18"):
        FishyscapesExporter(tmp_path / "x").add(2, score, np.arange(30).reshape(5, 6) % 20)
    with pytest.raises(ValueError, match="integer trainIds"):
        FishyscapesExporter(tmp_path / "x").add(2, score, score)
    with pytest.raises(ValueError, match=r"segmentation \(4, 6\) and anomaly_score \(5, 6\) differ"):
        FishyscapesExporter(tmp_path / "x").add(2, score, np.zeros((4, 6), np.uint8))


def test_build_exporter(tmp_path):
    ex = build_exporter("smiyc", tmp_path, benchmark="RoadObstacle21", method="M", score_range=(-20, 1))
    assert isinstance(ex, SMIYCExporter) and ex.track == "ObstacleTrack"
    assert ex.mapping == AffineUnitMap(-20, 1)
    assert build_exporter("smiyc", tmp_path, benchmark="RoadAnomaly21", method="M").mapping is None
    fs = build_exporter("fishyscapes", tmp_path, benchmark="FS_LostAndFound", method="M", score_range=(0, 1))
    assert isinstance(fs, FishyscapesExporter) and fs.folder == tmp_path / "FS_LostAndFound"
    with pytest.raises(ValueError, match="'FS_Static' is not a SMIYC track"):
        build_exporter("smiyc", tmp_path, benchmark="FS_Static", method="M", score_range=(0, 1))
    with pytest.raises(UnknownNameError, match=r"unknown eval.export 'hdf5'\. Known export formats"):
        build_exporter("hdf5", tmp_path, benchmark="RoadAnomaly21", method="M", score_range=(0, 1))
    with pytest.raises(ValueError, match="needs a method name"):
        build_exporter("smiyc", tmp_path, benchmark="RoadAnomaly21")
