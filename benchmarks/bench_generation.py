"""How fast is CG-Aug generation per backend?

Default (tiny) mode prints images/s for the procedural backend at Cityscapes size (1024x2048) and
for a tiny random SD + ControlNet pipeline (2 steps, 64x128 control map), on this machine's device.

``--real-size`` times the published models' architectures with random weights, built from configs
(no download): the SD-1.5 UNet (320/640/1280/1280, cross-attention 768, 8 heads, 2 layers per
block), its VAE (128/256/512/512, 4 latent channels), a CLIP text encoder of SD-1.5's size (768
wide, 12 layers, 12 heads, 49408-token vocabulary, 77 positions; only the tokenizer is the tiny
vocabulary of :mod:`generation.tiny_models`, since only shapes matter), ``ControlNetModel.from_unet``
and DDIM. The models are built directly on the GPU when there is one, saved in half precision to a
temporary folder and loaded back through the project's own ``controlnet`` backend, which then renders
a 1024x2048 street condition at 512 px short side (a 512x1024 control map) with ``--steps`` DDIM
steps. SAM (``--sam vit_b|vit_h``) is built likewise, loaded with :func:`generation.filters.load_sam`
and timed as the box-prompted IoU filter on a 1024x2048 image. Seconds per step come from two step
counts, so the cost of other step counts can be extrapolated. Random weights give noise images:
only the times and memory mean anything.

It also times batches of ``--batch-size`` images per sampler call (``generation.batch_size``) and
prints the speed-up over one image per call.

``--real-size --smoke`` keeps every layer count, block type, head count and the 49408-token
vocabulary but narrows the widths (UNet and VAE 32/64/128/128, text encoder 64 wide) and samples 1 step
on a 64x128 control map with a tiny SAM, so the whole path runs on a CPU in seconds.

Run from the repository root::

    python -m benchmarks.bench_generation
    python -m benchmarks.bench_generation --real-size [--steps 50] [--dtype fp16|bf16] [--sam vit_h]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation.backends import build_backend  # noqa: E402
from generation.condition import condition_from_train_ids  # noqa: E402
from generation.config import GenerationConfig  # noqa: E402
from generation.tiny_models import (  # noqa: E402
    VOCAB,
    save_controlnet_pipeline,
    save_tiny_sam,
    save_tiny_sd_controlnet,
)

PROMPT = "An image taken by dash cam in Paris in a foggy night."
NEGATIVE = "lowres, blurry, cartoon, worst quality, low quality"
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_POSITIONS = 77


@dataclass(frozen=True)
class SDShape:
    """Widths and depths of an SD-1.5-style pipeline (the UNet's channels fix the ControlNet's)."""

    unet_channels: tuple[int, ...]
    vae_channels: tuple[int, ...]
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int


SD15 = SDShape((320, 640, 1280, 1280), (128, 256, 512, 512), 768, 12, 12, 3072)
SD15_NARROW = SDShape((32, 64, 128, 128), (32, 64, 128, 128), 64, 12, 4, 256)
"""SD-1.5's depths, block types and vocabulary with narrow widths: the ``--smoke`` pipeline."""

SAM_VISION = {
    "vit_b": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]
    ),
    "vit_h": dict(
        hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]
    ),
}
"""Image-encoder sizes of the released SAM checkpoints (prompt encoder and mask decoder are shared)."""


