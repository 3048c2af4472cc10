"""The ToyShift demo end to end: a miniature run (tiny world, two-iteration stages) checks that every
stage runs, writes its files and is skipped on rerun, the results.json schema, single-stage reruns
and determinism; the slow test runs the real demo and checks the paper's claim in miniature."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from lib.errors import UserError
from lib.models import build_model
from lib.models.checkpoints import load_weights
from lib.results import read_results
from lib.toy.demo import STAGES, Demo, WorldSizes, get_args_parser, main
from lib.toy.demo_eval import ROWS, claim_checks

TINY_WORLD = WorldSizes(n_train=4, n_outliers=4, n_test=2, height=64, width=128)
_TINY = ["train.iters_per_epoch=2", "train.batch_size=2", "data.crop_size=64"]
TINY_OVERRIDES = {
    "pretrain": ["train.epochs=1", "train.warmup_epoch=1", *_TINY],
    "oe_only": ["train.epochs=2", "train.warmup_epoch=1", *_TINY],
    "multishift": ["train.epochs=2", "train.warmup_epoch=1", *_TINY],
}
METHODS = [r.method for r in ROWS]


def _weights(path) -> dict[str, torch.Tensor]:
    model = build_model("deeplab_wrn_light")
    load_weights(model, path)
    return model.state_dict()


def _method_numbers(out) -> dict:
    """Every method's results entries without their provenance (which holds the date)."""
    return {
        m: {
            s: {k: v for k, v in e.items() if k != "provenance"}
            for s, e in read_results(out / "methods" / m).items()
        }
        for m in METHODS
    }


def _tiny(out) -> Demo:
    return Demo(out, sizes=TINY_WORLD, overrides=TINY_OVERRIDES, progress=False)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    first = _tiny(out).run()
    second = _tiny(out).run()
    return out, first, second


def test_every_stage_ran_then_was_skipped(demo_run):
    out, first, second = demo_run
    assert first == dict.fromkeys(STAGES, "ran")
    assert second == dict.fromkeys(STAGES, "skipped")
    for stage in STAGES:
        record = json.loads((out / "stages" / f"{stage}.json").read_text())
        assert record["stage"] == stage and record["seconds"] >= 0


def _fractions(mapping: dict, keys: set[str]) -> None:
    assert set(mapping) == keys
    for value in mapping.values():
        assert isinstance(value, float) and 0.0 <= value <= 1.0


def test_results_json_schema(demo_run):
    out, _, _ = demo_run
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"rows", "fpr_rule", "seconds"}
    assert [r["method"] for r in results["rows"]] == METHODS
    for row in results["rows"]:
        assert set(row) == {"method", "toy_anomaly", "toy_shift", "toy_covariate"}
        _fractions(row["toy_anomaly"], {"AUROC", "AP", "FPR95"})
        _fractions(row["toy_shift"], {"AUROC", "AP", "FPR95", "mIoU"})
        _fractions(row["toy_covariate"], {"FPR_at_shift_TPR95"})
    closed = [r["toy_shift"]["mIoU"] for r in results["rows"][:3]]
    assert closed[0] == closed[1] == closed[2], "the closed-world rows share one model"
    assert "0.95" in results["fpr_rule"] and "toy_covariate" in results["fpr_rule"]
    assert isinstance(results["seconds"], float) and results["seconds"] > 0
    recorded = sum(json.loads((out / "stages" / f"{s}.json").read_text())["seconds"] for s in STAGES[:-1])
    assert results["seconds"] >= recorded - 0.1


def test_files_written(demo_run):
    out, _, _ = demo_run
    md = (out / "results.md").read_text()
    assert all(f"| {m} |" in md for m in METHODS)
    for name in ("curves_toy_anomaly.png", "curves_toy_shift.png", "fpr_toy_covariate.png"):
        with Image.open(out / "plots" / name) as im:
            assert im.format == "PNG" and im.width > 300
    for set_name in ("toy_anomaly", "toy_shift", "toy_covariate"):
        panels = sorted((out / "heatmaps" / set_name).glob("*.png"))
        assert [p.name for p in panels] == ["000.png", "001.png"]
        with Image.open(panels[0]) as panel:
            # a row for the image, one per method, three 4.2-inch tiles of 2:1 images + titles, 100 dpi
            assert panel.size == (1400, round(100 * ((4.2 / 2 + 0.55) * (1 + len(ROWS)) + 0.9)))
    for run in ("pretrain", "oe_only", "multishift"):
        assert (out / "runs" / run / "last.pth").is_file()
    # Each method's numbers in the project's results files, each set with its provenance; the
    # covariate set (no anomaly pixel) has its pixel metrics not applicable but its FPR at threshold.
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for method in METHODS:
        entries = read_results(out / "methods" / method)
        assert list(entries) == ["toy_anomaly", "toy_shift", "toy_covariate"]
        covariate = entries["toy_covariate"]
        assert "no anomaly pixel" in covariate["not_applicable"] and "AP" not in covariate
        assert covariate["FPR_at_threshold"] == rows[method]["toy_covariate"]["FPR_at_shift_TPR95"]
        assert entries["toy_shift"]["AP"] == rows[method]["toy_shift"]["AP"]
        assert entries["toy_shift"]["provenance"]["weights"].endswith("last.pth")
        assert (out / "methods" / method / "results.md").is_file()
    assert (out / "datasets" / "multishift_cityscapes" / "metadata.jsonl").is_file()


