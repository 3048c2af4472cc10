"""Benchmarks on fixture trees in their released layouts: counts, label conversion, dtypes, errors."""

import numpy as np
import pytest
import torch

from lib.data import BENCHMARKS, build_benchmark
from lib.data.benchmarks import ACDC_POC, MUADLike
from lib.data.io import read_rgb
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomCrop
from lib.errors import UnknownNameError, UserError
from lib.labels import IGNORE, OOD_IN, OOD_OUT, OOD_VOID
from tests.data_fixtures import (
    ACDC_VALUES,
    write_acdc_poc,
    write_all_flat_benchmarks,
    write_flat_benchmark,
    write_gray,
    write_muad_like,
    write_rgb,
)


def _column_values(label):
    """The fixture labels are vertical bands: one value per band, left to right."""
    row = label[0].tolist()
    return [v for i, v in enumerate(row) if i == 0 or row[i - 1] != v]


def test_registry_names():
    assert set(BENCHMARKS.names()) == {
        "RoadAnomaly",
        "RoadAnomaly21",
        "RoadObstacle21",
        "FS_LostAndFound",
        "FS_Static",
        "ACDC_POC",
        "MUAD",
        "toy_anomaly",
        "toy_shift",
        "toy_covariate",
    }
    with pytest.raises(UnknownNameError, match=r"benchmark 'RoadAnomaly2O'\. Did you mean 'RoadAnomaly21'\?"):
        build_benchmark("RoadAnomaly2O")


def test_flat_benchmarks(tmp_path):
    written = write_all_flat_benchmarks(tmp_path)
    for name, stems in written.items():
        ds = build_benchmark(name, root=tmp_path)
        assert [s[0] for s in ds.samples] == stems, name  # unlabelled SMIYC test images are left out
        item = ds[0]
        assert set(item) == {"image", "ood_label", "name"} and item["name"] == stems[0]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 24, 40)
        assert item["ood_label"].dtype == torch.uint8 and item["ood_label"].shape == (24, 40)
        expected = [OOD_IN, OOD_OUT] if name == "RoadAnomaly" else [OOD_IN, OOD_OUT, OOD_VOID]
        assert _column_values(item["ood_label"]) == expected


@pytest.mark.parametrize("name", ["RoadAnomaly21", "RoadObstacle21"])
def test_smiyc_unlabelled_test_frames_are_listed_on_request(tmp_path, name):
    stems = write_all_flat_benchmarks(tmp_path)[name]
    ds = build_benchmark(name, root=tmp_path, include_unlabelled=True)
    unlabelled = f"{stems[0][:-3]}{len(stems):03d}"
    assert [s[0] for s in ds.samples] == [*stems, unlabelled]
    assert ds.samples[-1][2] is None
    item = ds[len(stems)]
    assert set(item) == {"image", "name"} and item["name"] == unlabelled
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 24, 40)
    # Normalised as labelled items are.
    rgb = torch.from_numpy(read_rgb(ds.samples[-1][1])).permute(2, 0, 1).float() / 255.0
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(item["image"], (rgb - mean) / std)
    assert torch.equal(ds[0]["image"], build_benchmark(name, root=tmp_path)[0]["image"])


def test_only_test_frames_and_benchmarks_without_unlabelled_images(tmp_path):
    write_all_flat_benchmarks(tmp_path)
    for label in (tmp_path / "dataset_AnomalyTrack" / "labels_masks").iterdir():
        label.unlink()
    ds = build_benchmark("RoadAnomaly21", root=tmp_path, include_unlabelled=True)
    assert len(ds) == 3 and all(lab is None for _, _, lab in ds.samples)
    with pytest.raises(FileNotFoundError, match="no image/label pairs"):
        build_benchmark("RoadAnomaly21", root=tmp_path)
    with pytest.raises(
        ValueError, match="'FS_Static' has no unlabelled images.*RoadAnomaly21, RoadObstacle21"
    ):
        build_benchmark("FS_Static", root=tmp_path, include_unlabelled=True)
    with pytest.raises(ValueError, match="'MUAD' has no unlabelled images"):
        build_benchmark("MUAD", root=tmp_path, include_unlabelled=True)


