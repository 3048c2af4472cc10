"""Batching: stack the per-item tensors of a dataset's dict items; names stay a list.

Pinned memory is the DataLoader's job (``pin_memory=True`` on CUDA, set by the engine).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def collate_items(items: Sequence[dict]) -> dict[str, torch.Tensor | list]:
    """``[{key: [..]}] * B`` -> ``{key: [B, ..]}`` for tensors, ``{key: [v] * B}`` for anything else.

    Works for training pairs (``image, label, aug_image, aug_label``), closed-world items and
    benchmark items; all items must have the same keys and, per key, the same tensor shape.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    keys = list(items[0])
    for i, item in enumerate(items):
        if list(item) != keys:
            raise ValueError(f"batch item {i} has keys {sorted(item)}, item 0 has {sorted(keys)}")
    out: dict[str, torch.Tensor | list] = {}
    for key in keys:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) != 1:
                raise ValueError(
                    f"cannot stack {key!r}: shapes {sorted(shapes)} differ (crop or batch size 1)"
                )
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
