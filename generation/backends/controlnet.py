"""The ``controlnet`` backend: diffusers ``StableDiffusionControlNetPipeline`` (SD 1.5 + segmentation
ControlNet) with the published sampler: DDIM, 50 steps, eta 0, guidance 9.0, control scale 1.0, the
condition resized (nearest) to 512 px on the short side with both sides rounded to multiples of 64, and
the image resized (bilinear) back to the condition's size.

Weights come from local folders in diffusers layout or from the user's Hugging Face cache; every load
passes ``local_files_only=True``, so nothing is ever downloaded, and a missing model is an error that
names the path. Noise comes from a CPU ``torch.Generator`` seeded per image, so a seed gives the same
latents on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from generation.backends import register_backend
from generation.config import ControlNetConfig, GenerationConfig
from generation.local_models import missing_model_error, resolve_model_path
from lib.config import ConfigError

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def control_size(h: int, w: int, resolution: int) -> tuple[int, int]:
    """(height, width) with the short side scaled to ``resolution``, each rounded to a multiple of 64."""
    k = resolution / min(h, w)
    return max(64, int(np.round(h * k / 64.0)) * 64), max(64, int(np.round(w * k / 64.0)) * 64)


def load_controlnet_pipeline(
    base_model: str, controlnet: str, *, dtype: torch.dtype = torch.float32
) -> object:
    """Load SD 1.5 + ControlNet from ``base_model`` / ``controlnet`` (folders or cached ids), DDIM
    scheduler, no safety checker; a missing or incomplete model is a ``FileNotFoundError``."""
    from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline

    try:
        net = ControlNetModel.from_pretrained(controlnet, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as err:
        raise missing_model_error("ControlNet", controlnet, err) from None
    try:
        pipe = StableDiffusionControlNetPipeline.from_pretrained(
            base_model,
            controlnet=net,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            torch_dtype=dtype,
            local_files_only=True,
        )
    except (OSError, ValueError) as err:
        raise missing_model_error("Stable Diffusion base model", base_model, err) from None
    if pipe.tokenizer is None or len(pipe.tokenizer) <= 2:
        raise FileNotFoundError(
            f"{base_model}: the tokenizer is empty (missing tokenizer/vocab.json or merges.txt?)"
        )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ControlNetBackend:
    """Segmentation-ControlNet image synthesis; build once, call :meth:`render` per image."""

    name = "controlnet"

    def __init__(self, *, pipe: object, cfg: ControlNetConfig, device: str) -> None:
        self.pipe = pipe
        self.cfg = cfg
        self.device = device

    @torch.no_grad()
    def render_batch(
        self,
        conditions: Sequence[np.ndarray],
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        seeds: Sequence[int],
    ) -> list[np.ndarray]:
        """Render several same-size ``[H, W, 3]`` uint8 conditions in one batched sampler call."""
        if not (len(conditions) == len(prompts) == len(negative_prompts) == len(seeds)) or not conditions:
            raise ValueError("render_batch: conditions, prompts, negative prompts and seeds differ in length")
        h, w = conditions[0].shape[:2]
        if any(c.shape != (h, w, 3) or c.dtype != np.uint8 for c in conditions):
            raise ValueError(f"render_batch: every condition must be [{h}, {w}, 3] uint8")
        ch, cw = control_size(h, w, self.cfg.resolution)
        control = [
            Image.fromarray(cv2.resize(c, (cw, ch), interpolation=cv2.INTER_NEAREST)) for c in conditions
        ]
        out = self.pipe(
            prompt=list(prompts),
            negative_prompt=list(negative_prompts),
            image=control,
            height=ch,
            width=cw,
            num_inference_steps=self.cfg.steps,
            guidance_scale=self.cfg.guidance,
            controlnet_conditioning_scale=self.cfg.control_scale,
            eta=self.cfg.eta,
            generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
            output_type="np",
        ).images
        images = np.clip(np.asarray(out, dtype=np.float32) * 255.0, 0, 255).astype(np.uint8)
        return [cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images]

    def render(self, condition_rgb: np.ndarray, prompt: str, negative_prompt: str, seed: int) -> np.ndarray:
        """One image ``[H, W, 3]`` uint8 for one ``[H, W, 3]`` uint8 condition map."""
        return self.render_batch([condition_rgb], [prompt], [negative_prompt], [seed])[0]


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """Half precision (``fp16``/``bf16``) on CUDA; always fp32 on a CPU."""
    if name not in _DTYPES:
        raise ConfigError(f"controlnet.dtype: unknown {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name] if torch.device(device).type == "cuda" else torch.float32


@register_backend("controlnet")
def build_controlnet_backend(cfg: GenerationConfig) -> ControlNetBackend:
    """Load the pipeline named in ``cfg.controlnet`` and place it on ``cfg.device`` (or offload it)."""
    section = cfg.controlnet
    pipe = load_controlnet_pipeline(
        resolve_model_path(section.base_model, "Stable Diffusion base model"),
        resolve_model_path(section.controlnet, "ControlNet"),
        dtype=resolve_dtype(section.dtype, cfg.device),
    )
    if section.attention_slicing:
        pipe.enable_attention_slicing()
    if section.cpu_offload:
        if torch.device(cfg.device).type != "cuda":
            raise ConfigError("controlnet.cpu_offload needs a CUDA device")
        pipe.enable_model_cpu_offload(device=cfg.device)
    else:
        pipe.to(cfg.device)
    return ControlNetBackend(pipe=pipe, cfg=section, device=cfg.device)