def test_single_stage_reruns_alone_and_deterministically(demo_run, capsys, monkeypatch):
    out, _, _ = demo_run
    before_metrics = _method_numbers(out)
    before = _weights(out / "runs" / "pretrain" / "last.pth")
    for stage in ("pretrain", "evaluate"):
        torch.manual_seed(123)  # the stage must not depend on the caller's RNG state
        demo = _tiny(out)
        demo.clear(stage)
        assert demo.run([stage]) == {stage: "ran"}
    after = _weights(out / "runs" / "pretrain" / "last.pth")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _method_numbers(out) == before_metrics
    monkeypatch.setattr("lib.toy.demo.WorldSizes", lambda seed: replace(TINY_WORLD, seed=seed))
    assert _demo_main(out) == {"report": "skipped"}
    assert _demo_main(out, "--fresh") == {"report": "ran"}
    assert "| multishift |" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"'report' in .* ran for the world .*'seed': 0.*another --seed"):
        _demo_main(out, "--seed", "1")


def _demo_main(out, *argv):
    """``python -m lib.toy.demo --out OUT --stage report --no_progress ARGV``, in process."""
    args = get_args_parser().parse_args(["--out", str(out), "--stage", "report", "--no_progress", *argv])
    return main(args)


def test_stage_needs_its_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"needs the output of \['data'\]"):
        _tiny(tmp_path).run(["pretrain"])
    with pytest.raises(KeyError, match="unknown stage"):
        _tiny(tmp_path).run(["train"])
    with pytest.raises(KeyError, match="unknown training stage"):
        Demo(tmp_path, overrides={"evaluate": []})


@pytest.mark.slow
def test_real_demo_shows_the_claim(tmp_path):
    """The full demo (about 7 minutes on 2 quiet cores): MultiShift has the best AP and FPR95 on
    toy_shift, a clearly lower covariate false-positive rate than outlier exposure alone, and a
    toy_shift mIoU not below the closed-world model's."""
    assert Demo(tmp_path, progress=False).run() == dict.fromkeys(STAGES, "ran")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    checks = claim_checks(rows)
    assert all(checks.values()), checks


def _row(method, ap, fpr, miou, cov):
    anomaly = {"AUROC": 0.9, "AP": 0.5, "FPR95": 0.2}
    shift = {"AUROC": 0.8, "AP": ap, "FPR95": fpr, "mIoU": miou}
    return {"method": method, "toy_anomaly": anomaly, "toy_shift": shift, "toy_covariate": {COV: cov}}


COV = "FPR_at_shift_TPR95"


def test_claim_checks_each_criterion():
    rows = [
        _row("closed_msp", 0.02, 0.80, 0.30, 0.80),
        _row("closed_maxlogit", 0.03, 0.75, 0.30, 0.75),
        _row("closed_energy", 0.03, 0.70, 0.30, 0.70),
        _row("oe_only", 0.02, 0.65, 0.29, 0.60),
        _row("multishift", 0.04, 0.50, 0.30, 0.50),
    ]
    assert all(claim_checks(rows).values())
    rows[4]["toy_covariate"][COV] = 0.56  # 10 points below would be needed at 0.9 x 0.60 = 0.54
    assert claim_checks(rows)["covariate_FPR_clearly_below_oe_only"] is False
    rows[3]["toy_covariate"][COV], rows[4]["toy_covariate"][COV] = 0.04, 0.0  # ratio ok, gap < 5 points
    assert claim_checks(rows)["covariate_FPR_clearly_below_oe_only"] is False
    rows[4]["toy_shift"].update(AP=0.029, FPR95=0.71, mIoU=0.299)
    checks = claim_checks(rows)
    assert not checks["best_shift_AP"] and not checks["best_shift_FPR95"]
    assert not checks["shift_mIoU_not_below_closed_world"]


def test_models_normalisation_reaches_the_evaluation(tmp_path):
    """The test sets are normalised with the data.mean/std the models were trained with; models
    trained with different ones cannot share the demo's test sets."""
    same = ["data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"]
    demo = Demo(tmp_path, overrides=dict.fromkeys(("pretrain", "oe_only", "multishift"), same))
    assert demo.normalisation() == ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match="different data.mean/data.std"):
        Demo(tmp_path, overrides={"pretrain": same}).normalisation()
