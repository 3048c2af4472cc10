"""train_m2f.py and test_m2f.py end to end on tiny fixture trees with exp/toy_m2f.yaml (tiny Mask2Anomaly).

Training starts from a closed-world checkpoint in Mask2Anomaly's ``bt-f-xl.pth`` layout (detectron2
``model`` wrapper, no OOD head ``class_embed2``, the criterion's ``empty_weight``),
pastes COCO outliers, runs stage 1 (RCL on the OOD head) and stage 2 (set criterion + RCL), and
resumes; testing reads the run's best checkpoint and writes results.json / results.md / heat maps.
"""

import pytest
import torch

import test_m2f
import train_m2f
from lib.models import build_model
from lib.results import read_results
from tests.data_fixtures import write_training_tree

AVAILABLE = ["RoadAnomaly", "RoadAnomaly21", "RoadObstacle21", "FS_LostAndFound", "FS_Static"]
HEAD = "sem_seg_head.predictor."


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    out = tmp_path_factory.mktemp("outputs")
    write_training_tree(root)
    torch.manual_seed(0)
    closed = build_model("mask2anomaly_tiny").state_dict()
    published = {k: v for k, v in closed.items() if "class_embed2" not in k}
    published["criterion.empty_weight"] = torch.ones(20)
    weights = tmp_path_factory.mktemp("weights") / "bt-f-xl.pth"
    torch.save({"model": published, "iteration": 0}, weights)
    overrides = [
        f"data.root={root}",
        "data.multishift=multishift_cityscapes",
        "data.crop_size=32",
        "data.val_ds=RoadAnomaly21",
        f"output_root={out}",
        "train.epochs=2",
        "train.warmup_epoch=1",
        "train.iters_per_epoch=1",
        f"eval.datasets=[{','.join([*AVAILABLE, 'ACDC_POC', 'MUAD'])}]",
    ]
    argv = ["--cfg", "exp/toy_m2f.yaml", "--id", "run", "--weight_path", str(weights), "--no_progress"]
    summary = train_m2f.main(train_m2f.get_args_parser().parse_args([*argv, *overrides]))
    return {
        "root": root,
        "out": out,
        "closed": closed,
        "summary": summary,
        "argv": argv,
        "overrides": overrides,
    }


def test_train_writes_checkpoints_from_mask2anomaly_weights(trained):
    run = trained["out"] / "run"
    last = torch.load(run / "last.pth", weights_only=True)
    assert (last["epoch"], last["stage"], last["model_name"]) == (1, 2, "mask2anomaly_tiny")
    assert last["config"]["loss"]["name"] == "m2f_rcl"
    assert last["config"]["model"]["trainable_params_name_update"] == [""]
    assert (run / "best_AP.pth").is_file() and (run / "config.yaml").is_file()
    log = (run / "log.txt").read_text()
    assert "checkpoint has no OOD head: class_embed2 initialised from class_embed" in log
    assert "OOD head initialised as a copy of the classifier (model.init_ood_head=true)" in log
    assert "stage1 from epoch 0: adam at lr other 0.001 trains" in log
    # every parameter group's rate, by name, in the stage header and in each step's line
    lrs = "lr backbone 1e-05, other 0.0001, other_no_decay 0.0001"
    assert (
        f"stage2 from epoch 1: adamw at {lrs} trains" in log and f"epoch 1 it 1/1 stage2 {lrs} loss_ce" in log
    )
    assert "'class_embed2'], no clipping" in log and "[''], gradient norm clipped at 0.01" in log
    for term in ("rcl_in", "rcl_aug", "rcl_pair", "loss_ce", "loss_mask", "loss_dice"):
        assert f" {term} " in log
    model, closed = last["model"], trained["closed"]
    # The published stage 2 trains every parameter: backbone convs, decoders and both heads move.
    for key in ("backbone.stem.conv1.weight", f"{HEAD}class_embed.weight", f"{HEAD}class_embed2.weight"):
        assert not torch.equal(model[key], closed[key]), key
    assert torch.equal(
        model["backbone.stem.conv1.norm.running_mean"], closed["backbone.stem.conv1.norm.running_mean"]
    )


def test_train_resume_continues_at_the_next_epoch(trained):
    overrides = [o if o != "train.epochs=2" else "train.epochs=3" for o in trained["overrides"]]
    args = train_m2f.get_args_parser().parse_args(["--resume", *trained["argv"], *overrides])
    train_m2f.main(args)
    last = torch.load(trained["out"] / "run" / "last.pth", weights_only=True)
    assert (last["epoch"], last["stage"]) == (2, 2)
    log = (trained["out"] / "run" / "log.txt").read_text()
    assert "resumed from" in log and "epoch 2 done" in log


def test_test_script_all_benchmarks_with_heatmaps(trained, capsys):
    argv = ["--cfg", "exp/toy_m2f.yaml", "--id", "run", "--save_heatmaps", "1", "--no_progress"]
    results = test_m2f.main(test_m2f.get_args_parser().parse_intermixed_args([*argv, *trained["overrides"]]))
    run = trained["out"] / "run"
    assert list(results) == AVAILABLE
    data = read_results(run)
    assert list(data) == AVAILABLE
    for entry in data.values():
        prov = entry["provenance"]
        assert prov["weights"] == str(run / "best_AP.pth")
        assert prov["score"] == "learned" and prov["protocol"] == "published"
    assert set(data["RoadAnomaly"]) == {"protocol", "AUROC", "AP", "FPR95", "images", "provenance"}
    assert all(0.0 <= data[b]["AP"] <= 1.0 for b in AVAILABLE)
    assert "| RoadAnomaly21 |" in (run / "results.md").read_text()
    assert "| benchmark | AUROC | AP | FPR95 | images |" in capsys.readouterr().out
    for name in AVAILABLE:
        assert len(list((run / "heatmaps" / name).glob("*_heatmap.png"))) == 1
    assert "testing " in (run / "test_log.txt").read_text()


def test_test_script_named_benchmark_and_score(trained):
    base = ["--cfg", "exp/toy_m2f.yaml", "--id", "named", "--no_progress", *trained["overrides"]]
    weights = str(trained["out"] / "run" / "last.pth")
    args = test_m2f.get_args_parser().parse_intermixed_args(
        [*base, "--weight_path", weights, "--test_dataset", "RoadAnomaly", "eval.score=maxlogit"]
    )
    assert list(test_m2f.main(args)) == ["RoadAnomaly"]
    assert read_results(trained["out"] / "named")["RoadAnomaly"]["provenance"]["score"] == "maxlogit"
    args = test_m2f.get_args_parser().parse_intermixed_args(
        [*base, "--weight_path", weights, "--test_dataset", "MUAD"]
    )
    with pytest.raises(FileNotFoundError, match="MUAD_challenge"):
        test_m2f.main(args)
