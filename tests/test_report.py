"""``lib.report``: two fake run folders (one written by the one results writer, one in the older
run-wide layout) merged into one Markdown table; CLI output file; clear errors for bad inputs."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from lib.errors import UserError
from lib.report import get_args_parser, load_run, main, merge_table, metric_bars
from lib.results import best_marks, provenance, write_results


def _make_runs(tmp_path):
    run_a, run_b = tmp_path / "a" / "deeplab_learned", tmp_path / "b" / "m2f_rba"
    prov = provenance(weights="/w/deeplab.pth", score="learned", protocol="published")
    write_results(
        run_a,
        {
            "RoadAnomaly": {
                "protocol": "published", "AUROC": 0.9, "AP": 0.71234, "FPR95": 0.2, "images": 60,
                "provenance": prov,
            },
            "ACDC_POC": {
                "protocol": "published", "AUROC": 0.95, "AP": 0.5, "FPR95": 0.1, "images": 10,
                "mIoU": 0.612, "mAcc": 0.7, "provenance": prov,
            },
        },
    )  # fmt: skip
    run_b.mkdir(parents=True)
    payload = {
        "protocol": "smiyc",
        "fpr_rule": "official SMIYC",
        "score": "rba",
        "weights": "/w/m2f.pth",
        "benchmarks": {
            "RoadAnomaly21": {
                "protocol": "smiyc", "track": "AnomalyTrack", "AUROC": 0.97, "AP": 0.9, "FPR95": 0.05,
                "best_f1": 0.8, "best_f1_threshold": 3.5, "sIoU": 0.5, "PPV": float("nan"), "F1_mean": 0.4,
                "per_image": {"AUROC": 0.96, "AP": 0.85, "FPR95": 0.07, "n_images": 9, "n_skipped": 1},
                "images": 10,
            },
            "RoadAnomaly": {"protocol": "smiyc", "AUROC": 0.91, "AP": 0.8, "FPR95": 0.3, "images": 60},
        },
        "skipped": [],
    }  # fmt: skip
    (run_b / "results.json").write_text(json.dumps(payload))
    return run_a, run_b


def test_merge_two_runs(tmp_path):
    run_a, run_b = _make_runs(tmp_path)
    table = merge_table([load_run(run_a), load_run(run_b / "results.json")])
    header = "benchmark run score protocol AUROC AP FPR95 best_f1 sIoU PPV F1_mean img_AUROC img_AP img_FPR95"
    no = ["-"]
    rows = [
        [c.replace("_", " ") if c.startswith("img") else c for c in (header + " mIoU mAcc images").split()],
        ["---"] * 4 + ["---:"] * 13,
        ["RoadAnomaly", "deeplab_learned", "learned", "published", "90.00", "71.23", "20.00", *no * 9, "60"],
        ["RoadAnomaly", "m2f_rba", "rba", "smiyc", "91.00", "80.00", "30.00", *no * 9, "60"],
        ["ACDC_POC", "deeplab_learned", "learned", "published", "95.00", "50.00", "10.00", *no * 7]
        + ["61.20", "70.00", "10"],
        ["RoadAnomaly21", "m2f_rba", "rba", "smiyc", "97.00", "90.00", "5.00", "80.00", "50.00", "NaN"]
        + ["40.00", "96.00", "85.00", "7.00", "-", "-", "10"],
    ]
    expected_rows = ["| " + " | ".join(row) + " |" for row in rows]
    lines = table.splitlines()
    assert lines[: len(expected_rows)] == expected_rows
    assert lines[len(expected_rows)] == ""
    assert lines[len(expected_rows) + 1].startswith(
        "- `deeplab_learned`: weights `/w/deeplab.pth`, score `learned`"
    )
    assert "protocol `smiyc` (official SMIYC)" in lines[len(expected_rows) + 2]
    assert "**Warning:** the runs use different protocols (published, smiyc)" in table


def test_metric_selection_and_same_name_runs(tmp_path):
    run_a, _ = _make_runs(tmp_path)
    twin = tmp_path / "c" / "deeplab_learned"
    twin.mkdir(parents=True)
    (twin / "results.json").write_text((run_a / "results.json").read_text())
    table = merge_table([load_run(run_a), load_run(twin)], metrics=["AP", "mIoU"])
    assert table.splitlines()[0] == "| benchmark | run | score | protocol | AP | mIoU | images |"
    # Equal runs tie: both bold.
    assert f"| RoadAnomaly | {run_a} | learned | published | **71.23** | - | 60 |" in table
    assert f"| ACDC_POC | {twin} | learned | published | **50.00** | **61.20** | 10 |" in table
    assert "Warning" not in table
    blurred = tmp_path / "d" / "blurred"
    prov = provenance(weights="w", score="energy", protocol="published", postprocess="gaussian_blur")
    write_results(blurred, {"RoadAnomaly": {"AP": 0.5, "images": 3, "provenance": prov}})
    assert "| RoadAnomaly | blurred | energy + gaussian_blur | published | 50.00 | - | 3 |" in merge_table(
        [load_run(blurred)], metrics=["AP", "mIoU"]
    )
    with pytest.raises(UserError, match=r"unknown metrics \['AUPR'\]"):
        merge_table([load_run(run_a)], metrics=["AUPR"])


def test_cli_writes_file(tmp_path):
    run_a, run_b = _make_runs(tmp_path)
    out = tmp_path / "out" / "table.md"
    main(get_args_parser().parse_args([str(run_a), str(run_b), "--out", str(out)]))
    assert out.read_text() == merge_table([load_run(run_a), load_run(run_b)])
    done = subprocess.run(
        [sys.executable, "-m", "lib.report", str(run_a)], capture_output=True, text=True, check=True
    )
    assert done.stdout == merge_table([load_run(run_a)])


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(UserError, match="no results file"):
        load_run(tmp_path)
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"protocol": "published", "benchmarks": {"RoadAnomaly": {"AP": 71.2}}}))
    with pytest.raises(
        UserError, match=r"RoadAnomaly: AP = 71.2 is not a fraction in \[0, 1\] \(percent\?\)"
    ):
        load_run(bad)
    bad.write_text(json.dumps({"benchmarks": {"RoadAnomaly": {"AP": 0.5}}}))
    with pytest.raises(UserError, match="'RoadAnomaly' does not say how it was computed"):
        load_run(bad)
    bad.write_text(json.dumps({"benchmarks": {"RoadAnomaly": 0.71}}))
    with pytest.raises(UserError, match=f"{bad}: benchmark 'RoadAnomaly' holds 0.71; expected a mapping"):
        load_run(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object with a 'benchmarks' mapping"):
        load_run(bad)
    bad.write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_run(bad)


def _entry(prov, **metrics):
    return {"protocol": prov["protocol"], "images": 5, "provenance": prov, **metrics}


def test_best_value_per_column_is_bold(tmp_path):
    """Best per benchmark and column among rows of one protocol; lower is better for FPR columns;
    ties by printed value all bold; '-', 'n/a' and single rows never."""
    pub = provenance(weights="w", score="learned", protocol="published")
    smiyc = provenance(weights="w", score="learned", protocol="smiyc")
    runs = {
        "a": {
            "RA": _entry(pub, AUROC=0.9, AP=0.5, FPR95=0.2, FPR_at_threshold=0.3),
            "FS": _entry(pub, AP=0.1),
        },
        "b": {"RA": _entry(pub, AUROC=0.8, AP=0.700001, FPR95=0.1), "FS": _entry(pub, AP=0.2)},
        "c": {"RA": _entry(pub, AUROC=0.7, AP=0.7, FPR95=0.4, FPR_at_threshold=0.2)},
        "d": {"RA": _entry(smiyc, AUROC=0.99, AP=0.99, FPR95=0.01)},
    }
    for name, entries in runs.items():
        write_results(tmp_path / name, entries)
    table = merge_table(
        [load_run(tmp_path / n) for n in runs], metrics=["AUROC", "AP", "FPR95", "FPR_at_threshold"]
    )
    rows = {tuple(line.split(" | ")[:2]): line for line in table.splitlines() if line.startswith("| ")}
    assert rows[("| RA", "a")] == "| RA | a | learned | published | **90.00** | 50.00 | 20.00 | 30.00 | 5 |"
    assert rows[("| RA", "b")] == "| RA | b | learned | published | 80.00 | **70.00** | **10.00** | - | 5 |"
    assert (
        rows[("| RA", "c")] == "| RA | c | learned | published | 70.00 | **70.00** | 40.00 | **20.00** | 5 |"
    )
    assert rows[("| RA", "d")] == "| RA | d | learned | smiyc | 99.00 | 99.00 | 1.00 | - | 5 |"
    assert rows[("| FS", "a")].endswith("| 10.00 | - | - | 5 |") and "**20.00**" in rows[("| FS", "b")]
    assert best_marks(["n/a", "NaN", "3.00"], lower_is_better=False) == [False, False, False]
    assert best_marks(["1.00", "-", "1.00", "0.50"], lower_is_better=True) == [False, False, False, True]


def test_plot_bars_of_ap_and_fpr95(tmp_path):
    run_a, run_b = _make_runs(tmp_path)
    runs = [load_run(run_a), load_run(run_b)]
    fig = metric_bars(runs)
    ap, fpr = fig.axes[:2]
    assert (ap.get_title(), fpr.get_title()) == ("AP", "FPR95")
    assert [t.get_text() for t in ap.get_xticklabels()] == ["RoadAnomaly", "ACDC_POC", "RoadAnomaly21"]
    heights = {c.get_label(): sorted(round(b.get_height(), 6) for b in c) for c in ap.containers}
    assert heights == {"deeplab_learned (learned)": [50.0, 71.234], "m2f_rba (rba)": [80.0, 90.0]}
    assert sorted(round(b.get_height(), 6) for c in fpr.containers for b in c) == [5.0, 10.0, 20.0, 30.0]
    assert "lower is better" in fpr.get_ylabel() and "higher is better" in ap.get_ylabel()
    out = tmp_path / "plots" / "bars.png"
    main(
        get_args_parser().parse_args(
            [str(run_a), str(run_b), "--out", str(tmp_path / "t.md"), "--plot", str(out)]
        )
    )
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width >= 700
    empty = tmp_path / "empty"
    write_results(empty, {"X": _entry(provenance(weights="w", score="s", protocol="published"), mIoU=0.5)})
    with pytest.raises(UserError, match="--plot: no run has a number for AP or FPR95"):
        metric_bars([load_run(empty)])
