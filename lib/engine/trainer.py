"""The two-stage trainer (paper Sec. 4, "Training"): plain functions over built objects.

:func:`fit` runs the epochs of :func:`~lib.engine.stages.stages_from_config` in five steps a reader
can follow: :func:`resume_run` (``--resume``: weights, epoch, best AP and RNG states from
``last.pth``); :func:`enter_stage` at each stage start (freeze everything but the stage's
parameters, build its optimizer, wrap the model in DDP again under ``torchrun``);
:func:`train_epoch` (:func:`train_one_epoch` with the epoch's seeding and logging); every
``train.val_interval`` epochs :func:`validate` on ``data.val_ds`` with the streaming evaluator; and
:func:`save_epoch`: rank 0 keeps ``last.pth`` (every epoch) and ``best_AP.pth`` (best validation
AP), both written atomically with the resolved config, the stage, the optimizer and every rank's
RNG state, so that ``resume`` continues exactly where the run stopped. The family-specific part of
a step (how the batch enters the model, which criterion) is a :class:`~lib.engine.steps.TrainStep`.
The log and TensorBoard (``train/lr/<group>``) report the learning rate of each parameter group by
its name (:func:`~lib.engine.optim.group_name`).

TensorBoard (``run_dir/tensorboard``, rank 0, when installed): the resolved config as text, loss
terms and learning rates, validation metrics, heat-map panels of the first ``train.val_heatmaps``
validation images at every validation, and at the end the hyper-parameters with the final metrics.

``train.batch_size`` is the global number of (original, generated) pairs per step; under DDP
each of the ``world_size`` processes takes ``batch_size / world_size`` of them.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import yaml
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from lib.config import Config, ConfigError, config_to_dict, save_config
from lib.data.collate import collate_items
from lib.engine.distributed import DistInfo, barrier, wrap_ddp
from lib.engine.evaluator import HeatmapSink, Inference, evaluate_model, metric_summary
from lib.engine.logging_utils import ScalarWriter, flat_hparams, get_logger, tensorboard_available
from lib.engine.optim import build_optimizer
from lib.engine.precision import autocast, make_grad_scaler, resolve_amp_dtype
from lib.engine.stages import StageSpec, apply_stage, set_train_mode, stage_at, stages_from_config
from lib.engine.steps import TrainStep
from lib.errors import UserError
from lib.models.checkpoints import UnreadableCheckpointError, load_weights, save_checkpoint
from lib.panels import figure_rgb
from lib.protocols import smiyc_track
from lib.scores import get_score

LAST = "last.pth"
BEST = "best_AP.pth"
CONFIG_FILE = "config.yaml"
TRAINING_STATE = ("epoch", "stage", "optimizer", "scaler", "config", "extra")
"""What ``last.pth`` holds besides the weights, so that ``resume`` continues the run exactly."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, object]:
    """This process's RNG states as checkpoint-safe values (tensors, ints, strings)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, object] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos},
        "numpy_gauss": [has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    has_gauss, cached = state["numpy_gauss"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state((np_state["kind"], keys, np_state["pos"], has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng_states() -> list[dict]:
    mine = rng_state()
    if not dist.is_initialized():
        return [mine]
    states: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def move_batch(batch: dict, device: torch.device, *, channels_last: bool = False) -> dict:
    """Tensors of ``batch`` to ``device`` (images ``[B,3,H,W]`` channels-last if asked); others as is."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def check_finite(terms: dict[str, torch.Tensor], where: str) -> None:
    """Stop with a message naming every non-finite loss term."""
    if bool(torch.isfinite(terms["loss"]).all()):
        return
    bad = {k: float(v.detach().float().mean()) for k, v in terms.items() if not bool(torch.isfinite(v).all())}
    raise FloatingPointError(f"non-finite loss {where}: {', '.join(f'{k}={v}' for k, v in bad.items())}")


