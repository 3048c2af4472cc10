"""Test a MultiShiftSeg Mask2Former (Mask2Anomaly R50) on the anomaly-segmentation benchmarks.

    python test_m2f.py --cfg exp/M2F.yaml --id X --weight_path W [--test_dataset RoadAnomaly]
        [--export smiyc|fishyscapes DIR] [section.key=value ...]

Benchmarks, outputs, ``--export`` and the ``eval.*`` switches are those of ``test_deeplab.py``
(shared in :mod:`lib.engine.cli`).

``eval.score=learned`` (default) is the OOD head's mask-based score
``1 - max_c Σ_q softmax(class_ood) · sigmoid(mask)``. The model's "logits" are the closed-world
head's mask-classification scores ``s_c`` (values in ``[0, Q]``), so ``eval.score=mask_confidence``
is Mask2Anomaly's score ``1 - max_c s_c`` and ``eval.score=rba`` is RbA's ``-Σ_c tanh(s_c)``
(see :mod:`lib.scores_m2f`).
"""

from __future__ import annotations

import argparse

from lib.cli_errors import run_cli
from lib.engine.cli import test_main, test_parser


def get_args_parser() -> argparse.ArgumentParser:
    return test_parser("Test MultiShiftSeg Mask2Former on anomaly benchmarks.")


def main(args: argparse.Namespace) -> dict:
    return test_main(args)


if __name__ == "__main__":
    run_cli(main, get_args_parser(), intermixed=True)
