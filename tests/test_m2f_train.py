"""Mask2Former train step (``m2f_rcl``) and two-stage training of the tiny Mask2Anomaly on fixture data.

Checks the step's named terms per stage against the criterion and the test-time anomaly score,
which parameters receive gradients, the stage optimizers' groups (backbone lr, no decay for norms
and embeddings), the loss falling on a fixed batch in each stage, and exact resume of ``fit``.
"""

import copy

import pytest
import torch

from lib.config import Config, load_config
from lib.data.multishift import MultiShiftPairs
from lib.engine.distributed import DistInfo
from lib.engine.logging_utils import setup_logging
from lib.engine.m2f_step import (
    Mask2AnomalyRCLStep,
    Mask2FormerSetStep,
    build_m2f_step,
    build_set_criterion,
    float_outputs,
)
from lib.engine.optim import build_optimizer
from lib.engine.stages import apply_stage, stages_from_config
from lib.engine.steps import build_train_step
from lib.engine.trainer import LAST, fit
from lib.labels import ANOMALY, IGNORE
from lib.losses import relative_contrastive_terms
from lib.models import build_model
from tests.data_fixtures import train_label, write_cityscapes, write_multishift

CPU = DistInfo(0, 1, torch.device("cpu"))
TINY = ["model.name=mask2anomaly_tiny", "loss.num_points=256", "train.epochs=2", "train.warmup_epoch=1"]
OOD_HEAD = {"sem_seg_head.predictor.class_embed2.weight", "sem_seg_head.predictor.class_embed2.bias"}


def _cfg(*overrides):
    return load_config(Config, "exp/M2F.yaml", [*TINY, *overrides])


