"""CG-Aug steps on small arrays: condition map, paste, prompts, restricted unpickler, ADE20K-full
object bank on a tiny fake release in tmp_path, seeds and shards. The ADE20K tables are the package's
own copies of the method's reference tables."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.ade20k import ade150, full_to_150, ood_classes
from generation.condition import (
    CITYSCAPES_TO_ADE,
    condition_from_color,
    condition_from_train_ids,
    road_color,
)
from generation.config import PromptConfig
from generation.object_bank import ADE20KObjectBank, RestrictedUnpickler, load_restricted_pickle
from generation.paste import paste_on_road
from generation.pipeline import item_seed
from generation.prompts import check_prompt_config, sample_prompt
from lib.errors import UserError
from lib.labels import IGNORE, LABELS, NUM_CLASSES, TRAIN_LABELS

ADE = {  # category name -> (1-based index, colour) from the published ADE20K palette
    "road": (7, (140, 140, 140)),
    "sidewalk": (12, (235, 255, 7)),
    "railing": (39, (255, 61, 6)),
    "building": (2, (180, 120, 120)),
    "wall": (1, (120, 120, 120)),
    "fence": (33, (255, 184, 6)),
    "bridge": (62, (255, 82, 0)),
    "pole": (94, (51, 0, 255)),
    "traffic light": (137, (41, 0, 255)),
    "signboard": (44, (255, 5, 153)),
    "tree": (5, (4, 200, 3)),
    "grass": (10, (4, 250, 7)),
    "sky": (3, (6, 230, 230)),
    "person": (13, (150, 5, 61)),
    "car": (21, (0, 102, 200)),
    "truck": (84, (255, 0, 20)),
    "bus": (81, (255, 0, 245)),
    "bicycle": (128, (255, 245, 0)),
}


def test_ade_tables() -> None:
    assert len(ade150().names) == 150 and ade150().palette.shape == (150, 3)
    for name, (index, color) in ADE.items():
        assert ade150().index(name) == index
        assert tuple(ade150().color(index)) == color
    assert len(full_to_150()) == 153 and len(ood_classes("train")) == 82 and len(ood_classes("val")) == 32
    assert set(ood_classes("val")) <= set(ood_classes("train"))
    assert not {ADE[n][0] for n in ADE} & set(ood_classes("train"))
    with pytest.raises(KeyError, match="'test'"):
        ood_classes("test")


def test_condition_from_train_ids_every_class() -> None:
    label = np.array([[lb.trainId for lb in TRAIN_LABELS] + [IGNORE]], dtype=np.uint8)
    cond = condition_from_train_ids(label)
    for i, lb in enumerate(TRAIN_LABELS):
        target = CITYSCAPES_TO_ADE[lb.name]
        assert tuple(cond[0, i]) == ADE[target][1], lb.name
    assert tuple(cond[0, NUM_CLASSES]) == (0, 0, 0)
    with pytest.raises(UserError, match="invalid label"):
        condition_from_train_ids(np.full((2, 2), 120, dtype=np.uint8))


def test_condition_from_color_every_class() -> None:
    """All 35 Cityscapes colours; black classes become road as in the published sequential repaint."""
    colors = np.array([[lb.color for lb in LABELS]], dtype=np.uint8)
    cond = condition_from_color(np.concatenate([colors, np.full_like(colors[:, :, :1], 255)], axis=2))
    for i, lb in enumerate(LABELS):
        target = CITYSCAPES_TO_ADE[lb.name]
        if tuple(lb.color) == (0, 0, 0):
            expected = ADE["road"][1]
        elif lb.name == "license plate":  # same colour as car, repainted as car first
            expected = ADE["car"][1]
        else:
            expected = (0, 0, 0) if target is None else ADE[target][1]
        assert tuple(cond[0, i]) == expected, lb.name
    odd = np.array([[[1, 2, 3]]], dtype=np.uint8)
    np.testing.assert_array_equal(condition_from_color(odd), odd)
    with pytest.raises(ValueError, match="colour map"):
        condition_from_color(np.zeros((4, 4), dtype=np.uint8))


def street(h: int, w: int, road_rows: slice) -> np.ndarray:
    cond = np.zeros((h, w, 3), dtype=np.uint8)
    cond[:] = ADE["sky"][1]
    cond[road_rows] = road_color()
    return cond


@pytest.mark.parametrize("seed", range(5))
def test_paste_on_road_and_margins(seed: int) -> None:
    cond = street(1024, 2048, slice(600, None))
    obj = np.zeros((50, 80), dtype=bool)
    obj[5:45, 10:70] = True
    color = ade150().color(42)
    res = paste_on_road(cond, obj, color, road_color(), np.random.default_rng(seed))
    cy, cx = res.center
    assert res.margin == 150 and 150 <= cy < 1024 - 150 and 150 <= cx < 2048 - 150
    assert tuple(cond[cy, cx]) == tuple(road_color())
    rows, cols = np.flatnonzero(res.mask.any(1)), np.flatnonzero(res.mask.any(0))
    assert cols[-1] - cols[0] + 1 == 200 and rows[-1] - rows[0] + 1 == 133  # 60x40 -> longer side 200
    assert abs((rows[0] + rows[-1]) / 2 - cy) <= 1 and abs((cols[0] + cols[-1]) / 2 - cx) <= 1
    np.testing.assert_array_equal(np.all(res.condition == color, axis=-1), res.mask)
    np.testing.assert_array_equal(res.condition[~res.mask], cond[~res.mask])


def test_paste_scales_and_shrinks_margin() -> None:
    """At 512x256 every length is / 4: margin 38 shrinks in 2 px steps until a road row fits."""
    cond = street(256, 512, slice(230, 250))
    big = np.ones((900, 300), dtype=bool)
    res = paste_on_road(cond, big, ade150().color(42), road_color(), np.random.default_rng(0))
    cy, cx = res.center
    assert res.margin == 24 and 230 <= cy < 232 and 24 <= cx < 512 - 24
    rows, cols = np.flatnonzero(res.mask.any(1)), np.flatnonzero(res.mask.any(0))
    assert cols.size == 42 and rows[0] == cy - 62 and rows[-1] == 255  # 125x42, cut at the bottom
    empty = street(64, 64, slice(0, 0))
    assert paste_on_road(empty, big, (1, 2, 3), road_color(), np.random.default_rng(0)) is None


def test_prompt_sampling_frequencies() -> None:
    cfg = PromptConfig(places=["Paris", "Tel Aviv", "Santa Barbara &amp; Montecito"])
    rng = np.random.default_rng(0)
    prompts = [sample_prompt(cfg, rng) for _ in range(4000)]
    plain = np.mean([p.domain.place is None for p in prompts])
    assert abs(plain - 0.5) < 0.03
    shifted = [p for p in prompts if p.domain.place is not None]
    assert abs(np.mean([p.domain.time == "day" for p in shifted]) - 0.7) < 0.03
    for w in cfg.weathers:
        assert abs(np.mean([p.domain.weather == w for p in shifted]) - 0.2) < 0.03
    p = next(p for p in shifted if p.domain.place == "Tel Aviv")
    w, t = p.domain.weather, p.domain.time
    assert (
        p.scene
        == f"An image sampled from various stereo video sequences taken by dash cam in Tel Aviv in a {w} {t}."
    )
    assert p.domain.tag == f"_{w}_{t}_Tel_Aviv"
    assert p.text(cfg, "box") == (
        f"{p.scene}, There is a box accidentally staying on the road., "
        "best quality, extremely detailed, realistic, high resolution"
    )
    odd = next(p for p in shifted if p.domain.place.startswith("Santa"))
    assert odd.domain.tag.endswith("_Santa_Barbara_amp_Montecito")
    assert next(p for p in prompts if p.domain.place is None).domain.tag == ""
    with pytest.raises(ValueError, match="time_probs"):
        check_prompt_config(PromptConfig(time_probs=[0.5, 0.6]))


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_restricted_unpickler(tmp_path: Path) -> None:
    good = {"filename": ["a.jpg"], "objectPresence": np.arange(6, dtype=np.int16).reshape(2, 3), "s": {1, 2}}
    (tmp_path / "good.pkl").write_bytes(pickle.dumps(good, protocol=2))
    loaded = load_restricted_pickle(tmp_path / "good.pkl")
    np.testing.assert_array_equal(loaded["objectPresence"], good["objectPresence"])
    assert loaded["s"] == {1, 2}
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match=r"evil.pkl: refusing to load global posix.getcwd"):
        load_restricted_pickle(tmp_path / "evil.pkl")
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


def seg_color(full_class: int, instance: int) -> tuple[int, int, int]:
    return (full_class // 256 * 10, full_class % 256, instance)


def make_fake_ade(root: Path) -> tuple[int, int]:
    """Two images: one with a whole OOD object and a road, one with only an in-distribution class."""
    ood_ade = ood_classes("train")[0]
    ood_full = next(k for k, v in full_to_150().items() if v == ood_ade)
    road_full = next(k for k, v in full_to_150().items() if v == ADE["road"][0])
    folder = Path("ADE20K_2021_17_01/images/ADE/training/street")
    (root / folder).mkdir(parents=True)
    seg0 = np.zeros((20, 30, 3), dtype=np.uint8)
    seg0[:] = seg_color(road_full, 1)
    seg0[4:9, 5:15] = seg_color(ood_full, 7)
    seg1 = np.zeros((20, 30, 3), dtype=np.uint8)
    seg1[:] = seg_color(road_full, 1)
    Image.fromarray(seg0).save(root / folder / "img0_seg.png")
    Image.fromarray(seg1).save(root / folder / "img1_seg.png")
    n_obj = max(ood_full, road_full)
    presence = np.zeros((n_obj, 2), dtype=np.int32)
    presence[road_full - 1] = 1
    presence[ood_full - 1, 0] = 1
    index = {
        "filename": ["img0.jpg", "img1.jpg"],
        "folder": [str(folder)] * 2,
        "objectPresence": presence,
        "objectIsPart": np.zeros_like(presence),
        "objectnames": [f"obj{i}" for i in range(n_obj)],
    }
    (root / "ADE20K_2021_17_01" / "index_ade20k.pkl").write_bytes(pickle.dumps(index))
    return ood_ade, ood_full


def test_ade20k_object_bank(tmp_path: Path) -> None:
    ood_ade, _ = make_fake_ade(tmp_path)
    cache = tmp_path / "cache" / "index.npz"
    bank = ADE20KObjectBank(root=tmp_path, ood_split="train", cache_path=cache)
    assert bank.images == ["ADE20K_2021_17_01/images/ADE/training/street/img0.jpg"] and cache.is_file()
    obj = bank.sample(np.random.default_rng(0))
    expected = np.zeros((20, 30), dtype=bool)
    expected[4:9, 5:15] = True
    np.testing.assert_array_equal(obj.mask, expected)
    assert obj.ade_index == ood_ade and tuple(obj.color) == tuple(ade150().color(ood_ade))
    (tmp_path / "ADE20K_2021_17_01" / "index_ade20k.pkl").unlink()
    assert ADE20KObjectBank(root=tmp_path, cache_path=cache).images == bank.images  # from the cache
    with pytest.raises(FileNotFoundError, match="index_ade20k.pkl"):
        ADE20KObjectBank(root=tmp_path)


def test_item_seed_is_deterministic_and_distinct() -> None:
    assert item_seed(1, "aachen_000000_000019", 0) == item_seed(1, "aachen_000000_000019", 0)
    seeds = {item_seed(1, f"c_{i:06d}_000019", a) for i in range(100) for a in range(3)}
    assert len(seeds) == 300 and all(0 <= s < 2**31 for s in seeds)
