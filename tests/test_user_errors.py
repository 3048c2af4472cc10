"""Bad input and faults that must end in one clear error, with nothing lost and nothing half-written.

One fixture per case: a reused run id, a resume from weights only, a corrupt demo stage record, an
``--out`` that is a file, weights that give non-finite scores; and the usual mode of written files.
"""

import datetime
import json
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import train_deeplab
from generation.__main__ import get_args_parser as generation_parser
from generation.__main__ import main as generation_main
from lib.atomic import make_folder
from lib.cli_errors import DEBUG_ENV, run_cli
from lib.config import Config, load_config, save_config
from lib.engine.training import prepare_run_dir
from lib.errors import UserError
from lib.models import build_model
from lib.models.checkpoints import UnreadableCheckpointError, load_weights, save_checkpoint
from lib.predict import get_args_parser as predict_parser
from lib.predict import main as predict_main
from lib.results import provenance, write_results
from lib.submission import build_exporter
from lib.toy.demo import Demo
from lib.toy.writers import write_outlier_bank
from lib.viz import save_png
from tests.data_fixtures import write_training_tree

LIGHT = ["model.name=deeplab_wrn_light", "data.num_workers=0", "data.crop_size=24", "data.val_ds="]


@pytest.fixture
def finished_run(tmp_path):
    """``outputs/X`` of a finished run: checkpoints, config and log with known bytes."""
    run = tmp_path / "outputs" / "X"
    run.mkdir(parents=True)
    files = {"last.pth": b"last", "best_AP.pth": b"best", "config.yaml": b"id: X\n", "log.txt": b"old log\n"}
    for name, data in files.items():
        (run / name).write_bytes(data)
    return run, files


def test_reused_run_id_is_refused_before_any_work(finished_run, monkeypatch, capsys):
    run, files = finished_run
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    argv = ["--cfg", "exp/DeepLab.yaml", "--id", "X", f"output_root={run.parent}", "data.root=/nonexistent"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_deeplab.main, train_deeplab.get_args_parser(), argv, intermixed=True)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {run} already holds a run (last.pth, best_AP.pth)" in err
    assert "--resume" in err and "another --id" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # not even the log was touched


def test_overwrite_removes_the_old_checkpoints_and_resume_keeps_them(finished_run):
    run, files = finished_run
    prepare_run_dir(run, resume=True)
    assert {p.name for p in run.iterdir()} == set(files)
    prepare_run_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "log.txt"]
    prepare_run_dir(run)  # nothing left to lose
    prepare_run_dir(run.parent / "new")


def test_resume_from_weights_only_names_the_file(tmp_path):
    root = tmp_path / "datasets"
    write_training_tree(root)
    run = tmp_path / "outputs" / "X"
    run.mkdir(parents=True)
    torch.save(build_model("deeplab_wrn_light").state_dict(), run / "last.pth")
    argv = ["--cfg", "exp/DeepLab.yaml", "--id", "X", "--resume", "--no_progress", "--device", "cpu"]
    overrides = [f"data.root={root}", f"output_root={tmp_path / 'outputs'}", "train.batch_size=2", *LIGHT]
    args = train_deeplab.get_args_parser().parse_intermixed_args([*argv, *overrides])
    with pytest.raises(UnreadableCheckpointError, match=rf"--resume: {run / 'last.pth'} holds weights only"):
        train_deeplab.main(args)


@pytest.mark.parametrize("record", ["{", '["world"]', '{"stage": "data"}', "\udcff"])
def test_corrupt_demo_stage_record_names_the_file(tmp_path, record):
    demo = Demo(tmp_path)
    for path in demo.outputs("data"):
        path.mkdir(parents=True)
    demo.record_path("data").parent.mkdir(parents=True)
    demo.record_path("data").write_bytes(record.encode("utf-8", "surrogateescape"))
    with pytest.raises(UserError, match=r"data\.json: corrupt stage record .*--stage data --fresh"):
        demo.run(["data"])


