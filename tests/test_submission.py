"""Benchmark-server exports: SMIYC HDF5 files read back (layout, float16, gzip 9, score order kept
for realistic DeepLab and Mask2Former score ranges) and Fishyscapes ``.npy`` files."""

import sys

import h5py
import numpy as np
import pytest
import torch

from lib.labels import NUM_CLASSES, OOD_IN, OOD_OUT
from lib.metrics import ood_metrics
from lib.submission import (
    FLOAT16_ONE_CODE,
    FishyscapesExporter,
    SMIYCExporter,
    UnitScoreMap,
    build_exporter,
    score_range,
)

# Realistic ranges of the two learned scores: DeepLab OOD-head energy and Mask2Former 1 - confidence.
RANGES = {"deeplab": ("deeplab_wrn38", (-30.0, 0.0)), "mask2former": ("mask2anomaly_r50", (-20.0, 1.0))}


def _realistic_scores(low: float, high: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inliers concentrated in the lower part of the range, anomalies in the upper part, a few
    pixels beyond both ends; float32 like model outputs, with 0/1 labels."""
    rng = np.random.default_rng(seed)
    span = high - low
    n_out = n // 10
    inl = rng.normal(low + 0.3 * span, 0.12 * span, n - n_out)
    out = rng.normal(low + 0.75 * span, 0.12 * span, n_out)
    scores = np.concatenate([inl, out]).astype(np.float32)
    labels = np.concatenate([np.full(n - n_out, OOD_IN), np.full(n_out, OOD_OUT)]).astype(np.uint8)
    return scores, labels


@pytest.mark.parametrize("family", sorted(RANGES))
def test_order_kept_for_realistic_scores(family):
    model_name, rng_ = RANGES[family]
    assert score_range(model_name, "learned") == rng_
    mapping = UnitScoreMap(*rng_)
    scores, labels = _realistic_scores(*rng_, n=400_000, seed=3)
    assert scores.min() < rng_[0] and scores.max() > rng_[1]  # the tails are exercised
    mapped = mapping(scores)
    assert mapped.dtype == np.float16 and float(mapped.min()) >= 0.0 and float(mapped.max()) <= 1.0
    # Never inverted: sorted by raw score, the stored values never decrease.
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(mapped[order].astype(np.float32)) >= 0)
    # Inside the range, scores one step apart are always told apart.
    values = np.unique(scores[(scores >= rng_[0]) & (scores <= rng_[1])].astype(np.float64))
    apart = np.diff(values) >= 1.001 * mapping.step
    codes = mapping(values).view(np.uint16).astype(np.int64)
    assert np.all(np.diff(codes)[apart] >= 1)
    assert mapping.step < 0.0025
    # The metrics on the stored values are those on the raw scores.
    raw, stored = ood_metrics(scores, labels), ood_metrics(mapped.astype(np.float32), labels)
    for key in ("AUROC", "AP", "FPR95"):
        assert stored[key] == pytest.approx(raw[key], abs=2e-4)


def test_code_space_endpoints_and_far_tails():
    mapping = UnitScoreMap(-30.0, 0.0)
    values = mapping(np.array([-1e30, -1e6, -30.0, -15.0, 0.0, 1e6, 1e30]))
    codes = values.view(np.uint16)
    assert codes[2] == FLOAT16_ONE_CODE // 16 and codes[4] == FLOAT16_ONE_CODE - FLOAT16_ONE_CODE // 16
    assert codes[3] == FLOAT16_ONE_CODE // 2  # mid-range is mid code space, not float16 0.5
    assert np.all(np.diff(codes.astype(np.int64)) >= 0) and codes[0] == 0 and codes[-1] == FLOAT16_ONE_CODE
    assert values[-1] == np.float16(1.0)
    # Continuous at the range ends: one step outside is one code outside.
    near = mapping(np.array([-30.0 - mapping.step, 0.0 + mapping.step])).view(np.uint16).astype(np.int64)
    assert near.tolist() == [FLOAT16_ONE_CODE // 16 - 1, FLOAT16_ONE_CODE - FLOAT16_ONE_CODE // 16 + 1]


def test_smiyc_files_read_back(tmp_path):
    rng = np.random.default_rng(0)
    # Shuffled scores 0.03 apart (over ten float16 steps), beyond both range ends too.
    grid = np.linspace(-32.0, 2.0, 24 * 40, dtype=np.float32)
    maps = {
        "validation0000": rng.permutation(grid).reshape(24, 40),
        "validation0001": torch.from_numpy(rng.permutation(grid).reshape(1, 24, 40)),
    }
    with SMIYCExporter(tmp_path, method="MultiShiftSeg", track="AnomalyTrack", score_range=(-30, 0)) as ex:
        paths = [ex.add(name, m) for name, m in maps.items()]
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
        np.testing.assert_array_equal(value, UnitScoreMap(-30, 0)(raw))
        flat_raw, flat_val = raw.ravel(), value.ravel().astype(np.float32)
        order = np.argsort(flat_raw)
        assert np.all(np.diff(flat_val[order]) > 0)


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
    with pytest.raises(ValueError, match="finite low < high"):
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


def test_build_exporter_and_score_ranges(tmp_path):
    ex = build_exporter("smiyc", tmp_path, benchmark="RoadObstacle21", method="M", score_range=(-20, 1))
    assert isinstance(ex, SMIYCExporter) and ex.track == "ObstacleTrack"
    fs = build_exporter("fishyscapes", tmp_path, benchmark="FS_LostAndFound", method="M", score_range=(0, 1))
    assert isinstance(fs, FishyscapesExporter) and fs.folder == tmp_path / "FS_LostAndFound"
    with pytest.raises(ValueError, match="'FS_Static' is not a SMIYC track"):
        build_exporter("smiyc", tmp_path, benchmark="FS_Static", method="M", score_range=(0, 1))
    with pytest.raises(ValueError, match="unknown export format 'hdf5'"):
        build_exporter("hdf5", tmp_path, benchmark="RoadAnomaly21", method="M", score_range=(0, 1))
    assert score_range("mask2anomaly_tiny", "rba") == (-float(NUM_CLASSES), 0.0)
    with pytest.raises(KeyError, match="no score range known for model 'segformer'"):
        score_range("segformer", "learned")
    with pytest.raises(KeyError, match="score 'rba' on deeplab models"):
        score_range("deeplab_wrn_light", "rba")
