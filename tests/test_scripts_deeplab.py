"""train_deeplab.py and test_deeplab.py end to end on tiny fixture trees with the light DeepLab.

Training starts from a closed-world checkpoint in NVIDIA's layout (``state_dict`` wrapper,
``module.`` prefixes, no OOD head), pastes COCO outliers, runs both stages with the relative
contrastive loss and resumes; testing reads the run's best checkpoint.
"""

import pytest
import torch

import test_deeplab
import train_deeplab
from lib.models import build_model
from lib.models.checkpoints import MissingOODHeadError, WrongModelError
from lib.results import read_results
from lib.toy.writers import write_outlier_bank, write_source_dataset
from tests.data_fixtures import write_training_tree

LIGHT = [
    "model.name=deeplab_wrn_light",
    "data.num_workers=0",
    "data.crop_size=24",
    "data.scale_range=[0.75,1.0]",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    out = tmp_path_factory.mktemp("outputs")
    write_training_tree(root)
    closed = build_model("deeplab_wrn_light").state_dict()
    weights = tmp_path_factory.mktemp("weights") / "closed_world.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in closed.items() if k != "ood_head.weight"}}, weights
    )
    overrides = [
        f"data.root={root}",
        f"output_root={out}",
        "train.batch_size=2",
        "train.epochs=2",
        "train.warmup_epoch=1",
        *LIGHT,
    ]
    argv = ["--cfg", "exp/DeepLab.yaml", "--id", "run", "--weight_path", str(weights), "--no_progress"]
    summary = train_deeplab.main(train_deeplab.get_args_parser().parse_args([*argv, *overrides]))
    return {
        "root": root,
        "out": out,
        "closed": closed,
        "summary": summary,
        "argv": argv,
        "overrides": overrides,
    }


def test_train_writes_checkpoints_from_closed_world_weights(trained):
    run = trained["out"] / "run"
    last = torch.load(run / "last.pth", weights_only=True)
    assert (last["epoch"], last["stage"]) == (1, 2)
    assert last["config"]["model"]["name"] == "deeplab_wrn_light"
    assert (run / "best_AP.pth").is_file() and (run / "config.yaml").is_file()
    log = (run / "log.txt").read_text()
    assert "OOD head initialised as a copy of the classifier" in log
    for term in ("ce_orig", "ce_gen", "rcl_in", "rcl_aug", "rcl_pair"):
        assert f" {term} " in log
    # Stage 1 started from the classifier copy; the trunk is untouched by both stages.
    assert torch.equal(last["model"]["mod1.conv1.weight"], trained["closed"]["mod1.conv1.weight"])
    assert not torch.equal(last["model"]["ood_head.weight"], trained["closed"]["final.6.weight"])


def test_train_resume_continues_at_the_next_epoch(trained):
    overrides = [o if o != "train.epochs=2" else "train.epochs=3" for o in trained["overrides"]]
    args = train_deeplab.get_args_parser().parse_args(["--resume", *trained["argv"], *overrides])
    train_deeplab.main(args)
    last = torch.load(trained["out"] / "run" / "last.pth", weights_only=True)
    assert (last["epoch"], last["stage"]) == (2, 2)
    log = (trained["out"] / "run" / "log.txt").read_text()
    assert "resumed from" in log and "epoch 2 done" in log


def test_test_script_all_benchmarks_with_heatmaps(trained, capsys, caplog):
    argv = ["--cfg", "exp/DeepLab.yaml", "--id", "run", "--save_heatmaps", "1", "--no_progress"]
    args = test_deeplab.get_args_parser().parse_intermixed_args([*argv, *trained["overrides"]])
    results = test_deeplab.main(args)
    run = trained["out"] / "run"
    available = ["RoadAnomaly", "RoadAnomaly21", "RoadObstacle21", "FS_LostAndFound", "FS_Static"]
    assert list(results) == available
    data = read_results(run)
    assert list(data) == available
    assert all(data[b]["provenance"]["weights"] == str(run / "best_AP.pth") for b in available)
    assert set(data["RoadAnomaly"]) == {"protocol", "AUROC", "AP", "FPR95", "images", "provenance"}
    assert all(0.0 <= data[b]["AP"] <= 1.0 for b in available)
    table = (run / "results.md").read_text()
    assert "| RoadAnomaly21 |" in table and "recall closest to 0.95" in table
    assert "| benchmark | AUROC | AP | FPR95 | images |" in capsys.readouterr().out
    for name in available:
        assert len(list((run / "heatmaps" / name).glob("*_heatmap.png"))) == 1
    log = (run / "test_log.txt").read_text()
    assert "skipping ACDC_POC: dataset folder not found" in log


