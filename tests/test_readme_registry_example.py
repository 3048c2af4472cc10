"""The README's registry example, run exactly as written: its own score and benchmark go through the
test script's whole loop, and the numbers are those of the score computed here by hand."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from lib.data.benchmarks import MUADLike
from lib.metrics import ood_metrics
from lib.models import build_model
from tests.data_fixtures import write_muad_like

REPO = Path(__file__).resolve().parents[1]
SECTION = "### Your own scores, benchmarks and other choices"


def readme_example() -> tuple[str, str]:
    """The section's Python block and its command line."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"^    (python my_test\.py .*)$", section, re.M).group(1)
    return code, command


def test_readme_example_registers_and_tests_its_own_score_and_benchmark(tmp_path):
    code, command = readme_example()
    script = tmp_path / "my_test.py"
    script.write_text(code, encoding="utf-8")
    root, out = tmp_path / "datasets", tmp_path / "outputs"
    write_muad_like(root, "my_streets")
    model = build_model("deeplab_wrn_light").eval()
    weights = tmp_path / "W"
    torch.save(model.state_dict(), weights)
    argv = command.split()[2:]
    argv[argv.index("W")] = str(weights)
    overrides = [
        f"data.root={root}",
        f"output_root={out}",
        "model.name=deeplab_wrn_light",
        "data.num_workers=0",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, str(script), *argv, *overrides, "data.num_workers=0", "--no_progress"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    entry = json.loads((out / "mine" / "results.json").read_text())["benchmarks"]["my_streets"]
    assert entry["provenance"]["score"] == "top2_margin"

    dataset = MUADLike(root, folder="my_streets")
    scores, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            _, logits = model(item["image"][None])
            best = logits.topk(2, dim=1).values
            scores.append((best[:, 1] - best[:, 0])[0].flatten())
            labels.append(item["ood_label"].flatten())
    expected = ood_metrics(torch.cat(scores), torch.cat(labels))
    assert entry["images"] == len(dataset) == 2
    for metric, value in expected.items():
        assert abs(entry[metric] - value) < 1e-6, (metric, entry[metric], value)