def test_out_that_is_a_file_is_not_a_folder(tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    with pytest.raises(UserError, match=rf"^--out {out} is a file, not a folder$"):
        make_folder(out, "--out")
    with pytest.raises(UserError, match=rf"^--out {out / 'sub'}: {out} is a file, not a folder$"):
        make_folder(out / "sub", "--out")
    source = tmp_path / "source"
    argv = ["--cfg", "exp/generation_toy.yaml", "--source", str(source), "--out", str(out)]
    with pytest.raises(UserError, match=r"--out \(output.root\) .* is a file, not a folder"):
        generation_main(generation_parser().parse_args(argv))
    assert out.read_text() == "keep me"


@pytest.fixture
def predict_inputs(tmp_path):
    cfg = tmp_path / "light.yaml"
    cfg.write_text("model:\n  name: deeplab_wrn_light\n")
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(tmp_path / "street.png")
    return tmp_path, cfg


def test_predict_out_that_is_a_file(predict_inputs):
    root, cfg = predict_inputs
    (root / "out").write_text("keep me")
    argv = ["--cfg", str(cfg), "--weight_path", str(root / "w.pth"), "--input", str(root / "street.png")]
    with pytest.raises(UserError, match=r"--out .*out is a file, not a folder"):
        predict_main(predict_parser().parse_args([*argv, "--out", str(root / "out")]))


def test_non_finite_scores_name_image_and_weights_and_write_nothing(predict_inputs):
    root, cfg = predict_inputs
    weights = root / "nan.pth"
    state = build_model("deeplab_wrn_light").state_dict()
    torch.save(
        {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, weights
    )
    argv = ["--cfg", str(cfg), "--weight_path", str(weights), "--input", str(root / "street.png")]
    with pytest.raises(
        UserError, match=rf"street\.png: 768 of 768 anomaly scores are not finite .*{weights}"
    ):
        predict_main(predict_parser().parse_args([*argv, "--out", str(root / "out")]))
    assert list((root / "out").iterdir()) == []


def test_written_files_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        cfg = load_config(Config, None, ["model.name=deeplab_wrn_light"])
        save_config(cfg, tmp_path / "config.yaml")
        model = build_model("deeplab_wrn_light")
        save_checkpoint(
            tmp_path / "last.pth",
            model=model,
            epoch=0,
            stage=1,
            config=cfg,
            model_name="deeplab_wrn_light",
            model_kwargs={},
            metrics={},
        )
        prov = provenance(weights="w", score="energy", protocol="published")
        written = write_results(tmp_path, {"RoadAnomaly": {"AP": 0.5, "images": 3, "provenance": prov}})
        save_png(tmp_path / "heatmap.png", np.zeros((4, 4, 3), np.uint8))
        write_outlier_bank(tmp_path / "datasets", n_objects=1, seed=0)
        with build_exporter("fishyscapes", tmp_path / "export", benchmark="FS_Static") as exporter:
            exporter.add("0", np.zeros((4, 4), np.float32))
    finally:
        os.umask(old)
    files = [tmp_path / "config.yaml", tmp_path / "last.pth", *written, tmp_path / "heatmap.png"]
    files += sorted((tmp_path / "datasets").rglob("*.png")) + sorted((tmp_path / "export").rglob("*.npy"))
    assert len(files) >= 7 and json.loads(written[0].read_text())["benchmarks"]["RoadAnomaly"]["AP"] == 0.5
    assert {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        str(p.relative_to(tmp_path)): "0o644" for p in files
    }


def test_truncated_or_foreign_checkpoint_is_named_as_such(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(build_model("deeplab_wrn_light").state_dict(), good)
    (tmp_path / "truncated.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "notes.pth").write_text("not weights")
    for name in ("truncated.pth", "notes.pth"):
        with pytest.raises(UnreadableCheckpointError, match=rf"{name}: not a PyTorch checkpoint .*truncated"):
            load_weights(build_model("deeplab_wrn_light"), tmp_path / name)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "when": datetime.date(2024, 1, 1)}, unsafe)
    with pytest.raises(
        UnreadableCheckpointError, match=r"unsafe\.pth with torch.load\(weights_only=True\) \(.*date"
    ):
        load_weights(build_model("deeplab_wrn_light"), unsafe)
