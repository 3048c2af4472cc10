"""Runs an entry script (``train_deeplab`` or ``test_deeplab``) inside one ``torchrun`` process and
records what the multi-process tests check, in ``PROBE_DIR/rank{RANK}.json``:

- ``writes``: every path under ``WATCH_DIR`` this process created, opened for writing or renamed
  onto (a Python audit hook sees every ``open``, ``os.open``, ``os.mkdir`` and ``os.replace``);
- ``epochs``: per training epoch, the names of the items of each batch this process trained on;
- ``steps``: after each optimizer step, a SHA-256 digest of every model parameter.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/torchrun_probe.py \
        train_deeplab PROBE_DIR WATCH_DIR --cfg ... [overrides]
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

import lib.engine.trainer as trainer

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def watch_writes(folder: Path, writes: list[str]) -> None:
    """Append to ``writes`` every path under ``folder`` that this process writes from now on."""

    def inside(path: object) -> str | None:
        if not isinstance(path, str | bytes | os.PathLike):
            return None
        resolved = Path(os.fsdecode(path)).resolve()
        return str(resolved.relative_to(folder)) if resolved.is_relative_to(folder) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args[0] is not None:
            mode, flags = args[1], args[2]
            writing = any(c in (mode or "") for c in "wax+") or bool(flags & WRITE_FLAGS)
            name = inside(args[0]) if writing else None
        elif event == "os.rename":
            name = inside(args[1])
        elif event == "os.mkdir":
            name = inside(args[0])
        else:
            return
        if name is not None:
            writes.append(name)

    sys.addaudithook(hook)


def record_training(epochs: list[list[list[str]]], steps: list[str]) -> None:
    """Wrap the trainer's epoch loop, batch transfer and optimizer to fill ``epochs`` and ``steps``."""
    train_one_epoch, move_batch, build_optimizer = (
        trainer.train_one_epoch,
        trainer.move_batch,
        trainer.build_optimizer,
    )

    def epoch_recorded(*args, **kwargs):
        epochs.append([])
        return train_one_epoch(*args, **kwargs)

    def batch_recorded(batch, *args, **kwargs):
        epochs[-1].append(list(batch["name"]))
        return move_batch(batch, *args, **kwargs)

    def optimizer_recorded(model, stage):
        optimizer = build_optimizer(model, stage)

        def digest(*_: object) -> None:
            h = hashlib.sha256()
            for name, p in model.named_parameters():
                h.update(name.encode() + p.detach().cpu().numpy().tobytes())
            steps.append(h.hexdigest())

        optimizer.register_step_post_hook(digest)
        return optimizer

    trainer.train_one_epoch, trainer.move_batch = epoch_recorded, batch_recorded
    trainer.build_optimizer = optimizer_recorded


def main() -> None:
    script, probe_dir, watch_dir, *argv = sys.argv[1:]
    record: dict[str, list] = {"writes": [], "epochs": [], "steps": []}
    record_training(record["epochs"], record["steps"])
    watch_writes(Path(watch_dir).resolve(), record["writes"])
    entry = importlib.import_module(script)
    entry.main(entry.get_args_parser().parse_intermixed_args(argv))
    out = Path(probe_dir) / f"rank{os.environ['RANK']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record))


if __name__ == "__main__":
    main()
