"""``python -m lib.data.coco_ood --coco ROOT``: write the COCO outlier-object mask bank."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lib.cli_errors import run_cli
from lib.data.coco_ood import EXCLUDED_CLASSES, MASK_DIR, log
from lib.data.coco_ood.mask_bank import write_mask_bank


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write COCO outlier-object masks for outlier exposure.")
    parser.add_argument("--coco", required=True, help="COCO root holding train2017/ and annotations/")
    parser.add_argument(
        "--exclude", nargs="*", default=list(EXCLUDED_CLASSES), help="COCO classes to leave out"
    )
    parser.add_argument("--min-size", type=int, default=480, help="skip images smaller than this on a side")
    return parser


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    count = write_mask_bank(args.coco, exclude=args.exclude, min_size=args.min_size)
    log.info("%d object masks in %s", count, Path(args.coco) / MASK_DIR)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
