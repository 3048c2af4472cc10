"""Two-stage trainer on tiny fixture data with the light DeepLab: loss goes down, checkpoints resume
exactly (same weights and optimizer state as an uninterrupted run, within and across stages)."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lib.config import Config, load_config
from lib.data.benchmarks import build_benchmark
from lib.data.collate import collate_items
from lib.data.multishift import MultiShiftPairs
from lib.engine.distributed import DistInfo
from lib.engine.logging_utils import HPARAMS_RUN, setup_logging
from lib.engine.trainer import BEST, CONFIG_FILE, LAST, check_finite, fit
from lib.labels import IGNORE
from lib.models import build_model
from lib.models.checkpoints import MissingOODHeadError
from tests.data_fixtures import write_all_flat_benchmarks, write_cityscapes, write_multishift

CPU = DistInfo(0, 1, torch.device("cpu"))


class PairedCEStep:
    """A minimal step: CE on originals and twins (anomaly pixels ignored) + a term on the OOD head."""

    find_unused_parameters = False

    def __call__(self, model, batch, *, stage):
        images = torch.cat([batch["image"], batch["aug_image"]])
        targets = torch.cat([batch["label"], batch["aug_label"]]).long()
        anomaly, logits = model(images)
        targets = torch.where(targets >= logits.shape[1], IGNORE, targets)
        ce = F.cross_entropy(logits, targets, ignore_index=IGNORE)
        head = F.relu(anomaly + 5.0).mean()
        return {"loss": ce + head, "ce": ce, "head": head}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    stems = write_cityscapes(root, per_city=2, size=(24, 48))
    write_multishift(root, stems, variants=2, size=(24, 48))
    write_all_flat_benchmarks(root)
    return root


def _cfg(root, out, run_id, *overrides):
    return load_config(
        Config,
        "exp/DeepLab.yaml",
        [
            f"data.root={root}",
            f"output_root={out}",
            f"id={run_id}",
            "model.name=deeplab_wrn_light",
            "train.batch_size=2",
            "train.epochs=3",
            "train.warmup_epoch=1",
            "train.lr=1e-2",
            "train.lr_update=1e-2",
            "train.log_interval=1",
            "data.num_workers=0",
            *overrides,
        ],
    )


def _train_set(root):
    return MultiShiftPairs(root / "cityscapes", root / "multishift_cityscapes", mixup_max=0.3, seed=0)


def _run(cfg, root, *, resume=False, step=None, model=None):
    torch.manual_seed(0)
    model = build_model("deeplab_wrn_light") if model is None else model
    val = build_benchmark(cfg.data.val_ds, root=root) if cfg.data.val_ds else None
    setup_logging(cfg.run_dir)
    summary = fit(
        cfg,
        model=model,
        train_set=_train_set(root),
        val_set=val,
        step=step or PairedCEStep(),
        info=CPU,
        resume=resume,
        progress=False,
    )
    return model, summary


def _fixed_batch_loss(model, batch):
    model = copy.deepcopy(model).train()
    with torch.no_grad():
        return float(PairedCEStep()(model, batch, stage=None)["loss"])


@pytest.fixture(scope="module")
def full_run(root, tmp_path_factory):
    """An uninterrupted 3-epoch run (stage 1 = epoch 0, stage 2 = epochs 1-2) with validation."""
    out = tmp_path_factory.mktemp("runs")
    cfg = _cfg(root, out, "full")
    torch.manual_seed(0)
    model = build_model("deeplab_wrn_light")
    start = copy.deepcopy(model.state_dict())
    data = _train_set(root)
    batch = collate_items([data[0], data[1]])
    before = _fixed_batch_loss(model, batch)
    model, summary = _run(cfg, root, model=model)
    return {"cfg": cfg, "model": model, "summary": summary, "start": start, "batch": batch, "before": before}


def test_fit_lowers_loss_trains_both_stages_and_writes_checkpoints(full_run):
    model, cfg, start = full_run["model"], full_run["cfg"], full_run["start"]
    assert _fixed_batch_loss(model, full_run["batch"]) < full_run["before"]
    end = model.state_dict()
    changed = {k.split(".")[0] for k in start if k.endswith("weight") and not torch.equal(start[k], end[k])}
    # Stage 2 trains aspp/bot_*/ood_head; the trunk and classifier weights stay (BN stats move).
    assert changed == {"aspp", "bot_fine", "bot_aspp", "ood_head"}
    assert torch.equal(start["final.6.weight"], end["final.6.weight"])
    run = cfg.run_dir
    assert (run / CONFIG_FILE).is_file() and (run / BEST).is_file() and (run / "log.txt").is_file()
    last = torch.load(run / LAST, weights_only=True)
    assert (last["epoch"], last["stage"], last["model_name"]) == (2, 2, "deeplab_wrn_light")
    assert last["config"]["train"]["warmup_epoch"] == 1
    assert set(last["metrics"]) == {"AUROC", "AP", "FPR95"}
    assert last["extra"]["best_AP"] == pytest.approx(full_run["summary"]["best_AP"])
    best = torch.load(run / BEST, weights_only=True)
    assert best["metrics"]["AP"] == pytest.approx(full_run["summary"]["best_AP"])
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    log = (run / "log.txt").read_text()
    assert "TensorBoard scalars: on" in log
    assert (
        "stage1 from epoch 0" in log and "stage2 from epoch 1" in log and "validation on RoadAnomaly21" in log
    )
    # no DeepLab parameter is named backbone: its groups are "other" (and BatchNorm's "other_no_decay")
    assert "stage1 from epoch 0: adam at lr other 0.01 trains" in log
    assert "epoch 2 it 1/1 stage2 lr other 0.01, other_no_decay 0.01 loss " in log


def test_tensorboard_holds_config_heatmaps_and_hparams(full_run):
    """Read back with tensorboard's own event reader: the resolved config as text, the heat-map
    panels of the same first validation images at every validation, hyper-parameters with the final
    metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg, summary = full_run["cfg"], full_run["summary"]
    events = EventAccumulator(str(cfg.run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    # Validation after every epoch (val_interval 1): the first val_heatmaps images, each at every epoch.
    assert cfg.train.val_heatmaps == 2
    image_tags = sorted(tags["images"])
    assert len(image_tags) == 2 and all(t.startswith("val_heatmaps/") for t in image_tags)
    for tag in image_tags:
        shots = events.Images(tag)
        assert [s.step for s in shots] == [0, 1, 2]
        with Image.open(io.BytesIO(shots[0].encoded_image_string)) as png:
            assert png.width == 1400 and png.height > 300  # the panel figure, not a thumbnail
    (text,) = [events.Tensors(t)[0] for t in tags["tensors"] if t.startswith("config")]
    shown = text.tensor_proto.string_val[0].decode()
    assert "train:" in shown and "val_heatmaps: 2" in shown and f"id: {cfg.id}" in shown
    hparams = EventAccumulator(str(cfg.run_dir / "tensorboard" / HPARAMS_RUN))
    hparams.Reload()
    content = hparams.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = session.session_start_info.hparams
    assert (
        values["train.epochs"].number_value == 3 and values["model.name"].string_value == "deeplab_wrn_light"
    )
    assert values["loss.margins"].string_value.startswith("[")
    final = {t: hparams.Scalars(t)[-1].value for t in hparams.Tags()["scalars"]}
    assert final["final/best_AP"] == pytest.approx(summary["best_AP"], rel=1e-6)
    assert set(final) == {"final/best_AP", *(f"final/{k}" for k in summary["last_metrics"])}


@pytest.mark.parametrize("split_after", [1, 2], ids=["resume-at-stage-change", "resume-within-stage2"])
def test_resume_matches_uninterrupted_run(root, tmp_path, full_run, split_after):
    _run(_cfg(root, tmp_path, "split", f"train.epochs={split_after}"), root)
    first = torch.load(tmp_path / "split" / LAST, weights_only=True)
    assert (first["epoch"], first["stage"]) == (split_after - 1, 1 if split_after == 1 else 2)
    resumed, _ = _run(_cfg(root, tmp_path, "split"), root, resume=True)
    a, b = full_run["model"].state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    full_last = torch.load(full_run["cfg"].run_dir / LAST, weights_only=True)
    split_last = torch.load(tmp_path / "split" / LAST, weights_only=True)
    opt_a, opt_b = full_last["optimizer"], split_last["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for k, state in opt_a["state"].items():
        assert all(torch.equal(state[n], opt_b["state"][k][n]) for n in state)
    assert split_last["extra"]["best_AP"] == full_last["extra"]["best_AP"]
    log = (tmp_path / "split" / "log.txt").read_text()
    assert f"resumed from {tmp_path / 'split' / LAST}: epoch {split_after - 1} done" in log


def test_resume_names_the_groups_of_an_optimizer_state_saved_without_names(root, tmp_path):
    _run(_cfg(root, tmp_path, "old", "train.epochs=2", "data.val_ds="), root)
    last = torch.load(tmp_path / "old" / LAST, weights_only=True)
    for group in last["optimizer"]["param_groups"]:
        del group["name"]
    torch.save(last, tmp_path / "old" / LAST)
    _run(_cfg(root, tmp_path, "old", "data.val_ds="), root, resume=True)
    assert (
        "epoch 2 it 1/1 stage2 lr other 0.01, other_no_decay 0.01 loss "
        in (tmp_path / "old" / "log.txt").read_text()
    )
    names = [
        g["name"] for g in torch.load(tmp_path / "old" / LAST, weights_only=True)["optimizer"]["param_groups"]
    ]
    assert names == ["other", "other_no_decay"]


def test_resume_without_checkpoint(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no last.pth in"):
        _run(_cfg(root, tmp_path, "none", "data.val_ds="), root, resume=True)


def test_resume_refuses_a_checkpoint_without_ood_head(root, tmp_path):
    cfg = _cfg(root, tmp_path, "closed", "data.val_ds=")
    state = build_model("deeplab_wrn_light").state_dict()
    (tmp_path / "closed").mkdir()
    torch.save(
        {"model": {k: v for k, v in state.items() if k != "ood_head.weight"}}, tmp_path / "closed" / LAST
    )
    with pytest.raises(MissingOODHeadError, match=r"missing keys \(1\): ood_head\.weight"):
        _run(cfg, root, resume=True)


def test_non_finite_loss_names_the_term():
    terms = {"loss": torch.tensor(math.nan), "ce": torch.tensor(1.0), "rcl": torch.tensor(math.inf)}
    with pytest.raises(FloatingPointError, match=r"at epoch 3, iteration 7: loss=nan, rcl=inf"):
        check_finite(terms, "at epoch 3, iteration 7")
    check_finite({"loss": torch.tensor(2.0)}, "anywhere")
