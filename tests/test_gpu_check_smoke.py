"""``benchmarks/gpu_check.py --smoke``: every GPU check runs end to end on the CPU (each in its own
process, light models, tiny inputs), CUDA-only parts say so, numbers land in ``gpu_check.json``; a
failing check is recorded without stopping the run. About a minute on two shared cores (the
deformable-attention kernel runs on Triton's CPU interpreter)."""

import json

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_check import CHECKS, SKIPPED_NO_CUDA, Check, get_args_parser, main, run_one, summary_table


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    code = main(get_args_parser().parse_args(["--out", str(out), "--smoke"]))
    return code, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.log").read_text()


def test_every_check_passes_on_cpu(smoke_run):
    code, report, log = smoke_run
    checks = report["checks"]
    assert report["smoke"] is True and list(checks) == list(CHECKS)
    assert {name: r["status"] for name, r in checks.items()} == dict.fromkeys(CHECKS, "pass"), log
    assert code == 0
    assert all(r["device"] == "cpu" and r["error"] is None for r in checks.values())
    assert all(f"===== {name} (" in log for name in CHECKS)


def test_cuda_only_parts_are_reported_skipped(smoke_run):
    checks = smoke_run[1]["checks"]
    for name in ("env", "deeplab", "m2f", "deform_attn", "trainer", "evaluator", "controlnet"):
        assert any(note.endswith(SKIPPED_NO_CUDA) for note in checks[name]["notes"]), name
    assert checks["env"]["numbers"]["cuda_available"] is False


def test_numbers_of_each_check(smoke_run):
    checks = smoke_run[1]["checks"]
    deeplab, m2f = checks["deeplab"]["numbers"], checks["m2f"]["numbers"]
    assert deeplab["model"] == "deeplab_wrn_light" and m2f["model"] == "mask2anomaly_tiny"
    for numbers in (deeplab, m2f):
        assert numbers["input_hw"] == [64, 128]
        assert 0 < numbers["bf16_anomaly_err"]["rel_l2"] < gpu_check.BF16_REL_TOLERANCE
        assert numbers["train_fp32_s_per_step"] > 0 and numbers["train_fp32_batch"] == "2+2 at [64, 64]"
    assert set(deeplab["train_fp32_terms"]) >= {"loss", "ce_orig", "ce_gen", "rcl_in"}
    assert set(m2f["train_fp32_terms"]) >= {"loss", "loss_ce", "loss_mask", "loss_dice"}
    trainer = checks["trainer"]["numbers"]
    assert set(trainer["fit_bf16_val"]) == {"AUROC", "AP", "FPR95"}
    assert trainer["fit_bf16_checkpoint_has_scaler"] is False
    evaluator = checks["evaluator"]["numbers"]
    assert (
        max(evaluator["device_fp32_metric_diffs"].values()) == 0 and evaluator["cpu_metrics"]["images"] == 2
    )
    controlnet = checks["controlnet"]["numbers"]
    assert controlnet["text_encoder_vocab"] == 49408 and 2 < controlnet["tokenizer_tokens"] < 100
    assert controlnet["condition_hw"] == [64, 128] and controlnet["steps"] == 2
    assert controlnet["s_per_step"] is not None and controlnet["s_per_image"] > 0
    assert checks["sam"]["numbers"]["variant"] == "tiny" and checks["sam"]["numbers"]["image_hw"] == [64, 128]


def test_deform_attn_kernel_equals_the_pytorch_path(smoke_run):
    numbers = smoke_run[1]["checks"]["deform_attn"]["numbers"]
    assert numbers["auto_core"] == "ms_deform_attn_core"  # CPU tensors
    if "triton" not in numbers:
        pytest.skip("triton is not installed (pip install .[triton])")
    for what in ("out", "grad_value", "grad_locations", "grad_weights"):
        assert 0 < numbers[f"op_{what}_err"]["rel_l2"] < gpu_check.DEFORM_ATTN_OP_TOLERANCE, what
    assert numbers["op_shapes"] == {"value": [1, 20, 2, 4], "levels": [[1, 2], [2, 3], [3, 4]], "points": 2}
    assert numbers["model"] == "mask2anomaly_tiny" and numbers["forward_input_hw"] == [32, 64]
    assert numbers["forward_logits_err"]["rel_l2"] < 1e-5 and numbers["forward_anomaly_err"]["rel_l2"] < 1e-5
    assert numbers["train_fp32_pytorch_s_per_step"] > 0 and numbers["train_fp32_triton_s_per_step"] > 0
    assert numbers["train_loss_rel_diff"] < 1e-5
    assert numbers["train_fp32_triton_batch"] == "1+1 at [32, 32]"


def test_summary_table_lists_every_check(smoke_run):
    table = summary_table(smoke_run[1]["checks"])
    assert all(f"\n{name:11s} pass" in table for name in CHECKS)


def test_failing_check_is_recorded(tmp_path, monkeypatch):
    def broken(ctx):
        ctx.record("before", 1.5)
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setitem(CHECKS, "env", Check(broken, 5))
    run_one("env", True, tmp_path / "r.json")
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "fail" and result["numbers"] == {"before": 1.5}
    assert result["error"] == "RuntimeError: CUDA error: an illegal memory access"


def test_budget_and_unknown_checks(tmp_path, capsys):
    assert main(get_args_parser().parse_args(["--out", str(tmp_path), "--smoke", "--budget", "1"])) == 0
    checks = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert {r["status"] for r in checks.values()} == {"skipped"}
    with pytest.raises(SystemExit, match=r"unknown checks \['gpu'\]"):
        main(get_args_parser().parse_args(["--out", str(tmp_path), "--checks", "env,gpu"]))
    assert main(get_args_parser().parse_args(["--print-command"])) == 0
    assert "--target /tmp/site .whl/*.whl" in capsys.readouterr().out
