"""Heat-map panels: grid size, the binary map is exactly ``score >= t95`` of the benchmark, one colour
scale shared by all methods (false-positive rates on the reference benchmark), readable text, and
the unlabelled case said in the figure; the evaluation loop's sink draws them at ``finish``."""

import numpy as np
import pytest
import torch
from matplotlib.colors import LogNorm
from matplotlib.text import Text
from PIL import Image

from lib.engine.evaluator import HeatmapSink, MetricSink, ScoredImage, stream
from lib.labels import CLASS_NAMES
from lib.metrics import RECALL_LEVEL
from lib.panels import DPI, FPR_FLOOR, MIN_TEXT_PX, MethodMap, figure_rgb, panel_figure, save_figure
from lib.protocols import OODEvaluation

H, W = 32, 64


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    ood = np.zeros((H, W), np.uint8)
    ood[10:20, 20:34] = 1
    ood[:3] = 255
    pred = rng.integers(0, 19, (H, W)).astype(np.uint8)
    return image, ood, pred


def _images(fig, kind: str) -> dict[str, object]:
    """``{method: AxesImage}`` of the ``kind`` tiles (``anomaly`` or ``binary``)."""
    found = {}
    for ax in fig.axes:
        for im in ax.get_images():
            gid = im.get_gid() or ""
            if gid.startswith(f"{kind}:"):
                found[gid.split(":", 1)[1]] = im
    return found


def _methods(ood, seed=1):
    """Three methods with unrelated score units, each with its own evaluation on the image."""
    rng = np.random.default_rng(seed)
    maps = []
    for name, scale, offset in (("msp", 0.1, 0.5), ("energy", 4.0, -20.0), ("learned", 1.0, 3.0)):
        score = ((rng.normal(size=ood.shape) + 2.0 * (ood == 1)) * scale + offset).astype(np.float32)
        evaluation = OODEvaluation("published")
        evaluation.update(score, ood)
        maps.append((name, score, evaluation))
    return maps


def test_panel_grid_binary_map_and_shared_scale(tmp_path):
    image, ood, pred = _scene()
    methods = _methods(ood)
    maps = [
        MethodMap(name, score, pred, ev.threshold_at_tpr(RECALL_LEVEL), ev.fpr_at_thresholds)
        for name, score, ev in methods
    ]
    fig = panel_figure(
        image, maps, title="bench 0", ood_label=ood, threshold_note="95% TPR", reference="bench"
    )
    # One row for the image, one per method; three tiles a row.
    tiles = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(tiles) == 3 * (1 + len(maps))
    path = save_figure(tmp_path / "p" / "panel.png", fig)
    with Image.open(path) as png:
        assert png.size == (round(fig.get_figwidth() * DPI), round(fig.get_figheight() * DPI))
        assert png.size == (1400, 1150)  # 4 rows of 3 tiles (4.2 x 2.1 in) + titles: a grid
    binary, anomaly = _images(fig, "binary"), _images(fig, "anomaly")
    assert sorted(binary) == sorted(anomaly) == ["energy", "learned", "msp"]
    for name, score, ev in methods:
        t95 = ev.threshold_at_tpr(RECALL_LEVEL)
        flagged = np.asarray(binary[name].get_array())
        np.testing.assert_array_equal(flagged, score >= t95)
        assert flagged[ood == 1].mean() >= RECALL_LEVEL  # this image is the whole benchmark here
        # Colours: the false-positive rate at each pixel's score, on one log scale for all methods.
        shown = np.asarray(anomaly[name].get_array())
        np.testing.assert_allclose(shown, np.clip(ev.fpr_at_thresholds(score), FPR_FLOOR, 1.0))
    norms = [im.norm for im in anomaly.values()]
    assert all(isinstance(n, LogNorm) for n in norms)
    assert {(n.vmin, n.vmax) for n in norms} == {(FPR_FLOOR, 1.0)}
    assert len({im.get_cmap().name for im in anomaly.values()}) == 1