def test_test_script_refuses_a_checkpoint_without_ood_head(trained):
    """The closed-world weights training started from cannot be tested as if they had a learned head."""
    closed = trained["argv"][trained["argv"].index("--weight_path") + 1]
    base = ["--cfg", "exp/DeepLab.yaml", "--id", "closed", "--no_progress", *trained["overrides"]]
    args = test_deeplab.get_args_parser().parse_intermixed_args(
        [*base, "--weight_path", closed, "--test_dataset", "RoadAnomaly"]
    )
    with pytest.raises(MissingOODHeadError, match=r"(?s)closed_world\.pth has no OOD head.*ood_head\.weight"):
        test_deeplab.main(args)
    assert not (trained["out"] / "closed" / "results.json").exists()


def test_closed_world_weights_are_tested_with_a_classifier_score(trained):
    """A baseline score that reads only the classifier (msp) may test the closed-world weights: the
    missing head is filled in (and logged) but never scored."""
    closed = trained["argv"][trained["argv"].index("--weight_path") + 1]
    base = ["--cfg", "exp/DeepLab.yaml", "--id", "closed_msp", "--no_progress", *trained["overrides"]]
    args = test_deeplab.get_args_parser().parse_intermixed_args(
        [*base, "--weight_path", closed, "--test_dataset", "RoadAnomaly", "eval.score=msp"]
    )
    result = test_deeplab.main(args)
    assert 0.0 <= result["RoadAnomaly"]["AP"] <= 1.0
    assert (
        "has no OOD head: ood_head.weight starts as a copy"
        in (trained["out"] / "closed_msp" / "test_log.txt").read_text()
    )


def test_test_script_refuses_a_config_that_names_another_model(trained):
    """The run's checkpoint names the model it trained (deeplab_wrn_light); exp/DeepLab.yaml names the
    full deeplab_wrn38: the error says which is which before any benchmark is read."""
    overrides = [o for o in trained["overrides"] if not o.startswith("model.name=")]
    base = ["--cfg", "exp/DeepLab.yaml", "--id", "other", "--no_progress", *overrides]
    weights = str(trained["out"] / "run" / "last.pth")
    args = test_deeplab.get_args_parser().parse_intermixed_args([*base, "--weight_path", weights])
    with pytest.raises(WrongModelError, match="'deeplab_wrn_light' model .* model.name is 'deeplab_wrn38'"):
        test_deeplab.main(args)
    assert not (trained["out"] / "other" / "results.json").exists()


def test_test_script_named_benchmark(trained):
    base = ["--cfg", "exp/DeepLab.yaml", "--id", "named", "--no_progress", *trained["overrides"]]
    weights = str(trained["out"] / "run" / "last.pth")
    args = test_deeplab.get_args_parser().parse_intermixed_args(
        [*base, "--weight_path", weights, "--test_dataset", "RoadAnomaly", "eval.score=msp"]
    )
    results = test_deeplab.main(args)
    assert list(results) == ["RoadAnomaly"]
    assert read_results(trained["out"] / "named")["RoadAnomaly"]["provenance"]["score"] == "msp"
    args = test_deeplab.get_args_parser().parse_intermixed_args(
        [*base, "--weight_path", weights, "--test_dataset", "MUAD"]
    )
    with pytest.raises(FileNotFoundError, match="MUAD_challenge"):
        test_deeplab.main(args)


def test_train_script_trains_the_unpaired_recipes_ce_then_oe(tmp_path):
    """Closed-world pretraining (``loss.name: ce``) and outlier exposure (``oe``) from train_deeplab.py
    on a ToyShift tree that has no generated twins: each recipe reads its own training set."""
    root, out = tmp_path / "datasets", tmp_path / "outputs"
    write_source_dataset(root, n_train=2, n_val=0, height=32, width=64, seed=0)
    write_outlier_bank(root, n_objects=2, seed=0)
    common = [f"data.root={root}", f"output_root={out}", "train.batch_size=2", "train.epochs=2", *LIGHT]
    common += ["train.warmup_epoch=1", "train.iters_per_epoch=1", "data.val_ds=", "--no_progress"]
    parser = train_deeplab.get_args_parser()
    train_deeplab.main(parser.parse_args(["--cfg", "exp/toy_pretrain.yaml", "--id", "ce", *common]))
    closed = out / "ce" / "last.pth"
    assert torch.load(closed, weights_only=True)["epoch"] == 1
    assert " ce " in (out / "ce" / "log.txt").read_text()
    argv = ["--cfg", "exp/toy_oe.yaml", "--id", "oe", "--weight_path", str(closed)]
    train_deeplab.main(parser.parse_args([*argv, "data.ood_prob=1", *common]))
    last = torch.load(out / "oe" / "last.pth", weights_only=True)
    assert (last["epoch"], last["stage"]) == (1, 2)
    log = (out / "oe" / "log.txt").read_text()
    assert " ce_orig " in log and " rcl_in " in log  # pasted outliers give the in-vs-out term
