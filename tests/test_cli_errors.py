"""The one error-reporting wrapper (lib.cli_errors.run_cli) and every entry point that uses it.

A user error is one line ``<prog>: error: <message>`` on stderr and exit status 2; ``--debug`` or
``MULTISHIFTSEG_DEBUG=1`` shows the traceback; a programming error always keeps its traceback.
"""

import argparse
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from lib.cli_errors import DEBUG_ENV, error_message, is_user_error, run_cli
from lib.config import ConfigError
from lib.errors import UnknownNameError, UserError
from lib.models.checkpoints import IncompatibleCheckpointError, UnreadableCheckpointError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--fail", default="")
    return parser


def _main(args: argparse.Namespace) -> str:
    if args.fail == "config":
        raise ConfigError("exp/x.yaml: unknown key 'train.lr0'")
    if args.fail == "missing":
        open(Path("/nonexistent-dir") / "weights.pth", "rb")
    if args.fail == "bug":
        raise ZeroDivisionError("division by zero")
    return "done"


def test_user_error_is_one_line_and_status_2(capsys):
    assert run_cli(_main, _parser(), []) == "done"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_main, _parser(), ["--fail", "config"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "tool: error: exp/x.yaml: unknown key 'train.lr0'\n"


def test_missing_file_names_the_path(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_main, _parser(), ["--fail", "missing"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "tool: error: /nonexistent-dir/weights.pth: no such file or directory\n"


def test_debug_flag_or_environment_shows_the_traceback(monkeypatch):
    with pytest.raises(ConfigError, match="unknown key"):
        run_cli(_main, _parser(), ["--fail", "config", "--debug"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ConfigError, match="unknown key"):
        run_cli(_main, _parser(), ["--fail", "config"])
    monkeypatch.setenv(DEBUG_ENV, "0")
    with pytest.raises(SystemExit):
        run_cli(_main, _parser(), ["--fail", "config"])


def test_programming_error_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_cli(_main, _parser(), ["--fail", "bug"])


def test_which_errors_are_the_users(tmp_path):
    for err in (
        UserError("x"),
        ConfigError("x"),
        IncompatibleCheckpointError("x"),
        UnreadableCheckpointError("x"),
        UnknownNameError("x"),
        FileNotFoundError("x"),
        PermissionError(13, "Permission denied", "/a"),
        IsADirectoryError(21, "Is a directory", "/a"),
    ):
        assert is_user_error(err), err
    for err in (ValueError("x"), KeyError("x"), RuntimeError("x"), OSError(28, "No space left on device")):
        assert not is_user_error(err), err
    denied = PermissionError(13, "Permission denied", "/a/b.png")
    assert error_message(denied) == "/a/b.png: permission denied"
    assert error_message(UnknownNameError("unknown score 'x'")) == "unknown score 'x'"  # not quoted


# Every entry point, run in process through its own ``__main__`` block, with one bad input each.
ENTRY_POINTS = {
    "train_deeplab.py": ["--cfg", "{tmp}/missing.yaml"],
    "train_m2f.py": ["--cfg", "{tmp}/missing.yaml"],
    "test_deeplab.py": ["--cfg", "{tmp}/missing.yaml"],
    "test_m2f.py": ["--cfg", "{tmp}/missing.yaml"],
    "generation": ["--cfg", "{tmp}/missing.yaml"],
    "lib.predict": ["--cfg", "{tmp}/missing.yaml", "--weight_path", "w", "--input", "a.png", "--out", "o"],
    "lib.report": ["{tmp}/no_run"],
    "lib.evaluate": ["--benchmark", "RoadAnomaly", "--scores", "{tmp}/no_scores", "--root", "{tmp}"],
    "lib.data.coco_ood": ["--coco", "{tmp}/no_coco"],
    "lib.toy.demo": ["--out", "{tmp}/a_file"],
    "lib.download": ["deplab"],
    "lib.models.convert": ["{tmp}/absent.pth", "{tmp}/out.safetensors", "--model", "deeplab_wrn_light"],
    "lib.export": ["--cfg", "{tmp}/missing.yaml", "--weight_path", "w", "--format", "onnx", "--out", "o"],
}
EXPECTED = {
    "lib.report": "no_run: no results file",
    "lib.evaluate": "dataset folder not found: {tmp}/road_anomaly",
    "lib.data.coco_ood": "dataset folder not found: {tmp}/no_coco",
    "lib.toy.demo": "a_file is a file, not a folder",
    "lib.download": "unknown artifact 'deplab'; did you mean 'multishiftseg-deeplab'?",
    "lib.models.convert": "checkpoint not found: {tmp}/absent.pth",
}


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy of an imported module
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_every_entry_point_reports_a_user_error_in_one_line(entry, tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    argv = [a.format(tmp=tmp_path) for a in ENTRY_POINTS[entry]]
    monkeypatch.setattr(sys, "argv", [entry, *argv])
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        if entry.endswith(".py"):
            runpy.run_path(str(REPO / entry), run_name="__main__")
        else:
            runpy.run_module(f"{entry}.__main__" if entry == "generation" else entry, run_name="__main__")
    assert exit_info.value.code == 2
    first, *details = capsys.readouterr().err.splitlines()
    expected = EXPECTED.get(entry, "config file not found: {tmp}/missing.yaml").format(tmp=tmp_path)
    assert re.match(rf"(python -m )?{re.escape(entry)}: error: ", first) and expected in first, first
    assert all(line.startswith("  ") for line in details), details  # an expected tree, indented


def _run(*argv):
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV} | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_subprocess_exit_status_and_stderr(tmp_path):
    done = _run("train_deeplab.py", "--cfg", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2
    assert done.stderr == f"train_deeplab.py: error: config file not found: {tmp_path / 'missing.yaml'}\n"
    (tmp_path / "results.json").write_text("{")
    done = _run("-m", "lib.report", str(tmp_path / "results.json"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "results.json: not valid JSON" in done.stderr
    debug = _run("-m", "lib.report", str(tmp_path / "results.json"), "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
