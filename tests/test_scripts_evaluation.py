"""test_deeplab.py and ``lib.evaluate`` end to end on tiny fixture trees (untrained light DeepLab):
a benchmark without anomalies is reported as not applicable while the others are written; runs of
one benchmark each under one id add up in results.json; an export folder with stale score files is
refused; data.mean/std reach the benchmarks (testing and training validation); score files of any
method evaluate to the numbers of the direct evaluation, and bad score folders are named."""

import json

import numpy as np
import pytest
import torch

import test_deeplab
from lib import evaluate
from lib.config import Config, load_config
from lib.data.benchmarks import build_benchmark
from lib.engine import training
from lib.engine.distributed import DistInfo
from lib.engine.evaluator import Inference, evaluate_model
from lib.errors import UserError
from lib.labels import IGNORE
from lib.models import build_model
from lib.results import read_results
from lib.scores import get_score
from tests.data_fixtures import write_flat_benchmark, write_muad_like

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (32, 48)
LIGHT = ["model.name=deeplab_wrn_light", "data.num_workers=0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_muad_like(root, "toy_anomaly", n=2)
    write_muad_like(root, "toy_shift", n=3)
    write_flat_benchmark(
        root, "toy_covariate", "leftImg8bit", "leftLabel", ".png", ".png", [0, 5, 18, IGNORE]
    )
    write_flat_benchmark(
        root, "dataset_AnomalyTrack", "images", "labels_masks", ".jpg", "_labels_semantic.png", [0, 1, 255],
        unlabelled=1, size=SIZE,
    )  # fmt: skip
    weights = tmp_path_factory.mktemp("weights") / "deeplab.pth"
    torch.manual_seed(0)
    torch.save(build_model("deeplab_wrn_light").state_dict(), weights)
    out = tmp_path_factory.mktemp("outputs")
    return {
        "root": root,
        "out": out,
        "weights": weights,
        "common": [f"data.root={root}", f"output_root={out}"],
    }


def _test(setup, run_id, *extra, cfg="exp/DeepLab.yaml"):
    argv = ["--cfg", cfg, "--id", run_id, "--weight_path", str(setup["weights"]), "--no_progress"]
    args = test_deeplab.get_args_parser().parse_intermixed_args([*argv, *LIGHT, *setup["common"], *extra])
    return test_deeplab.main(args)


def test_toy_config_reports_the_covariate_set_and_writes_every_result(setup, capsys):
    """exp/toy_multishift.yaml ends with toy_covariate (no anomaly pixel): it is reported, not fatal."""
    results = _test(setup, "toy", cfg="exp/toy_multishift.yaml")
    assert list(results) == ["toy_anomaly", "toy_shift", "toy_covariate"]
    covariate = results["toy_covariate"]
    assert "no anomaly pixel (label 1)" in covariate["not_applicable"]
    assert not {"AUROC", "AP", "FPR95"} & set(covariate)
    assert 0.0 <= covariate["FPR_at_threshold"] <= 1.0 and 0.0 <= covariate["mIoU"] <= 1.0
    assert covariate["threshold"]["from"] == "toy_shift"
    for name in ("toy_anomaly", "toy_shift"):
        assert 0.0 <= results[name]["AP"] <= 1.0 and results[name]["threshold"] == covariate["threshold"]
    saved = read_results(setup["out"] / "toy")
    assert list(saved) == ["toy_shift", "toy_anomaly", "toy_covariate"]  # the threshold source first
    assert saved["toy_covariate"]["not_applicable"] == covariate["not_applicable"]
    printed = capsys.readouterr().out
    assert "| toy_covariate | n/a | n/a | n/a |" in printed and "not applicable: no anomaly pixel" in printed
    assert "the anomaly pixels of toy_shift" in printed
    assert "| toy_covariate | n/a | n/a | n/a |" in (setup["out"] / "toy" / "results.md").read_text()


def test_single_benchmark_runs_under_one_id_are_all_kept(setup):
    _test(setup, "single", "--test_dataset", "toy_anomaly", "eval.score=msp")
    _test(setup, "single", "--test_dataset", "toy_shift")
    saved = read_results(setup["out"] / "single")
    assert list(saved) == ["toy_anomaly", "toy_shift"]
    assert saved["toy_anomaly"]["provenance"]["score"] == "msp"
    assert saved["toy_shift"]["provenance"]["score"] == "learned"
    first_date = saved["toy_anomaly"]["provenance"]["date"]
    _test(setup, "single", "--test_dataset", "toy_anomaly", "eval.protocol=exact")
    again = read_results(setup["out"] / "single")
    assert again["toy_shift"] == saved["toy_shift"]
    assert again["toy_anomaly"]["provenance"]["protocol"] == "exact"
    assert again["toy_anomaly"]["provenance"]["date"] >= first_date
    md = (setup["out"] / "single" / "results.md").read_text()
    assert "| toy_anomaly |" in md and "| toy_shift |" in md and "Protocol: `exact`" in md


def test_export_refuses_a_folder_with_stale_score_files(setup, tmp_path):
    export = tmp_path / "fishy"
    _test(setup, "fs", "--test_dataset", "toy_shift", "--export", "fishyscapes", str(export))
    folder = export / "toy_shift"
    assert len(list(folder.iterdir())) == 6
    np.save(folder / "7_anomaly.npy", np.zeros((2, 2), np.float32))  # left by some earlier run
    before = read_results(setup["out"] / "fs")
    with pytest.raises(UserError, match=f"export folder {folder} already holds 7 score files.*--overwrite"):
        _test(setup, "fs", "--test_dataset", "toy_shift", "--export", "fishyscapes", str(export))
    assert read_results(setup["out"] / "fs") == before  # refused before any work
    _test(setup, "fs", "--test_dataset", "toy_shift", "--export", "fishyscapes", str(export), "--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{i}_{k}.npy" for i in range(3) for k in ("anomaly", "segmentation")
    ]


def test_normalisation_reaches_the_benchmarks_in_testing(setup):
    results = _test(
        setup, "norm", "--test_dataset", "toy_shift", "data.mean=[0.0,0.0,0.0]", "data.std=[1.0,1.0,1.0]"
    )
    model = build_model("deeplab_wrn_light")
    model.load_state_dict(torch.load(setup["weights"], weights_only=True))
    expected = {}
    for mean, std in (((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        dataset = build_benchmark("toy_shift", root=setup["root"], mean=mean, std=std)
        expected[mean] = evaluate_model(
            model,
            dataset,
            score="learned",
            score_fn=get_score("learned"),
            inference=Inference(torch.device("cpu")),
            progress=False,
        )
    assert results["toy_shift"]["AP"] == expected[(0.0, 0.0, 0.0)]["AP"]
    assert results["toy_shift"]["AP"] != expected[(0.485, 0.456, 0.406)]["AP"]


def test_normalisation_reaches_the_validation_benchmark(setup, monkeypatch):
    cfg = load_config(
        Config,
        "exp/DeepLab.yaml",
        [
            *setup["common"],
            *LIGHT,
            "data.val_ds=toy_shift",
            "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.25,0.25,0.25]",
        ],
    )
    seen = {}
    monkeypatch.setattr(training, "build_recipe", lambda cfg: (None, None))
    monkeypatch.setattr(training, "build_training_model", lambda cfg: None)
    monkeypatch.setattr(training, "fit", lambda cfg, **kw: seen.update(kw) or {})
    training.run_training(cfg, info=DistInfo(0, 1, torch.device("cpu")))
    plain = build_benchmark("toy_shift", root=setup["root"], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    torch.testing.assert_close(seen["val_set"][0]["image"], (plain[0]["image"] - 0.5) / 0.25)


def _model_and_dataset(setup):
    model = build_model("deeplab_wrn_light")
    model.load_state_dict(torch.load(setup["weights"], weights_only=True))
    dataset = build_benchmark("RoadAnomaly21", root=setup["root"])
    return model.eval(), dataset


@pytest.mark.parametrize("protocol", ["published", "smiyc"])
def test_npy_score_files_give_the_direct_numbers_exactly(setup, tmp_path, protocol, capsys):
    model, dataset = _model_and_dataset(setup)
    scores = tmp_path / "maps"
    scores.mkdir()
    for i in range(len(dataset)):
        item = dataset[i]
        with torch.no_grad():
            np.save(scores / f"{item['name']}.npy", model(item["image"][None])[0][0].numpy())
    direct = _test(
        setup, f"direct_{protocol}", "--test_dataset", "RoadAnomaly21", f"eval.protocol={protocol}"
    )
    out = tmp_path / "results.json"
    args = ["--benchmark", "RoadAnomaly21", "--scores", str(scores), "--root", str(setup["root"])]
    result = evaluate.main(
        evaluate.get_args_parser().parse_args(
            [*args, "--protocol", protocol, "--out", str(out), "--no_progress"]
        )
    )
    assert result == direct["RoadAnomaly21"]
    entry = read_results(out)["RoadAnomaly21"]
    assert entry["provenance"]["score"] == "maps" and entry["provenance"]["protocol"] == protocol
    assert {k: v for k, v in entry.items() if k != "provenance"} == json.loads(json.dumps(result))
    assert "| RoadAnomaly21 |" in capsys.readouterr().out


FLOAT16_TOLERANCE = {"AUROC": 2e-3, "AP": 5e-3, "FPR95": 1e-2}
"""The SMIYC export stores float16 (about three significant digits): nearby scores become ties, which
moves the pixel metrics of these tiny maps by up to about 1e-3; component metrics depend on the
best-F1 threshold over those ties and are not compared."""


@pytest.mark.parametrize("protocol", ["published", "smiyc"])
def test_smiyc_export_round_trip(setup, tmp_path, protocol):
    """test_deeplab.py --export smiyc, then lib.evaluate on the exported files (the unlabelled frame's
    file is accepted and ignored) gives the direct numbers up to the float16 rounding."""
    export = tmp_path / "submission"
    run = f"rt_{protocol}"
    direct = _test(
        setup,
        run,
        "--test_dataset",
        "RoadAnomaly21",
        f"eval.protocol={protocol}",
        "--export",
        "smiyc",
        str(export),
    )["RoadAnomaly21"]
    folder = export / "anomaly_p" / run / "AnomalyTrack-all"
    assert len(list(folder.iterdir())) == 3
    out = tmp_path / "results.json"
    args = [
        "--benchmark",
        "RoadAnomaly21",
        "--scores",
        str(folder),
        "--root",
        str(setup["root"]),
        "--out",
        str(out),
    ]
    result = evaluate.main(
        evaluate.get_args_parser().parse_args([*args, "--protocol", protocol, "--no_progress"])
    )
    assert result["images"] == direct["images"] == 2
    for metric, tolerance in FLOAT16_TOLERANCE.items():
        assert result[metric] == pytest.approx(direct[metric], abs=tolerance), metric
    assert read_results(out)["RoadAnomaly21"]["provenance"]["score"] == run


def test_bad_score_folders_are_named(setup, tmp_path):
    dataset = build_benchmark("RoadAnomaly21", root=setup["root"])
    names = [name for name, _, _ in dataset.samples]
    folder = tmp_path / "maps"
    folder.mkdir()
    np.save(folder / f"{names[0]}.npy", np.zeros(SIZE, np.float32))
    args = [
        "--benchmark",
        "RoadAnomaly21",
        "--scores",
        str(folder),
        "--root",
        str(setup["root"]),
        "--no_progress",
    ]
    args += ["--out", str(tmp_path / "r.json")]
    with pytest.raises(UserError, match=rf"{folder}: 1 labelled images have no score file: {names[1]}"):
        evaluate.main(evaluate.get_args_parser().parse_args(args))
    np.save(folder / f"{names[1]}.npy", np.zeros((SIZE[0], SIZE[1] + 1), np.float32))
    with pytest.raises(
        UserError, match=rf"{names[1]}.npy: score map of size 32x49, but image {names[1]} is 32x48"
    ):
        evaluate.main(evaluate.get_args_parser().parse_args(args))
    np.save(folder / f"{names[1]}.npy", np.full(SIZE, np.nan, np.float32))
    with pytest.raises(UserError, match=rf"{names[1]}.npy: {SIZE[0] * SIZE[1]} score values are NaN or inf"):
        evaluate.main(evaluate.get_args_parser().parse_args(args))
    np.save(folder / f"{names[1]}.npy", np.zeros(SIZE, np.float32))
    np.save(folder / "frame_999.npy", np.zeros(SIZE, np.float32))
    with pytest.raises(UserError, match=r"1 score files match no image of .*frame_999.npy"):
        evaluate.main(evaluate.get_args_parser().parse_args(args))
    (folder / "frame_999.npy").unlink()
    (folder / f"{names[0]}.npy").write_bytes(b"not an array")
    with pytest.raises(UserError, match=rf"{names[0]}.npy: cannot read a score map"):
        evaluate.main(evaluate.get_args_parser().parse_args(args))
    assert not (tmp_path / "r.json").exists()