def _batch(b=2, h=24, w=40):
    g = torch.Generator().manual_seed(1)
    labels = torch.stack([torch.from_numpy(train_label(h, w, 7 + i, anomaly=True)) for i in range(2 * b)])
    images = torch.randn(2 * b, 3, h, w, generator=g)
    return {"image": images[:b], "aug_image": images[b:], "label": labels[:b], "aug_label": labels[b:]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model("mask2anomaly_tiny").train()
    return cfg, model, stages_from_config(cfg)


def _grads(model, terms):
    model.zero_grad(set_to_none=True)
    terms["loss"].backward()
    return {n for n, p in model.named_parameters() if p.grad is not None}


def test_registered_and_built_from_config(setup):
    cfg = setup[0]
    step = build_train_step(cfg)
    assert isinstance(step, Mask2AnomalyRCLStep) and step.find_unused_parameters
    crit = step.criterion
    assert crit.base_weights == {"loss_ce": 5.0, "loss_mask": 10.0, "loss_dice": 10.0, "loss_ood": 1.0}
    assert crit.empty_weight[-1] == pytest.approx(0.1) and crit.empty_weight[:-1].eq(1).all()
    assert (crit.matcher.cost_class, crit.matcher.cost_mask, crit.matcher.cost_dice) == (5.0, 10.0, 10.0)
    assert crit.ood_margins == (0.7, 0.5, 0.2) and not crit.deep_supervision and crit.num_points == 256
    assert build_set_criterion(_cfg("loss.deep_supervision=true")).deep_supervision
    assert crit.low_loss_keep_ratio == 0.95
    assert build_set_criterion(_cfg("loss.selection_ratio=0.8")).low_loss_keep_ratio == 0.8


def test_config_errors():
    with pytest.raises(ValueError, match=r"loss.selection_ratio must be in \(0, 1\], got 1.5"):
        build_m2f_step(_cfg("loss.selection_ratio=1.5"))
    with pytest.raises(ValueError, match="loss.margins: expected 3 values"):  # the config checks it
        build_m2f_step(_cfg("loss.margins=[0.7,0.5]"))


def test_stage1_is_the_rcl_on_the_test_time_anomaly_score(setup):
    cfg, model, (stage1, _) = setup
    batch = _batch()
    apply_stage(model, stage1)
    terms = Mask2AnomalyRCLStep(
        criterion=build_set_criterion(cfg),
        margins=(0.7, 0.5, 0.2),
        generator=torch.Generator().manual_seed(3),
    )(model, batch, stage=stage1)
    assert set(terms) == {"rcl_in", "rcl_aug", "rcl_pair", "loss"}
    assert all(v.dtype == torch.float32 and v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["rcl_in"] + terms["rcl_aug"] + terms["rcl_pair"])
    with torch.no_grad():
        anomaly, _ = copy.deepcopy(model).eval()(torch.cat([batch["image"], batch["aug_image"]]))
    labels = torch.cat([batch["label"], batch["aug_label"]]).long()
    expected = relative_contrastive_terms(anomaly, labels, (0.7, 0.5, 0.2), torch.Generator().manual_seed(3))
    for name, value in expected.items():
        torch.testing.assert_close(terms[name].detach(), value, rtol=1e-5, atol=1e-6)
    assert _grads(model, terms) == OOD_HEAD


def test_stage1_without_anomaly_pixels_keeps_a_zero_loss_in_the_graph(setup):
    cfg, model, (stage1, _) = setup
    batch = _batch()
    batch["label"] = torch.full_like(batch["label"], IGNORE)  # no pixel known in both, no anomaly
    batch["aug_label"] = torch.zeros_like(batch["aug_label"])
    apply_stage(model, stage1)
    terms = build_m2f_step(cfg)(model, batch, stage=stage1)
    assert set(terms) == {"loss"} and terms["loss"].item() == 0.0 and terms["loss"].requires_grad


def test_stage2_set_criterion_terms_and_generated_flags(setup, monkeypatch):
    cfg, model, (_, stage2) = setup
    apply_stage(model, stage2)
    step = build_m2f_step(cfg)
    seen = {}
    original = step.criterion.terms

    def spy(outputs, labels, *, generated, generator):
        seen["generated"] = generated.tolist()
        seen["masks_dtype"] = outputs["pred_masks"].dtype
        return original(outputs, labels, generated=generated, generator=generator)

    monkeypatch.setattr(step.criterion, "terms", spy)
    terms = step(model, _batch(), stage=stage2)
    assert seen == {"generated": [False, False, True, True], "masks_dtype": torch.float32}
    base = {"loss_ce", "loss_mask", "loss_dice", "rcl_in", "rcl_aug", "rcl_pair"}
    assert set(terms) == base | {"loss"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    weights = {"loss_ce": 5, "loss_mask": 10, "loss_dice": 10, "rcl_in": 1, "rcl_aug": 1, "rcl_pair": 1}
    torch.testing.assert_close(terms["loss"], sum(w * terms[k] for k, w in weights.items()))
    trained = _grads(model, terms)
    names = {n for n, _ in model.named_parameters()}
    assert trained == names  # [""]: every parameter, backbone convs and both heads included
    # Zero at initialisation only: MSDeformAttn's offset and weight projections start at zero.
    zero = {n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0}
    assert zero == {"sem_seg_head.pixel_decoder.transformer.level_embed"}


def test_stage2_deep_supervision_names_every_decoder_layer(setup):
    cfg, model, (_, stage2) = setup
    apply_stage(model, stage2)
    batch = _batch()
    terms = build_m2f_step(_cfg("loss.deep_supervision=true"))(model, batch, stage=stage2)
    with torch.no_grad():
        n_aux = len(model(batch["image"])["aux_outputs"])
    assert n_aux == 2  # tiny: the initial prediction and 2 decoder layers; the last one is the output
    aux = {k for k in terms if k.startswith("loss_") and k[-1].isdigit()}
    assert aux == {f"loss_{t}_{i}" for t in ("ce", "mask", "dice") for i in range(n_aux)}


def test_paper_stage2_keeps_the_backbone_frozen():
    cfg = load_config(Config, "exp/M2F_paper_stage2.yaml", TINY)
    model = build_model("mask2anomaly_tiny").train()
    stage2 = stages_from_config(cfg)[1]
    apply_stage(model, stage2)
    trained = _grads(model, build_m2f_step(cfg)(model, _batch(), stage=stage2))
    assert trained and all(n.startswith("sem_seg_head.") for n in trained)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_step_needs_training_mode_outputs(setup):
    cfg, model, (stage1, _) = setup
    with pytest.raises(TypeError, match="call model.train"):
        build_m2f_step(cfg)(copy.deepcopy(model).eval(), _batch(), stage=stage1)


def test_float_outputs_keep_the_shared_mask_tensor():
    masks = torch.zeros(1, 2, 4, 4, dtype=torch.bfloat16)
    aux = [{"pred_logits": torch.zeros(1, 2, 3, dtype=torch.bfloat16), "pred_masks": masks}]
    out = float_outputs({"pred_masks": masks, "pred_masks_ood": masks, "aux_outputs": aux})
    assert out["pred_masks"].dtype == torch.float32 and out["pred_masks_ood"] is out["pred_masks"]
    assert out["aux_outputs"][0]["pred_logits"].dtype == torch.float32


def test_stage_optimizers_follow_the_published_recipe(setup):
    _, model, (stage1, stage2) = setup
    model = copy.deepcopy(model)
    apply_stage(model, stage1)
    opt1 = build_optimizer(model, stage1)
    assert type(opt1) is torch.optim.Adam and (stage1.grad_clip, stage2.grad_clip) == (0.0, 0.01)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt1.param_groups] == [(1e-4, 0.0, 2)]
    apply_stage(model, stage2)
    opt2 = build_optimizer(model, stage2)
    assert type(opt2) is torch.optim.AdamW
    groups = {n: (g["lr"], g["weight_decay"]) for g in opt2.param_groups for n in g["param_names"]}
    assert set(groups) == {n for n, _ in model.named_parameters()}
    p = "sem_seg_head.predictor."
    assert groups["backbone.stem.conv1.weight"] == pytest.approx((1e-6, 0.05))
    assert groups[f"{p}class_embed2.weight"] == pytest.approx((1e-5, 0.05))
    for no_decay in (f"{p}query_feat.weight", f"{p}level_embed.weight", f"{p}decoder_norm.weight"):
        assert groups[no_decay] == pytest.approx((1e-5, 0.0))
    assert groups["sem_seg_head.pixel_decoder.adapter_1.norm.weight"] == pytest.approx((1e-5, 0.0))


@pytest.mark.parametrize(
    ("stage_index", "lr_mult", "ratio"), [(0, 30, 0.95), (1, 100, 0.9)], ids=["stage1", "stage2"]
)
def test_loss_falls_on_a_fixed_batch(setup, stage_index, lr_mult, ratio):
    cfg, model, stages = setup
    model, stage = copy.deepcopy(model), stages[stage_index]
    apply_stage(model, stage)
    optimizer = build_optimizer(model, stage)
    for group in optimizer.param_groups:
        group["lr"] *= lr_mult  # a few steps must show the trend
    batch = _batch()
    for image, label in (("image", "label"), ("aug_image", "aug_label")):  # visible anomalies
        batch[image] = torch.where((batch[label] == ANOMALY)[:, None], 3.0, batch[image])

    def loss():
        step = build_m2f_step(cfg)
        step.generator = torch.Generator().manual_seed(0)  # the same points and pairs every time
        return step(model, batch, stage=stage)["loss"]

    first = loss().item()
    for _ in range(8):
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        if stage.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], stage.grad_clip
            )
        optimizer.step()
    assert loss().item() < ratio * first


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    stems = write_cityscapes(root, per_city=2, size=(24, 40))
    write_multishift(root, stems, variants=1, size=(24, 40))
    return root


