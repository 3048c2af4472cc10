"""Outlier-exposure-only baseline: the in-vs-out term's exact value, the step's total, and the unpaired
training set read through the real Cityscapes loader."""

import numpy as np
import pytest
import torch

from lib.config import Config, load_config
from lib.engine.baseline_steps import OutlierExposureStep, in_out_contrastive_term
from lib.engine.builders import build_unpaired_train_set
from lib.engine.stages import stages_from_config
from lib.engine.steps import build_train_step
from lib.labels import ANOMALY, IGNORE
from lib.losses import in_distribution_cross_entropy
from lib.toy.writers import write_outlier_bank, write_source_dataset


def test_in_out_term_single_pair_is_the_hinge():
    score = torch.tensor([[[1.0, 4.0, 0.0]]])
    targets = torch.tensor([[[3, ANOMALY, IGNORE]]])
    term = in_out_contrastive_term(score, targets, 5.0, num_classes=19)
    assert term.item() == pytest.approx(max(0.0, 1.0 + 5.0 - 4.0))


def test_in_out_term_equal_sets_is_the_mean_over_a_permutation_pairing():
    score = torch.tensor([[[0.0, 1.0, 10.0, 30.0]]])
    targets = torch.tensor([[[0, 1, ANOMALY, ANOMALY]]])
    torch.manual_seed(0)
    term = in_out_contrastive_term(score, targets, 15.0, num_classes=19).item()
    # every pairing of {0, 1} with {10, 30}: hinge sums (5 + 0) or (6 + 0) / 2 pairs.
    assert term in (pytest.approx(2.5), pytest.approx(3.0))
    assert in_out_contrastive_term(score, torch.zeros_like(targets), 1.0, num_classes=19) is None


class _Fixed(torch.nn.Module):
    def __init__(self, score, logits):
        super().__init__()
        self.score, self.logits = score, logits

    def forward(self, x):
        return self.score, self.logits


def test_oe_step_total_is_weighted_ce_plus_rcl_in():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 19, 6, 8, generator=g)
    score = torch.randn(2, 6, 8, generator=g)
    label = torch.randint(0, 19, (2, 6, 8), generator=g)
    label[0, :2, :2] = ANOMALY
    label[1, 0] = IGNORE
    cfg = load_config(Config, "exp/toy_oe.yaml")
    step = build_train_step(cfg)
    assert isinstance(step, OutlierExposureStep)
    stage = stages_from_config(cfg)[0]
    torch.manual_seed(0)
    terms = step(_Fixed(score, logits), {"image": torch.zeros(2, 3, 6, 8), "label": label}, stage=stage)
    assert set(terms) == {"ce_orig", "rcl_in", "loss"}
    ce = in_distribution_cross_entropy(logits, torch.where(label == ANOMALY, IGNORE, label))
    assert terms["ce_orig"].item() == pytest.approx(ce.item(), rel=1e-6)
    torch.manual_seed(0)
    rcl = in_out_contrastive_term(score, label, cfg.loss.margins[0], num_classes=19)
    assert terms["rcl_in"].item() == pytest.approx(rcl.item(), rel=1e-6)
    expected = cfg.loss.ce_weights[0] * ce + rcl
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    no_anomaly = {"image": torch.zeros(2, 3, 6, 8), "label": torch.where(label == ANOMALY, 0, label)}
    terms = step(_Fixed(score, logits), no_anomaly, stage=stage)
    assert set(terms) == {"ce_orig", "loss"}
    assert terms["loss"].item() == pytest.approx(cfg.loss.ce_weights[0] * terms["ce_orig"].item())


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_source_dataset(root, n_train=3, n_val=0, height=64, width=128, seed=0)
    write_outlier_bank(root, n_objects=3, seed=0)
    return root


@pytest.mark.parametrize("ood_prob", [0.0, 1.0])
def test_unpaired_train_set_crops_and_pastes(toy_root, ood_prob):
    cfg = load_config(Config, "exp/toy_oe.yaml", [f"data.root={toy_root}", f"data.ood_prob={ood_prob}"])
    dataset = build_unpaired_train_set(cfg)
    assert len(dataset) == 3
    item = dataset[0]
    assert item["image"].shape == (3, cfg.data.crop_size, cfg.data.crop_size)
    assert item["label"].dtype == torch.int64
    values = set(np.unique(item["label"].numpy()).tolist())
    assert (ANOMALY in values) == (ood_prob == 1.0)
