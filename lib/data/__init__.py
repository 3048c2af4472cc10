"""Datasets and joint transforms. Every dataset takes its root explicitly (the config's
``data.root``, default ``./datasets``); a missing folder is an error that shows this tree::

    datasets/
      cityscapes/                                   training source (Cityscapes, official layout)
        leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
        gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png
                                     (from *_labelIds.png: cityscapesscripts' csCreateTrainIdLabelImgs)
      multishift_cityscapes/                        CG-Aug output, same layout; stems may carry a suffix
        leftImg8bit/train/{city}/{city}_{seq}_{frame}[_{domain}]_leftImg8bit.png
        gtFine/train/{city}/{city}_{seq}_{frame}[_{domain}]_gtFine_labelTrainIds.png   trainIds + 254
      coco/                                         outlier objects (outlier exposure)
        train2017/{stem}.jpg
        annotations/instances_train2017.json
        ood_seg_train2017/{stem}_{ann_id}.png       by `python -m lib.data.coco_ood --coco datasets/coco`
      road_anomaly/            original/*.jpg, labels/*.png                                RoadAnomaly
      dataset_AnomalyTrack/    images/*.jpg, labels_masks/*_labels_semantic.png            RoadAnomaly21
      dataset_ObstacleTrack/   images/*.webp, labels_masks/*_labels_semantic.png           RoadObstacle21
      fs_lost_and_found/       original/*.png, labels/*.png                                FS_LostAndFound
      fs_static/               original/*.png, labels/*.png                                FS_Static
      acdc_poc/                                                                            ACDC_POC
        rgb_anon_trainvaltest/rgb_anon/{fog,night,rain,snow}/val/{seq}/*.png   (or the release's .npz)
        gt_trainval/gt/{fog,night,rain,snow}/val/{seq}/*.png
      MUAD_challenge/test_sets/test_OOD/  leftImg8bit/*.png, leftLabel/*.png               MUAD
      toy_anomaly/, toy_shift/, toy_covariate/  leftImg8bit/*.png, leftLabel/*.png         ToyShift test sets

Public interface: :class:`CityscapesSeg` (closed-world items), :class:`MultiShiftPairs`
(original + generated training pairs), :class:`OutlierObjects`, :func:`build_benchmark` /
:data:`BENCHMARKS`, :func:`collate_items`, the transforms in :mod:`lib.data.transforms`, and
their crop-early execution in :mod:`lib.data.crop_early`.
"""

from lib.data.benchmarks import BENCHMARKS, DEFAULT_ROOT, AnomalyBenchmark, build_benchmark
from lib.data.cityscapes import CityscapesSeg
from lib.data.coco_ood import OutlierObjects
from lib.data.collate import collate_items
from lib.data.multishift import MultiShiftPairs

__all__ = [
    "BENCHMARKS",
    "DEFAULT_ROOT",
    "AnomalyBenchmark",
    "CityscapesSeg",
    "MultiShiftPairs",
    "OutlierObjects",
    "build_benchmark",
    "collate_items",
]
