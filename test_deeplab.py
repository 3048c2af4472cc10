"""Test a MultiShiftSeg DeepLabv3+ on the anomaly-segmentation benchmarks.

    python test_deeplab.py --cfg exp/DeepLab.yaml --id X --weight_path W [--test_dataset RoadAnomaly]
        [--export smiyc|fishyscapes DIR [--overwrite]] [section.key=value ...]

Without ``--test_dataset`` every benchmark of ``eval.datasets`` whose folder exists under
``data.root`` is tested (missing ones are skipped with a warning). Without ``--weight_path`` the
run's own ``output_root/id/best_AP.pth`` is used. Prints a Markdown table, merges each benchmark's
result (with its provenance) into ``results.json`` / ``results.md`` as soon as it is done (other
benchmarks of an earlier run under the same id are kept) and writes ``curves_<benchmark>.png``
(and heat maps with ``--save_heatmaps N``) to ``output_root/id``. ``--export smiyc DIR`` also
writes SegmentMeIfYouCan HDF5 score files of every frame of the SMIYC tracks (labelled or not)
under ``DIR/anomaly_p/<id>/``; ``--export fishyscapes DIR`` writes
``DIR/<benchmark>/<index>_anomaly.npy`` and ``<index>_segmentation.npy``; a folder already holding
score files is refused unless ``--overwrite``. ``eval.protocol``, ``eval.score``,
``eval.per_image`` and ``eval.postprocess`` choose how the numbers are computed; the table says
which.
"""

from __future__ import annotations

import argparse

from lib.cli_errors import run_cli
from lib.engine.cli import test_main, test_parser


def get_args_parser() -> argparse.ArgumentParser:
    return test_parser("Test MultiShiftSeg DeepLabv3+ on anomaly benchmarks.")


def main(args: argparse.Namespace) -> dict:
    return test_main(args)


if __name__ == "__main__":
    run_cli(main, get_args_parser(), intermixed=True)
