"""Tiny randomly initialised CG-Aug models (SD-1.5-style ControlNet pipeline, SAM) built from configs.

They exercise the real loading and sampling code without any download: the tests and
``benchmarks/bench_generation.py`` save them to a folder and point the generation config at it.
Their images are noise; only shapes, plumbing and speed mean anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = ["<|startoftext|>", "<|endoftext|>", "!", "a", "b", "c", "d", "e", "an", "the", "road"]


def save_controlnet_pipeline(
    folder: str | Path,
    *,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module,
    tokenizer: object,
    unet: torch.nn.Module,
    controlnet: torch.nn.Module,
    scheduler: object,
) -> None:
    """Assemble SD + ControlNet parts and save them in the layout the ``controlnet`` backend loads:
    ``folder/base`` (the pipeline, no safety checker) and ``folder/controlnet``."""
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        controlnet=controlnet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(Path(folder) / "base")
    controlnet.save_pretrained(Path(folder) / "controlnet")


def save_tiny_sd_controlnet(folder: str | Path) -> None:
    """Save a tiny SD-1.5-style pipeline (folder/base) and a segmentation ControlNet (folder/controlnet)."""
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    folder = Path(folder)
    tok_dir = folder / "tok"
    tok_dir.mkdir(parents=True)
    vocab = {t: i for i, t in enumerate(VOCAB)} | {
        f"{t}</w>": len(VOCAB) + i for i, t in enumerate(VOCAB[2:])
    }
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
    )
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    save_controlnet_pipeline(
        folder,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        controlnet=controlnet,
        scheduler=DDIMScheduler(),
    )


def save_tiny_sam(folder: str | Path) -> None:
    """Save a tiny SAM (model + PIL image processor) whose sizes match each other."""
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    from generation.filters import sam_image_processor_class

    torch.manual_seed(0)
    folder = Path(folder)
    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        mlp_dim=64,
        output_channels=16,
        image_size=64,
        patch_size=16,
        global_attn_indexes=[0],
        window_size=2,
        num_pos_feats=8,
    )
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16
    )
    config = SamConfig(
        vision_config=vision.to_dict(),
        prompt_encoder_config=prompt.to_dict(),
        mask_decoder_config=decoder.to_dict(),
    )
    SamModel(config).save_pretrained(folder)
    sam_image_processor_class()(
        size={"longest_edge": 64},
        pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16},
        mask_pad_size={"height": 16, "width": 16},
    ).save_pretrained(folder)