def _trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rate of each parameter group, by the group's name
    (:func:`~lib.engine.optim.parameter_groups`)."""
    return {group["name"]: float(group["lr"]) for group in optimizer.param_groups}


def _format_lrs(lrs: dict[str, float]) -> str:
    return ", ".join(f"{name} {lr:.3g}" for name, lr in lrs.items())


def train_one_epoch(
    model: nn.Module,
    step: TrainStep,
    loader: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    *,
    stage: StageSpec,
    epoch: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_iters: int = 0,
    channels_last: bool = False,
    log_interval: int = 20,
    writer: ScalarWriter | None = None,
    global_step: int = 0,
    progress: bool = True,
) -> tuple[dict[str, float], int]:
    """One pass over ``loader`` (at most ``max_iters`` steps if > 0); returns (mean terms, global step).

    Each step: forward + loss terms under autocast, a finite check, backward (scaled for fp16),
    optional gradient-norm clipping over the trainable parameters, optimizer step.
    """
    logger = get_logger()
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_iters > 0:
        total = max_iters if total is None else min(total, max_iters)
    sums: dict[str, float] = defaultdict(float)
    window: dict[str, float] = defaultdict(float)
    n = n_window = 0
    params = _trainable(model.parameters())
    bar = tqdm(loader, total=total, desc=f"epoch {epoch} {stage.name}", disable=not progress, leave=False)
    for it, batch in enumerate(bar):
        if total is not None and it >= total:
            break
        batch = move_batch(batch, device, channels_last=channels_last)
        with autocast(device, amp_dtype):
            terms = step(model, batch, stage=stage)
        check_finite(terms, f"at epoch {epoch}, iteration {it} ({stage.name})")
        optimizer.zero_grad(set_to_none=True)
        loss = terms["loss"]
        if scaler is not None:
            scaler.scale(loss).backward()
            if stage.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if stage.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
            optimizer.step()
        values = {k: float(v.detach().float().mean()) for k, v in terms.items()}
        for k, v in values.items():
            sums[k] += v
            window[k] += v
        n, n_window, global_step = n + 1, n_window + 1, global_step + 1
        bar.set_postfix(loss=f"{values['loss']:.4g}")
        if n_window == log_interval or (total is not None and it + 1 == total):
            means = {k: v / n_window for k, v in window.items()}
            lrs = group_lrs(optimizer)
            logger.info(
                "epoch %d it %d/%s %s lr %s %s",
                epoch,
                it + 1,
                total if total is not None else "?",
                stage.name,
                _format_lrs(lrs),
                " ".join(f"{k} {v:.4g}" for k, v in means.items()),
            )
            if writer is not None:
                writer.add_scalars(
                    {**means, **{f"lr/{k}": v for k, v in lrs.items()}}, global_step, prefix="train"
                )
            window.clear()
            n_window = 0
    if n == 0:
        raise RuntimeError(
            f"epoch {epoch}: the training loader yielded no batch (dataset smaller than a batch?)"
        )
    return {k: v / n for k, v in sums.items()}, global_step


def _config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def _train_loader(cfg: Config, dataset: Dataset, info: DistInfo) -> tuple[DataLoader, DistributedSampler]:
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by the {info.world_size} processes"
        )
    if cfg.data.num_workers > 0 and cfg.data.prefetch_factor < 1:
        raise UserError(
            "data.prefetch_factor must be at least 1 with data.num_workers > 0, "
            f"got {cfg.data.prefetch_factor}"
        )
    per_rank = cfg.train.batch_size // info.world_size
    if len(dataset) < per_rank * info.world_size:
        raise UserError(
            f"training set has {len(dataset)} items, fewer than one batch of {cfg.train.batch_size}"
        )
    sampler = DistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=cfg.train.seed,
        drop_last=True,
    )
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_items,
        pin_memory=info.device.type == "cuda",
        drop_last=True,
        generator=torch.Generator(),
        persistent_workers=cfg.data.num_workers > 0,
        prefetch_factor=cfg.data.prefetch_factor if cfg.data.num_workers > 0 else None,
    )
    return loader, sampler


@dataclass
class RunState:
    """Where a run stands: the next ``epoch`` to train, the best validation AP so far, the optimizer
    steps taken, and the ``last.pth`` entries it resumed from (None for a new run)."""

    epoch: int = 0
    best_ap: float = -math.inf
    global_step: int = 0
    resumed: dict | None = None


@dataclass
class ActiveStage:
    """The stage being trained: its spec, optimizer, gradient scaler and the (DDP-wrapped) model."""

    spec: StageSpec
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    train_model: nn.Module


def resume_run(cfg: Config, model: nn.Module, info: DistInfo) -> RunState:
    """Load ``run_dir/last.pth`` into ``model`` and restore this rank's RNG state; the run's state."""
    logger = get_logger()
    path = Path(cfg.run_dir) / LAST
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no {LAST} in {cfg.run_dir}; start the run without --resume")
    resumed = load_weights(model, path)
    missing = [key for key in TRAINING_STATE if key not in resumed]
    if missing:
        raise UnreadableCheckpointError(
            f"--resume: {path} holds weights only, without the training state {missing}; expected "
            f"the {LAST} this trainer writes. To start a new run from these weights, pass "
            "--weight_path with another --id (without --resume)"
        )
    for diff in _config_differences(resumed["config"], config_to_dict(cfg)):
        logger.warning("resume: config differs from the checkpoint's: %s", diff)
    extra = resumed["extra"]
    state = RunState(
        epoch=int(resumed["epoch"]) + 1,
        best_ap=float(extra["best_AP"]),
        global_step=int(extra["global_step"]),
        resumed=resumed,
    )
    states = extra["rng"]
    if len(states) == info.world_size:
        set_rng_state(states[info.rank])
    else:
        logger.warning(
            "resume: %d RNG states saved for %d processes; reseeding", len(states), info.world_size
        )
        seed_everything(cfg.train.seed + info.rank + state.epoch)
    logger.info("resumed from %s: epoch %d done, best AP %.4f", path, state.epoch - 1, state.best_ap)
    return state


def enter_stage(
    model: nn.Module,
    spec: StageSpec,
    *,
    epoch: int,
    step: TrainStep,
    info: DistInfo,
    amp_dtype: torch.dtype | None,
    resumed: dict | None = None,
) -> ActiveStage:
    """Freeze all but ``spec``'s parameters, build its optimizer and scaler (their states from
    ``resumed`` when the run stopped inside this stage) and wrap the model for DDP."""
    names = apply_stage(model, spec)
    optimizer = build_optimizer(model, spec)
    scaler = make_grad_scaler(info.device, amp_dtype)
    if resumed is not None and int(resumed["stage"]) == spec.index:
        group_names = [group["name"] for group in optimizer.param_groups]
        optimizer.load_state_dict(resumed["optimizer"])
        for group, name in zip(optimizer.param_groups, group_names, strict=True):
            group["name"] = name  # checkpoints written before groups had names
        if scaler is not None and resumed["scaler"] is not None:
            scaler.load_state_dict(resumed["scaler"])
    get_logger().info(
        "%s from epoch %d: %s at lr %s trains %d tensors (%d parameters) matching %s, %s",
        spec.name,
        epoch,
        spec.optimizer,
        _format_lrs(group_lrs(optimizer)),
        len(names),
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        list(spec.patterns),
        f"gradient norm clipped at {spec.grad_clip:g}" if spec.grad_clip > 0 else "no clipping",
    )
    train_model = wrap_ddp(model, info, find_unused_parameters=step.find_unused_parameters)
    return ActiveStage(spec=spec, optimizer=optimizer, scaler=scaler, train_model=train_model)


def train_epoch(
    cfg: Config,
    model: nn.Module,
    active: ActiveStage,
    step: TrainStep,
    data: tuple[DataLoader, DistributedSampler, Dataset],
    *,
    epoch: int,
    state: RunState,
    info: DistInfo,
    amp_dtype: torch.dtype | None,
    writer: ScalarWriter,
    progress: bool,
) -> dict[str, float]:
    """Seed this epoch's data order and draws, run :func:`train_one_epoch`, log its mean terms
    (``state.global_step`` advances); returns them."""
    loader, sampler, train_set = data
    set_train_mode(model, bn_train_mode=cfg.model.bn_train_mode)
    sampler.set_epoch(epoch)
    if hasattr(train_set, "set_epoch"):
        train_set.set_epoch(epoch)
    loader.generator.manual_seed((cfg.train.seed * 100003 + epoch) * info.world_size + info.rank)
    start = time.perf_counter()
    means, state.global_step = train_one_epoch(
        active.train_model,
        step,
        loader,
        active.optimizer,
        stage=active.spec,
        epoch=epoch,
        device=info.device,
        amp_dtype=amp_dtype,
        scaler=active.scaler,
        max_iters=cfg.train.iters_per_epoch,
        channels_last=info.device.type == "cuda",
        log_interval=cfg.train.log_interval,
        writer=writer,
        global_step=state.global_step,
        progress=progress and info.is_main,
    )
    get_logger().info(
        "epoch %d done in %.1f s: %s",
        epoch,
        time.perf_counter() - start,
        " ".join(f"{k} {v:.4g}" for k, v in means.items()),
    )
    writer.add_scalars(means, epoch, prefix="epoch")
    return means


def validates_after(cfg: Config, epoch: int) -> bool:
    """Whether validation runs after ``epoch``: every ``train.val_interval`` epochs and after the last."""
    if cfg.train.val_interval <= 0:
        return False
    return (epoch + 1) % cfg.train.val_interval == 0 or epoch == cfg.train.epochs - 1


def _validation_heatmaps(cfg: Config) -> HeatmapSink | None:
    """The sink of the heat-map panels of the first ``train.val_heatmaps`` validation images (the same
    images at every validation), when TensorBoard is there to show them."""
    if cfg.train.val_heatmaps <= 0 or not tensorboard_available():
        return None
    return HeatmapSink(
        None,
        count=cfg.train.val_heatmaps,
        score=cfg.eval.score,
        label=f"{cfg.id}: {cfg.eval.score}",
        benchmark=cfg.data.val_ds,
        mean=cfg.data.mean,
        std=cfg.data.std,
    )


def validate(
    cfg: Config,
    model: nn.Module,
    val_set: Dataset,
    *,
    epoch: int,
    info: DistInfo,
    writer: ScalarWriter,
    progress: bool,
) -> dict[str, float]:
    """The metrics of ``model`` on ``data.val_ds`` with the test-time evaluator (float32, as
    ``test_*.py``: ``best_AP.pth`` is picked on test-grade numbers), logged; heat-map panels of the
    first ``train.val_heatmaps`` images go to TensorBoard."""
    heatmaps = _validation_heatmaps(cfg)
    result = evaluate_model(
        model,
        val_set,
        score=cfg.eval.score,
        score_fn=get_score(cfg.eval.score),
        inference=Inference(
            device=info.device, channels_last=info.device.type == "cuda", postprocess=cfg.eval.postprocess
        ),
        protocol=cfg.eval.protocol,
        per_image=cfg.eval.per_image,
        track=smiyc_track(cfg.data.val_ds),
        max_images=cfg.data.val_max_images,
        desc=f"val {cfg.data.val_ds}",
        progress=progress and info.is_main,
        heatmaps=heatmaps,
    )
    for name, fig in heatmaps.figures if heatmaps is not None else ():
        writer.add_image(f"val_heatmaps/{name}", figure_rgb(fig), epoch)
    metrics = metric_summary(result)
    images = int(metrics.pop("images"))
    get_logger().info(
        "epoch %d validation on %s (%d images, protocol %s): %s",
        epoch,
        cfg.data.val_ds,
        images,
        cfg.eval.protocol,
        " ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()),
    )
    writer.add_scalars(metrics, epoch, prefix="val")
    return metrics


def save_epoch(
    cfg: Config,
    model: nn.Module,
    active: ActiveStage,
    *,
    epoch: int,
    state: RunState,
    metrics: dict[str, float],
    info: DistInfo,
) -> None:
    """Update the best AP from ``metrics``; rank 0 writes ``last.pth`` and, on a new best, ``best_AP.pth``
    (with every rank's RNG state, gathered from all ranks)."""
    improved = "AP" in metrics and metrics["AP"] > state.best_ap
    if improved:
        state.best_ap = float(metrics["AP"])
    states = _gather_rng_states()
    if info.is_main:
        saved = dict(
            model=model,
            optimizer=active.optimizer,
            scaler=active.scaler,
            epoch=epoch,
            stage=active.spec.index,
            config=config_to_dict(cfg),
            model_name=cfg.model.name,
            model_kwargs=cfg.model.kwargs,
            metrics=metrics,
            extra={"best_AP": state.best_ap, "global_step": state.global_step, "rng": states},
        )
        run_dir = Path(cfg.run_dir)
        if improved:
            save_checkpoint(run_dir / BEST, **saved)
            get_logger().info("new best AP %.2f: saved %s", 100 * state.best_ap, run_dir / BEST)
        save_checkpoint(run_dir / LAST, **saved)
    barrier()


def fit(
    cfg: Config,
    *,
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    step: TrainStep,
    info: DistInfo,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, object]:
    """Train ``model`` per ``cfg`` into ``cfg.run_dir``; returns ``{"best_AP", "last_metrics", "epoch"}``.

    ``model`` holds its starting weights (the caller loaded ``model.weight_path``). With ``resume``,
    weights, epoch, stage, optimizer, scaler, best AP and RNG states come from ``run_dir/last.pth``.
    Each epoch: enter its stage when it changes, train, validate when due, save.
    """
    logger = get_logger()
    stages = stages_from_config(cfg)
    amp_dtype = resolve_amp_dtype(cfg.train.amp_dtype, info.device)
    get_score(cfg.eval.score)  # an unknown score fails before anything is loaded
    if resume:
        state = resume_run(cfg, model, info)
    else:
        seed_everything(cfg.train.seed + info.rank)
        state = RunState()
    if info.is_main:
        save_config(cfg, Path(cfg.run_dir) / CONFIG_FILE)
    if state.epoch >= cfg.train.epochs:
        logger.info("nothing to train: %d of %d epochs done", state.epoch, cfg.train.epochs)
        return {"best_AP": state.best_ap, "last_metrics": {}, "epoch": state.epoch - 1}

    model.to(info.device)
    if info.device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    loader, sampler = _train_loader(cfg, train_set, info)
    writer = ScalarWriter(Path(cfg.run_dir) / "tensorboard", enabled=info.is_main)
    logger.info("TensorBoard scalars: %s", "on" if writer.active else "off (tensorboard not installed)")
    writer.add_text("config", yaml.safe_dump(config_to_dict(cfg), sort_keys=False), code=True)
    first_epoch, active, metrics = state.epoch, None, {}
    try:
        for epoch in range(first_epoch, cfg.train.epochs):
            spec = stage_at(stages, epoch)
            if active is None or active.spec is not spec:
                resumed = state.resumed if epoch == first_epoch else None
                active = enter_stage(
                    model, spec, epoch=epoch, step=step, info=info, amp_dtype=amp_dtype, resumed=resumed
                )
            train_epoch(
                cfg,
                model,
                active,
                step,
                (loader, sampler, train_set),
                epoch=epoch,
                state=state,
                info=info,
                amp_dtype=amp_dtype,
                writer=writer,
                progress=progress,
            )
            metrics = {}
            if val_set is not None and validates_after(cfg, epoch):
                metrics = validate(
                    cfg, model, val_set, epoch=epoch, info=info, writer=writer, progress=progress
                )
            save_epoch(cfg, model, active, epoch=epoch, state=state, metrics=metrics, info=info)
        writer.add_hparams(flat_hparams(config_to_dict(cfg)), {"best_AP": state.best_ap, **metrics})
    finally:
        writer.close()
    return {"best_AP": state.best_ap, "last_metrics": metrics, "epoch": cfg.train.epochs - 1}