def _fit(root, out, epochs, *, resume=False):
    cfg = _cfg(
        f"data.root={root}",
        f"output_root={out}",
        "id=run",
        f"train.epochs={epochs}",
        "train.batch_size=2",
        "train.iters_per_epoch=2",
        "train.lr_update=1e-3",
        "data.val_ds=",
        "data.num_workers=0",
    )
    torch.manual_seed(0)
    model = build_model("mask2anomaly_tiny")
    data = MultiShiftPairs(root / "cityscapes", root / "multishift_cityscapes", mixup_max=0.3, seed=0)
    setup_logging(cfg.run_dir)
    fit(cfg, model=model, train_set=data, val_set=None, step=build_m2f_step(cfg), info=CPU, resume=resume)
    return model


def test_fit_both_stages_and_resume_exactly(root, tmp_path):
    full = _fit(root, tmp_path / "full", 3)
    last = torch.load(tmp_path / "full" / "run" / LAST, weights_only=True)
    assert (last["epoch"], last["stage"], last["model_name"]) == (2, 2, "mask2anomaly_tiny")
    log = (tmp_path / "full" / "run" / "log.txt").read_text()
    assert "stage1 from epoch 0" in log and "stage2 from epoch 1" in log and " loss_dice " in log
    _fit(root, tmp_path / "split", 2)
    resumed = _fit(root, tmp_path / "split", 3, resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    start = build_model("mask2anomaly_tiny").state_dict()
    changed = {k for k in start if not torch.equal(start[k], a[k])}
    assert {"backbone.stem.conv1.weight", "sem_seg_head.predictor.class_embed2.weight"} <= changed


def test_closed_world_set_step_uses_originals_only_without_ood_loss(setup):
    _, model, (stage1, _) = setup
    model = copy.deepcopy(model)
    step = build_train_step(_cfg("loss.name=m2f_set"))
    assert isinstance(step, Mask2FormerSetStep) and step.find_unused_parameters
    assert step.criterion.ood_margins is None and step.criterion.num_points == 256
    batch = _batch()
    originals = {"image": batch["image"], "label": batch["label"]}  # no twins needed
    step.generator = torch.Generator().manual_seed(0)
    terms = step(model, originals, stage=stage1)
    assert set(terms) == {"loss_ce", "loss_mask", "loss_dice", "loss"}
    expected = build_set_criterion(_cfg(), ood_loss=False).terms(
        model(batch["image"]), batch["label"].long(), generator=torch.Generator().manual_seed(0)
    )
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value)
    model.requires_grad_(True)
    assert not any(name in OOD_HEAD for name in _grads(model, terms))
    with pytest.raises(ValueError, match="without OOD loss"):
        Mask2FormerSetStep(criterion=build_set_criterion(_cfg()))


def test_closed_world_set_step_lowers_the_loss(setup):
    _, model, (_, stage2) = setup
    model = copy.deepcopy(model)
    apply_stage(model, stage2)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = _batch()
    step = build_train_step(_cfg("loss.name=m2f_set"))

    def loss():
        step.generator = torch.Generator().manual_seed(0)
        return step(model, batch, stage=stage2)["loss"]

    first = loss().item()
    for _ in range(8):
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.8 * first