def test_webp_images_decode(tmp_path):
    write_all_flat_benchmarks(tmp_path)
    ds = build_benchmark("RoadObstacle21", root=tmp_path)
    assert ds.samples[0][1].suffix == ".webp"
    assert ds[0]["image"].abs().sum() > 0


def test_flat_benchmark_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected layout:(.|\n)*original/\{name\}.jpg"):
        build_benchmark("RoadAnomaly", root=tmp_path)
    write_all_flat_benchmarks(tmp_path)
    bad = np.zeros((24, 40), np.uint8)
    bad[0, 0] = IGNORE  # RoadAnomaly has no void
    write_gray(tmp_path / "road_anomaly/labels/road_anomaly_000.png", bad)
    with pytest.raises(UserError, match=r"road_anomaly_000.png: invalid anomaly label value\(s\) \[255\]"):
        build_benchmark("RoadAnomaly", root=tmp_path)[0]
    bad[0, 0] = 2
    write_gray(tmp_path / "fs_static/labels/fs_static_000.png", bad)
    with pytest.raises(UserError, match=r"fs_static_000.png: invalid anomaly label value\(s\) \[2\]"):
        build_benchmark("FS_Static", root=tmp_path)[0]
    write_gray(tmp_path / "fs_static/labels/lonely.png", bad)
    with pytest.raises(FileNotFoundError, match="lonely.png has no matching image"):
        build_benchmark("FS_Static", root=tmp_path)
    write_rgb(tmp_path / "road_anomaly/original/extra.jpg", np.zeros((24, 40, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="extra.jpg has no matching label"):
        build_benchmark("RoadAnomaly", root=tmp_path)


@pytest.mark.parametrize(
    "name,folder,release_names",
    [
        ("MUAD", "MUAD_challenge/test_sets/test_OOD", False),
        ("MUAD", "MUAD_challenge/test_sets/test_OOD", True),
        ("toy_shift", "toy_shift", False),
    ],
)
def test_muad_encoding(tmp_path, name, folder, release_names):
    stems = write_muad_like(tmp_path, folder, release_names=release_names)
    ds = build_benchmark(name, root=tmp_path)
    assert len(ds) == 2 and ds[1]["name"] == stems[1]
    label_name = f"{stems[0]}_leftLabel.png" if release_names else f"{stems[0]}.png"
    assert ds.samples[0][2] == tmp_path / folder / "leftLabel" / label_name
    item = ds[0]
    assert item["sem_label"].dtype == torch.int64 and item["ood_label"].dtype == torch.uint8
    # written bands: 0, 5, 18, 19, 20, 255
    assert _column_values(item["ood_label"]) == [OOD_IN, OOD_OUT, OOD_VOID]
    assert _column_values(item["sem_label"]) == [0, 5, 18, IGNORE]
    bad = np.full((24, 40), 21, np.uint8)
    write_gray(tmp_path / folder / "leftLabel" / label_name, bad)
    with pytest.raises(UserError, match=rf"{label_name}: invalid label value\(s\) \[21\]"):
        build_benchmark(name, root=tmp_path)[0]


def test_muad_release_names_pair_by_frame(tmp_path):
    """The release names pair by frame; a label of another frame is still an orphan, and one frame
    under both names is an error naming both files."""
    folder = tmp_path / "MUAD_challenge/test_sets/test_OOD"
    stems = write_muad_like(tmp_path, release_names=True)
    assert [s[0] for s in build_benchmark("MUAD", root=tmp_path).samples] == stems
    write_gray(folder / "leftLabel" / "other_leftLabel.png", np.zeros((24, 40), np.uint8))
    with pytest.raises(FileNotFoundError, match="other_leftLabel.png has no matching image"):
        build_benchmark("MUAD", root=tmp_path)
    (folder / "leftLabel" / "other_leftLabel.png").unlink()
    write_rgb(folder / "leftImg8bit" / f"{stems[0]}.png", np.zeros((24, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=f"two image files share the name '{stems[0]}'"):
        build_benchmark("MUAD", root=tmp_path)


def test_toy_covariate_without_anomalies_loads(tmp_path):
    folder = tmp_path / "toy_covariate"
    write_rgb(folder / "leftImg8bit/scene_000.png", np.zeros((8, 8, 3), np.uint8))
    write_gray(folder / "leftLabel/scene_000.png", np.full((8, 8), 3, np.uint8))
    item = build_benchmark("toy_covariate", root=tmp_path)[0]
    assert (item["ood_label"] == OOD_IN).all() and (item["sem_label"] == 3).all()


def test_acdc_poc_conversion_and_domains(tmp_path):
    stems = write_acdc_poc(tmp_path)
    ds = build_benchmark("ACDC_POC", root=tmp_path)
    assert sorted(s[0] for s in ds.samples) == sorted(stems)
    item = ds[0]
    # written bands: 0 (void), 7 road, 26 car, 1 ego vehicle, 100 and 124 inserted objects
    assert ACDC_VALUES == [0, 7, 26, 1, 100, 124]
    assert _column_values(item["ood_label"]) == [OOD_VOID, OOD_IN, OOD_OUT]
    assert _column_values(item["sem_label"]) == [IGNORE, 0, 13, IGNORE]
    assert len(ACDC_POC(tmp_path, domains=["night"])) == 1
    with pytest.raises(ValueError, match="choose from"):
        ACDC_POC(tmp_path, domains=["sandstorm"])
    for p in (tmp_path / "acdc_poc/gt_trainval/gt/rain").rglob("*.png"):
        p.unlink()
    with pytest.raises(
        FileNotFoundError, match=r"GOPR0002_frame_000001_rgb_anon_poc0.png has no matching label"
    ):
        ACDC_POC(tmp_path, domains=["rain"])


def test_acdc_poc_npz_difference_images(tmp_path):
    stems = write_acdc_poc(tmp_path, domains=("fog",))
    png = next((tmp_path / "acdc_poc/rgb_anon_trainvaltest").rglob("*.png"))
    poc = ACDC_POC(tmp_path, domains=["fog"])[0]["image"]
    original = np.full((24, 36, 3), 200, np.uint8)
    acdc = tmp_path / "acdc"
    base = stems[0].split("_rgb_anon_")[0] + "_rgb_anon.png"
    write_rgb(acdc / "rgb_anon/fog/val" / png.parent.name / base, original)
    np.savez_compressed(
        png.with_suffix(".npz"), img=read_rgb(png) - original
    )  # uint8 wrap-around, as released
    png.unlink()
    with pytest.raises(FileNotFoundError, match="pass acdc_root"):
        ACDC_POC(tmp_path, domains=["fog"])[0]
    item = ACDC_POC(tmp_path, domains=["fog"], acdc_root=acdc)[0]
    assert torch.allclose(item["image"], poc, atol=1e-6)


def test_benchmark_joint_transform_crops_both_labels(tmp_path):
    write_muad_like(tmp_path)
    ds = MUADLike(tmp_path, RandomCrop((10, 12)), folder="MUAD_challenge/test_sets/test_OOD")
    item = ds[0]
    assert item["image"].shape == (3, 10, 12) and item["ood_label"].shape == item["sem_label"].shape == (
        10,
        12,
    )
    sem_void = item["sem_label"] == IGNORE
    assert ((item["ood_label"] == OOD_IN) <= ~sem_void).all()


def test_published_folder_names_are_accepted(tmp_path):
    stems = write_flat_benchmark(tmp_path, "fs_LostAndFound", "original", "labels", ".png", ".png", [0, 1])
    ds = build_benchmark("FS_LostAndFound", root=tmp_path)
    assert ds.root.name == "fs_LostAndFound" and [ds[i]["name"] for i in range(len(ds))] == stems
