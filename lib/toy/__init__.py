"""ToyShift: procedural street scenes with controlled semantic and covariate shift.

Public interface (stable; the ``procedural`` generation backend and the demo build on it):
``sample_scene``, ``Domain``, ``SOURCE_DOMAIN``, ``PRESETS``, ``sample_shifted_domain``,
``domain_from_prompt``, ``render``, ``TRAIN_FAMILIES``, ``TEST_FAMILIES``, ``FAMILY_ADE_INDEX``,
``sample_anomaly_mask``, ``place_anomaly`` and the writers.
"""

from lib.toy.anomalies import (
    FAMILY_ADE_INDEX,
    TEST_FAMILIES,
    TRAIN_FAMILIES,
    place_anomaly,
    sample_anomaly_mask,
)
from lib.toy.domains import PRESETS, SOURCE_DOMAIN, Domain, domain_from_prompt, sample_shifted_domain
from lib.toy.render import render
from lib.toy.scenes import sample_scene
from lib.toy.writers import write_benchmark, write_outlier_bank, write_source_dataset

__all__ = [
    "FAMILY_ADE_INDEX",
    "PRESETS",
    "SOURCE_DOMAIN",
    "TEST_FAMILIES",
    "TRAIN_FAMILIES",
    "Domain",
    "domain_from_prompt",
    "place_anomaly",
    "render",
    "sample_anomaly_mask",
    "sample_scene",
    "sample_shifted_domain",
    "write_benchmark",
    "write_outlier_bank",
    "write_source_dataset",
]