def test_every_text_is_at_least_12_px_and_the_scale_is_stated():
    image, ood, pred = _scene()
    (name, score, ev), *_ = _methods(ood)
    maps = [MethodMap(name, score, pred, ev.threshold_at_tpr(), ev.fpr_at_thresholds)]
    fig = panel_figure(
        image, maps, title="t", ood_label=ood, threshold_note="95% TPR on bench", reference="bench"
    )
    figure_rgb(fig)  # draw, so that tick labels exist
    texts = [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
    assert texts
    for t in texts:
        assert t.get_fontsize() * DPI / 72.0 >= MIN_TEXT_PX, (t.get_text(), t.get_fontsize())
    words = " ".join(t.get_text() for t in texts)
    assert "FPR on bench" in words and "95% TPR on bench" in words
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert [n for n in legend if n in CLASS_NAMES] == [CLASS_NAMES[c] for c in np.unique(pred)]
    assert "anomaly (ground truth)" in legend


def test_unlabelled_raw_scale_shared_across_methods():
    image, _, pred = _scene()
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(H, W)), rng.normal(size=(H, W)) * 5.0
    fig = panel_figure(
        image, [MethodMap("a", a, pred), MethodMap("b", b, None, 1.0)], title="x", threshold_note="given"
    )
    anomaly = _images(fig, "anomaly")
    lo, hi = np.percentile(np.concatenate([a.ravel(), b.ravel()]), [1.0, 99.0])
    for im in anomaly.values():
        assert (im.norm.vmin, im.norm.vmax) == (pytest.approx(lo), pytest.approx(hi))
    assert len({id(im.norm) for im in anomaly.values()}) == 1
    assert list(_images(fig, "binary")) == ["b"]  # no threshold for "a"
    words = " ".join(t.get_text() for t in fig.findobj(Text))
    assert "unlabelled image" in words and "raw anomaly score" in words and "no prediction" in words


def test_bad_panels_are_refused():
    image, ood, pred = _scene()
    (_, score, ev), *_ = _methods(ood)
    with pytest.raises(ValueError, match="every method of a panel has an FPR scale or none"):
        panel_figure(
            image,
            [MethodMap("a", score, fpr=ev.fpr_at_thresholds), MethodMap("b", score)],
            title="x",
            threshold_note="",
        )
    with pytest.raises(ValueError, match="does not match the image"):
        panel_figure(image, [MethodMap("a", score[:-1])], title="x", threshold_note="")
    with pytest.raises(ValueError, match="no anomaly map"):
        panel_figure(image, [], title="x", threshold_note="")


def _items(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, ood, pred = _scene(seed + i)
        score = rng.normal(size=(H, W)).astype(np.float32) + 2.5 * (ood == 1)
        yield ScoredImage(
            index=i,
            name=f"img{i}",
            scores={"learned": torch.from_numpy(score)},
            ood_label=torch.from_numpy(ood),
            pred=torch.from_numpy(pred.astype(np.int64)),
            image=torch.from_numpy(image).permute(2, 0, 1).float() / 255.0,
        )


def test_sink_draws_at_finish_with_the_benchmarks_threshold(tmp_path):
    """The threshold is known only after every image is scored: the sink keeps the first images and
    draws them at finish with the 95%-TPR threshold of all images together."""
    items = list(_items(4))
    metric = MetricSink("learned")
    sink = HeatmapSink(
        tmp_path / "maps", count=2, score="learned", label="run: learned", benchmark="bench",
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), references=[("bench", metric)],
    )  # fmt: skip
    stream(iter(items), [metric, sink], desc="t", total=4, progress=False)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["img0_heatmap.png", "img1_heatmap.png"]
    t95 = metric.evaluation.threshold_at_tpr(RECALL_LEVEL)
    for (name, fig), item in zip(sink.figures, items):
        assert name == item.name
        binary = _images(fig, "binary")["run: learned"]
        np.testing.assert_array_equal(np.asarray(binary.get_array()), item.scores["learned"].numpy() >= t95)
        image_tile = next(ax for ax in fig.axes if ax.get_title() == "image").get_images()[0]
        np.testing.assert_array_equal(
            np.asarray(image_tile.get_array()), (item.image * 255).round().byte().permute(1, 2, 0).numpy()
        )


def test_sink_without_anomalies_uses_the_next_reference_or_says_none(tmp_path):
    source = MetricSink("learned")
    stream(_items(3), [source], desc="t", total=3, progress=False)
    covariate = [
        ScoredImage(**{**item.__dict__, "ood_label": torch.zeros(H, W, dtype=torch.uint8)})
        for item in _items(2, 7)
    ]
    for references, expect_binary in (([], False), ([("shift", source)], True)):
        metric = MetricSink("learned")
        sink = HeatmapSink(
            None, count=1, score="learned", label="l", benchmark="cov", mean=(0.0,) * 3, std=(1.0,) * 3,
            references=[("cov", metric), *references],
        )  # fmt: skip
        stream(iter(covariate), [metric, sink], desc="t", total=2, progress=False)
        ((_, fig),) = sink.figures
        words = " ".join(t.get_text() for t in fig.findobj(Text))
        if expect_binary:
            t = source.evaluation.threshold_at_tpr(RECALL_LEVEL)
            binary = _images(fig, "binary")["l"]
            np.testing.assert_array_equal(
                np.asarray(binary.get_array()), covariate[0].scores["learned"].numpy() >= t
            )
            assert "FPR on shift" in words and "shift's anomaly pixels" in words
        else:
            assert not _images(fig, "binary") and "no labelled anomaly pixel" in words
