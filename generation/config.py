"""The generation config tree (nested dataclasses), read with :func:`lib.config.load_config`.

Defaults are the published CG-Aug settings; ``exp/generation.yaml`` spells them out and
``exp/generation_toy.yaml`` switches to the procedural backend on ToyShift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lib.config import IMAGENET_MEAN, IMAGENET_STD, fixed_list


@dataclass
class SourceConfig:
    """Cityscapes-layout input: ``root/gtFine/{split}/{city}/*_gtFine_labelTrainIds.png``.

    ``condition_from``: ``color`` reads ``*_gtFine_color.png`` (the published input), ``trainIds``
    paints the trainId map. ``cities``: empty = every city folder of the split.
    """

    root: str = "./datasets/cityscapes"
    split: str = "train"
    cities: list[str] = field(default_factory=list)
    condition_from: str = "color"


@dataclass
class OutputConfig:
    """Where the generated dataset goes and whether the condition maps are kept."""

    root: str = "./datasets/multishift_cityscapes"
    save_condition: bool = True


@dataclass
class ObjectsConfig:
    """Anomaly object bank: ``ade20k`` (ADE20K-full under ``ade20k_root``), ``toyshift`` (ToyShift's
    training anomaly families) or ``auto`` (ade20k for controlnet, toyshift for procedural)."""

    source: str = "auto"
    ade20k_root: str = "./datasets/ADE20K"
    ood_split: str = "train"
    index_cache: str = ""


@dataclass
class PasteConfig:
    """Pasting rule, lengths in px at ``reference_short_side`` (Cityscapes: 1024)."""

    size_range: list[int] = fixed_list(2, [200, 500])
    margin: int = 150
    min_margin: int = 10
    margin_step: int = 10
    reference_short_side: int = 1024


@dataclass
class PromptConfig:
    """Prompt lists and probabilities; ``{PLACE}``, ``{WEATHER}``, ``{TIME}``, ``{name}`` are filled in."""

    template: str = "An image sampled from various stereo video sequences taken by dash cam."
    domain_template: str = (
        "An image sampled from various stereo video sequences taken by dash cam in {PLACE} in a "
        "{WEATHER} {TIME}."
    )
    plain_prob: float = 0.5
    weathers: list[str] = field(default_factory=lambda: ["cloudy", "rainy", "snowy", "foggy", "clear"])
    times: list[str] = field(default_factory=lambda: ["day", "night"])
    time_probs: list[float] = field(default_factory=lambda: [0.7, 0.3])
    places: list[str] = field(default_factory=lambda: ["Zurich"])
    anomaly: str = "There is a {name} accidentally staying on the road."
    quality: str = "best quality, extremely detailed, realistic, high resolution"
    negative: str = "lowres, blurry, cartoon, worst quality, low quality"


@dataclass
class ControlNetConfig:
    """Stable Diffusion 1.5 + segmentation ControlNet, from local folders (diffusers layout) or the
    Hugging Face cache (``local_files_only``: nothing is downloaded)."""

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    controlnet: str = "lllyasviel/sd-controlnet-seg"
    steps: int = 50
    eta: float = 0.0
    guidance: float = 9.0
    control_scale: float = 1.0
    resolution: int = 512
    dtype: str = "fp16"
    attention_slicing: bool = False
    cpu_offload: bool = False


@dataclass
class SamFilterConfig:
    """SAM box-prompt filter: keep if IoU(SAM mask, pasted mask) > ``threshold``."""

    enabled: bool = True
    path: str = "facebook/sam-vit-huge"
    threshold: float = 0.7


@dataclass
class ScoreFilterConfig:
    """Anomaly-score filter: mean score of ``model`` inside the object mask must be >= ``threshold``."""

    enabled: bool = False
    model: str = "mask2anomaly_r50"
    model_kwargs: dict = field(default_factory=dict)
    weight_path: str = ""
    threshold: float = -3.02
    mean: list[float] = fixed_list(3, IMAGENET_MEAN)
    std: list[float] = fixed_list(3, IMAGENET_STD)


@dataclass
class GenerationConfig:
    """Everything ``python -m generation`` needs. ``batch_size``: images per backend call (the
    ControlNet sampler renders them together; each keeps its own prompt, condition and seed)."""

    backend: str = "controlnet"
    device: str = "cuda"
    seed: int = 214748365
    max_attempts: int = 5
    batch_size: int = 1
    source: SourceConfig = field(default_factory=SourceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    paste: PasteConfig = field(default_factory=PasteConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    controlnet: ControlNetConfig = field(default_factory=ControlNetConfig)
    sam: SamFilterConfig = field(default_factory=SamFilterConfig)
    score: ScoreFilterConfig = field(default_factory=ScoreFilterConfig)