def street_label(h: int, w: int) -> np.ndarray:
    """A ``[h, w]`` trainId map: building (top), sidewalk band, road (bottom half)."""
    label = np.full((h, w), 10, dtype=np.uint8)
    label[h // 4 : h // 2] = 2
    label[h // 2 :] = 0
    return label


def time_backend(backend, cond: np.ndarray, n: int) -> float:
    """Images/s of ``n`` renders after one warm-up render."""
    backend.render(cond, PROMPT, "blurry", 0)
    start = time.perf_counter()
    for i in range(n):
        backend.render(cond, PROMPT, "blurry", i + 1)
    return n / (time.perf_counter() - start)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_memory_gb(device: str) -> float | None:
    """Peak CUDA memory allocated since the last reset (None on a CPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None


def reset_peak_memory(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def save_small_vocab_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over :data:`generation.tiny_models.VOCAB` (ids far below 49408)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(VOCAB)} | {
        f"{t}</w>": len(VOCAB) + i for i, t in enumerate(VOCAB[2:])
    }
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def save_random_sd15_controlnet(
    folder: str | Path, *, shape: SDShape = SD15, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, int]:
    """Save a random SD-1.5-architecture pipeline (``folder/base``) and ControlNet (``folder/controlnet``).

    The modules are built (and randomly initialised) on ``device``, cast to ``dtype`` and saved from
    the CPU. Returns the parameter count of each part.
    """
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    save_small_vocab_tokenizer(folder / "tok")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tok", model_max_length=CLIP_MAX_POSITIONS)
    if not 2 < len(tokenizer) < CLIP_VOCAB_SIZE:
        raise RuntimeError(f"small-vocabulary tokenizer has {len(tokenizer)} tokens")
    torch.manual_seed(0)
    n_down = len(shape.unet_channels)
    with torch.device(device):
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB_SIZE,
                hidden_size=shape.text_hidden,
                intermediate_size=shape.text_intermediate,
                num_hidden_layers=shape.text_layers,
                num_attention_heads=shape.text_heads,
                max_position_embeddings=CLIP_MAX_POSITIONS,
                projection_dim=shape.text_hidden,
                hidden_act="quick_gelu",
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * (n_down - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n_down - 1),
            block_out_channels=shape.unet_channels,
            layers_per_block=2,
            cross_attention_dim=shape.text_hidden,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(shape.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(shape.vae_channels),
            block_out_channels=shape.vae_channels,
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=512,
        )
        controlnet = ControlNetModel.from_unet(unet)
    parts = {"unet": unet, "controlnet": controlnet, "vae": vae, "text_encoder": text}
    for module in parts.values():
        module.to("cpu", dtype)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    save_controlnet_pipeline(
        folder,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        controlnet=controlnet,
        scheduler=scheduler,
    )
    return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}


def save_random_sam(folder: str | Path, variant: str, *, device: str = "cpu") -> int:
    """Save a random SAM of ``variant`` size (``vit_b``/``vit_h``) with the default 1024-px processor;
    ``tiny`` saves :func:`generation.tiny_models.save_tiny_sam`. Returns the parameter count."""
    from transformers import SamConfig, SamModel, SamVisionConfig

    from generation.filters import sam_image_processor_class

    if variant == "tiny":
        save_tiny_sam(folder)
        return sum(p.numel() for p in SamModel.from_pretrained(folder, local_files_only=True).parameters())
    if variant not in SAM_VISION:
        raise ValueError(f"unknown SAM size {variant!r}; expected one of {', '.join(SAM_VISION)} or tiny")
    vision = SAM_VISION[variant]
    torch.manual_seed(0)
    config = SamConfig(vision_config=SamVisionConfig(**vision, mlp_dim=4 * vision["hidden_size"]).to_dict())
    with torch.device(device):
        model = SamModel(config)
    model.to("cpu").save_pretrained(folder)
    sam_image_processor_class()().save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def _timed(fn, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_real_controlnet(
    folder: Path,
    *,
    device: str,
    dtype: str,
    smoke: bool,
    steps: int,
    runs: int,
    batch_size: int = 4,
) -> dict[str, object]:
    """Build, save, load and time the ``controlnet`` backend, one image per call and ``batch_size``
    images per call (as ``generation.batch_size`` renders them); returns the measured numbers."""
    shape = SD15_NARROW if smoke else SD15
    label_hw, resolution = ((64, 128), 64) if smoke else ((1024, 2048), 512)
    save_dtype = torch.float32 if torch.device(device).type == "cpu" else torch.float16
    start = time.perf_counter()
    params = save_random_sd15_controlnet(folder, shape=shape, device=device, dtype=save_dtype)
    build_save_s = time.perf_counter() - start
    cfg = GenerationConfig(device=device)
    cfg.controlnet = dataclasses.replace(
        cfg.controlnet,
        base_model=str(folder / "base"),
        controlnet=str(folder / "controlnet"),
        steps=steps,
        resolution=resolution,
        dtype=dtype,
    )
    reset_peak_memory(device)
    start = time.perf_counter()
    backend = build_backend("controlnet", cfg)
    load_s = time.perf_counter() - start
    pipe = backend.pipe
    vocab = pipe.text_encoder.config.vocab_size
    if vocab != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"text encoder vocabulary {vocab}, expected {CLIP_VOCAB_SIZE}")
    cond = condition_from_train_ids(street_label(*label_hw))

    def render(n_steps: int, seed: int) -> np.ndarray:
        backend.cfg = dataclasses.replace(cfg.controlnet, steps=n_steps)
        return backend.render(cond, PROMPT, NEGATIVE, seed)

    image = render(1, 0)
    if image.shape != (*label_hw, 3) or image.dtype != np.uint8:
        raise RuntimeError(
            f"controlnet rendered {image.shape} {image.dtype}, expected {(*label_hw, 3)} uint8"
        )
    one = float(np.median([_timed(lambda i=i: render(1, i + 1), device) for i in range(runs)]))
    full = float(np.median([_timed(lambda i=i: render(steps, i + 1), device) for i in range(runs)]))
    per_step = (full - one) / (steps - 1) if steps > 1 else None
    backend.cfg = dataclasses.replace(cfg.controlnet, steps=steps)
    seeds = [list(range(i * batch_size, (i + 1) * batch_size)) for i in range(runs)]
    n = len(seeds[0])
    batched = [
        _timed(lambda s=s: backend.render_batch([cond] * n, [PROMPT] * n, [NEGATIVE] * n, s), device) / n
        for s in seeds
    ]
    batched_per_image = float(np.median(batched))
    return {
        "params_M": {k: round(v / 1e6, 2) for k, v in params.items()},
        "sizes": "SD-1.5 widths" if not smoke else "narrow widths (smoke)",
        "condition_hw": list(label_hw),
        "resolution": resolution,
        "unet_dtype": str(pipe.unet.dtype),
        "text_encoder_vocab": vocab,
        "tokenizer_tokens": len(pipe.tokenizer),
        "steps": steps,
        "build_save_s": round(build_save_s, 2),
        "load_s": round(load_s, 2),
        "s_per_image": round(full, 4),
        "images_per_s": round(1.0 / full, 4),
        "s_one_step_image": round(one, 4),
        "s_per_step": None if per_step is None else round(per_step, 4),
        "s_fixed_per_image": None if per_step is None else round(max(one - per_step, 0.0), 4),
        "s_per_image_50_steps_extrapolated": None if per_step is None else round(one + 49 * per_step, 3),
        "batch_size": batch_size,
        "s_per_image_batched": round(batched_per_image, 4),
        "batched_speedup": round(full / batched_per_image, 2),
        "peak_gpu_gb": peak_memory_gb(device),
    }


def time_real_sam(folder: Path, *, variant: str, device: str, runs: int) -> dict[str, object]:
    """Build, save, load (``load_sam``) and time SAM's box-prompted IoU filter on one image."""
    from generation.filters import SamIoUFilter, load_sam

    start = time.perf_counter()
    params = save_random_sam(folder, variant, device=device)
    build_save_s = time.perf_counter() - start
    reset_peak_memory(device)
    start = time.perf_counter()
    model, processor = load_sam(str(folder), device)
    load_s = time.perf_counter() - start
    h, w = (64, 128) if variant == "tiny" else (1024, 2048)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[h // 2 : h // 2 + h // 8, w // 3 : w // 3 + w // 10] = True
    sam_filter = SamIoUFilter(model=model, processor=processor)
    result = sam_filter(image, mask)
    if result.mask.shape != (h, w):
        raise RuntimeError(f"SAM mask {result.mask.shape}, expected {(h, w)}")
    times = [_timed(lambda: sam_filter(image, mask), device) for _ in range(runs)]
    return {
        "variant": variant,
        "params_M": round(params / 1e6, 2),
        "image_hw": [h, w],
        "dtype": str(next(model.parameters()).dtype),
        "build_save_s": round(build_save_s, 2),
        "load_s": round(load_s, 2),
        "s_per_box": round(float(np.median(times)), 4),
        "peak_gpu_gb": peak_memory_gb(device),
    }


def versions() -> str:
    import diffusers
    import transformers

    return (
        f"python {platform.python_version()}  torch {torch.__version__}  diffusers {diffusers.__version__}  "
        f"transformers {transformers.__version__}"
    )


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if torch.device(device).type == "cuda" else platform.machine()


def run_tiny(device: str) -> None:
    proc = build_backend("procedural", GenerationConfig(backend="procedural", device="cpu"))
    rate = time_backend(proc, condition_from_train_ids(street_label(1024, 2048)), 3)
    print(f"procedural  cpu   1024x2048            {rate:8.2f} images/s")
    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_sd_controlnet(Path(tmp))
        cfg = GenerationConfig(device=device)
        cfg.controlnet.base_model, cfg.controlnet.controlnet = f"{tmp}/base", f"{tmp}/controlnet"
        cfg.controlnet.steps, cfg.controlnet.resolution, cfg.controlnet.dtype = 2, 64, "fp32"
        rate = time_backend(
            build_backend("controlnet", cfg), condition_from_train_ids(street_label(64, 128)), 5
        )
        print(f"controlnet  {device:5s} tiny random, 2 steps {rate:8.2f} images/s  (fp32, 64x128)")


def run_real_size(device: str, args: argparse.Namespace) -> None:
    steps = 1 if args.smoke and args.steps is None else (args.steps or 50)
    with tempfile.TemporaryDirectory() as tmp:
        cn = time_real_controlnet(
            Path(tmp) / "sd",
            device=device,
            dtype=args.dtype,
            smoke=args.smoke,
            steps=steps,
            runs=args.runs,
            batch_size=args.batch_size,
        )
    print(f"controlnet  {cn['sizes']}, params (M) {cn['params_M']}")
    print(
        f"  {cn['condition_hw'][0]}x{cn['condition_hw'][1]} condition at {cn['resolution']} px short side, "
        f"{steps} DDIM steps, unet {cn['unet_dtype']}: {cn['s_per_image']:.3f} s/image "
        f"({cn['images_per_s']:.3f} images/s)"
    )
    if cn["s_per_step"] is not None:
        print(
            f"  {cn['s_per_step']:.4f} s/step + {cn['s_fixed_per_image']:.3f} s fixed per image; "
            f"50 steps ~ {cn['s_per_image_50_steps_extrapolated']:.2f} s/image"
        )
    print(
        f"  batches of {cn['batch_size']}: {cn['s_per_image_batched']:.3f} s/image, "
        f"{cn['batched_speedup']:.2f}x one image per call"
    )
    print(
        f"  build+save {cn['build_save_s']:.1f} s, load {cn['load_s']:.1f} s, peak GPU {cn['peak_gpu_gb']} GB"
    )
    variant = "tiny" if args.smoke else args.sam
    with tempfile.TemporaryDirectory() as tmp:
        sam = time_real_sam(Path(tmp), variant=variant, device=device, runs=args.runs)
    print(
        f"sam {variant} ({sam['params_M']} M params, {sam['dtype']}), box prompt on "
        f"{sam['image_hw'][0]}x{sam['image_hw'][1]}: {sam['s_per_box']:.4f} s; build+save "
        f"{sam['build_save_s']:.1f} s, load {sam['load_s']:.1f} s, peak GPU {sam['peak_gpu_gb']} GB"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time CG-Aug generation backends (random weights).")
    parser.add_argument("--real-size", action="store_true", help="SD-1.5 / ControlNet / SAM architectures")
    parser.add_argument(
        "--smoke", action="store_true", help="with --real-size: narrow widths, 1 step, 1 CPU thread"
    )
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50; 1 with --smoke)")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16"), help="on CUDA (CPU: fp32)")
    parser.add_argument("--sam", default="vit_h", choices=tuple(SAM_VISION))
    parser.add_argument("--runs", type=int, default=2, help="timed renders / SAM calls after a warm-up")
    parser.add_argument("--batch-size", type=int, default=4, help="images per call for the batched timing")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    return parser


def main(args: argparse.Namespace) -> None:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        torch.set_num_threads(1)  # tiny tensors: on a shared CPU, OpenMP waits cost 40x the compute
    print(f"{versions()}  device {device} ({device_name(device)})")
    if args.real_size:
        run_real_size(device, args)
    else:
        run_tiny(device)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
