"""Outlier-exposure-only baseline: the in-vs-out term's exact value, the step's total, and the unpaired
training set read through the real Cityscapes loader."""

import numpy as np
import pytest
import torch

from lib.config import Config, load_config
from lib.engine.baseline_steps import OutlierExposureStep
from lib.engine.builders import build_unpaired_train_set
from lib.engine.stages import stages_from_config
from lib.engine.steps import build_train_step
from lib.labels import ANOMALY, IGNORE
from lib.losses import in_distribution_cross_entropy, relative_contrastive_terms
from lib.toy.writers import write_outlier_bank, write_source_dataset


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
    step.generator = torch.Generator().manual_seed(0)
    terms = step(_Fixed(score, logits), {"image": torch.zeros(2, 3, 6, 8), "label": label}, stage=stage)
    assert set(terms) == {"ce_orig", "rcl_in", "loss"}
    ce = in_distribution_cross_entropy(logits, torch.where(label == ANOMALY, IGNORE, label))
    assert terms["ce_orig"].item() == pytest.approx(ce.item(), rel=1e-6)
    margins = tuple(cfg.loss.margins)
    rcl = relative_contrastive_terms(score, label, margins, torch.Generator().manual_seed(0), twins=False)[
        "rcl_in"
    ]
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
