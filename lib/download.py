"""Released weights, data and generation models by name: ``python -m lib.download NAME... [--dir weights/]``.

``--list`` prints the table of known artifacts. Three kinds:

- a file of a Hugging Face Hub repository (the released MultiShiftSeg checkpoints, the generated
  training data): fetched into the Hub cache with ``huggingface_hub.hf_hub_download`` and placed in
  ``--dir`` (a hard link to the cached file where the file system allows it, else a copy);
- a whole Hub repository in diffusers / transformers layout (the generation models of
  ``exp/generation.yaml``): fetched into the Hub cache with ``huggingface_hub.snapshot_download``,
  where ``python -m generation`` finds it by its id without the network;
- a file that exists only behind a Google Drive link (the two starting checkpoints): its link, file
  name and place are printed, since Drive has no client this project should depend on.

After each artifact the command that uses it is printed (for the released checkpoints: the test run
that reproduces the paper's RoadAnomaly row). Nothing else in this project touches the network; with
``HF_HUB_OFFLINE=1`` (set by the Makefile and CI) the Hub library answers from its cache only.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lib.atomic import atomic_open
from lib.cli_errors import run_cli
from lib.errors import UnknownNameError, UserError

HUB_FILE = "hub file"
HUB_REPO = "hub repository"
LINK = "link"

PAPER_ROW = "the paper's RoadAnomaly row (AUROC / AP / FPR95)"


@dataclass(frozen=True)
class Artifact:
    """One downloadable thing: what it is, where it lives, and what to run with it."""

    name: str
    kind: str
    what: str
    source: str
    """The Hub repository id (``owner/name``) or, for a link, the URL."""
    filename: str = ""
    """The file in the repository, or the name to save a linked file under."""
    repo_type: str = "model"
    licence: str = ""
    allow_patterns: tuple[str, ...] = ()
    """For a Hub repository: the files needed (no duplicate formats)."""
    then: str = ""
    """The command to run next; ``{path}`` stands for the placed file."""
    expected: str = ""


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(
        name="multishiftseg-deeplab",
        kind=HUB_FILE,
        what="released MultiShiftSeg DeepLabv3+ WideResNet38",
        source="Cuttle-fish-my/MultiShiftSeg",
        filename="DeepLab_best.pth",
        then="python test_deeplab.py --cfg exp/DeepLab.yaml --id released_deeplab "
        "--weight_path {path} --test_dataset RoadAnomaly",
        expected="96.40 / 74.60 / 16.08",
    ),
    Artifact(
        name="multishiftseg-m2f",
        kind=HUB_FILE,
        what="released MultiShiftSeg Mask2Former R50 (Mask2Anomaly GMA decoder)",
        source="Cuttle-fish-my/MultiShiftSeg",
        filename="M2F_best.pth",
        then="python test_m2f.py --cfg exp/M2F.yaml --id released_m2f "
        "--weight_path {path} --test_dataset RoadAnomaly",
        expected="97.94 / 90.17 / 7.54",
    ),
    Artifact(
        name="dtwp-ade",
        kind=HUB_FILE,
        what="the generated CG-Aug training data (11 GB zip)",
        source="Cuttle-fish-my/DTWP_ADE",
        filename="DTWP_ADE_final.zip",
        repo_type="dataset",
        licence="Apache-2.0 (dataset card)",
        then="unzip {path} -d datasets/ and point data.multishift at the unpacked folder "
        "(default datasets/multishift_cityscapes)",
    ),
    Artifact(
        name="nvidia-wrn38-baseline",
        kind=LINK,
        what="NVIDIA's closed-world DeepLabv3+ WideResNet38 (the DeepLab starting weights; "
        "cityscapes_best.pth in NVIDIA's semantic-segmentation, sdcnet branch)",
        source="https://drive.google.com/file/d/1P4kPaMY-SmQ3yPJQTJ7xMGAB_Su-1zTl/view",
        filename="DeepLabV3+_WideResNet38_baseline.pth",
        then="python train_deeplab.py --cfg exp/DeepLab.yaml --id deeplab_run --weight_path {path}",
    ),
    Artifact(
        name="mask2anomaly-bt-f-xl",
        kind=LINK,
        what="Mask2Anomaly's first-stage Mask2Former R50 (the Mask2Former starting weights, and the "
        "CG-Aug score filter's model)",
        source="https://drive.google.com/file/d/1UVms08chnBkZta_cNumjiei6GByyM9VN/view",
        filename="bt-f-xl.pth",
        then="python train_m2f.py --cfg exp/M2F.yaml --id m2f_run --weight_path {path}",
    ),
    Artifact(
        name="sd15",
        kind=HUB_REPO,
        what="Stable Diffusion 1.5 (diffusers layout; the maintained copy of runwayml/stable-diffusion-v1-5)",
        source="stable-diffusion-v1-5/stable-diffusion-v1-5",
        licence="CreativeML OpenRAIL-M",
        allow_patterns=(
            "model_index.json",
            "scheduler/*.json",
            "tokenizer/*",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ),
        then="controlnet.base_model in exp/generation.yaml",
    ),
    Artifact(
        name="controlnet-seg",
        kind=HUB_REPO,
        what="ControlNet 1.0 conditioned on ADE20K segmentation maps (diffusers layout)",
        source="lllyasviel/sd-controlnet-seg",
        licence="OpenRAIL",
        allow_patterns=("config.json", "diffusion_pytorch_model.safetensors"),
        then="controlnet.controlnet in exp/generation.yaml",
    ),
    Artifact(
        name="sam-vit-huge",
        kind=HUB_REPO,
        what="Segment Anything ViT-H (transformers layout), the CG-Aug IoU filter",
        source="facebook/sam-vit-huge",
        licence="Apache-2.0",
        allow_patterns=("config.json", "preprocessor_config.json", "model.safetensors"),
        then="sam.path in exp/generation.yaml",
    ),
)
ARTIFACTS_BY_NAME = {artifact.name: artifact for artifact in ARTIFACTS}


def get_artifact(name: str) -> Artifact:
    """The artifact called ``name``; an unknown name is an ``UnknownNameError`` naming the nearest one."""
    if name in ARTIFACTS_BY_NAME:
        return ARTIFACTS_BY_NAME[name]
    nearest = difflib.get_close_matches(name, list(ARTIFACTS_BY_NAME), n=1, cutoff=0.0)
    raise UnknownNameError(
        f"unknown artifact {name!r}; did you mean {nearest[0]!r}? Known: {', '.join(ARTIFACTS_BY_NAME)} "
        "(python -m lib.download --list)"
    )


def artifact_table() -> str:
    """The ``--list`` table: name, kind, source, file, licence and what it is, one artifact per row."""
    rows = [("name", "kind", "source", "file", "licence", "what")]
    rows += [(a.name, a.kind, a.source, a.filename or "-", a.licence or "-", a.what) for a in ARTIFACTS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1] for row in rows
    )


def _hub():
    """``huggingface_hub``, or a ``UserError`` saying how to install it (it comes with diffusers)."""
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError as err:
        raise UserError(
            "lib.download needs huggingface_hub: pip install 'multishiftseg[hub]' (or '[gen]')"
        ) from err
    return huggingface_hub


def _offline_hint(hub, artifact: Artifact, err: Exception) -> UserError:
    offline = hub.constants.is_offline_mode()
    hint = (
        " HF_HUB_OFFLINE is set (the Makefile and CI set it), so only the local Hugging Face cache was "
        "searched; run the download in a shell without it, e.g. HF_HUB_OFFLINE=0 python -m lib.download "
        f"{artifact.name}"
        if offline
        else ""
    )
    reason = str(err).rstrip(". ")
    return UserError(
        f"cannot fetch {artifact.name} ({artifact.source}): {type(err).__name__}: {reason}.{hint}"
    )


def place(source: Path, target: Path) -> Path:
    """Make ``target`` hold the file ``source`` (a cached Hub file): a hard link to its blob when both
    are on one file system, else an atomic copy. An existing identical ``target`` is left alone."""
    blob = source.resolve()
    if target.exists() and os.path.samefile(blob, target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(blob, target)
    except OSError:
        with open(blob, "rb") as src, atomic_open(target) as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
    return target


def fetch(artifact: Artifact, *, folder: Path, cache_dir: str | None = None) -> Path | None:
    """Fetch one artifact; return the placed file (Hub file), the cached snapshot folder (Hub
    repository), or ``None`` for a link (nothing can be fetched; the instructions are printed)."""
    if artifact.kind == LINK:
        return None
    hub = _hub()
    errors = (hub.errors.HfHubHTTPError, OSError)  # a cache miss offline is an OSError
    try:
        if artifact.kind == HUB_FILE:
            cached = hub.hf_hub_download(
                artifact.source, artifact.filename, repo_type=artifact.repo_type, cache_dir=cache_dir
            )
            return place(Path(cached), folder / artifact.filename)
        return Path(
            hub.snapshot_download(
                artifact.source,
                repo_type=artifact.repo_type,
                allow_patterns=list(artifact.allow_patterns),
                cache_dir=cache_dir,
            )
        )
    except errors as err:
        raise _offline_hint(hub, artifact, err) from err


def report(artifact: Artifact, result: Path | None, folder: Path) -> str:
    """What was done (or what to do by hand) and the command to run next."""
    if artifact.kind == LINK:
        target = folder / artifact.filename
        state = "already there" if target.is_file() else "download it by hand"
        lines = [
            f"{artifact.name}: {artifact.what}",
            f"  {state}: {artifact.source}",
            f"  save it as {target}",
        ]
        path = target
    elif artifact.kind == HUB_FILE:
        lines = [f"{artifact.name}: {artifact.what}", f"  -> {result}"]
        path = result
    else:
        lines = [f"{artifact.name}: {artifact.what}", f"  cached in {result}", f"  id: {artifact.source}"]
        path = Path(artifact.source)
    if artifact.then:
        verb = "used as" if artifact.kind == HUB_REPO else "then"
        lines.append(f"  {verb}: {artifact.then.format(path=path)}")
    if artifact.expected:
        lines.append(f"  expected: {artifact.expected} ({PAPER_ROW})")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fetch released weights, data and generation models by name (see --list)."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="artifacts to fetch (see --list)")
    parser.add_argument("--list", action="store_true", help="print the known artifacts and exit")
    parser.add_argument("--dir", default="weights", help="where files go (default: weights/)")
    parser.add_argument(
        "--cache_dir", default=None, help="Hugging Face cache folder (default: the library's, HF_HOME)"
    )
    return parser


def main(args: argparse.Namespace) -> list[Path | None]:
    """Print the table (``--list``) or fetch every named artifact, printing what to run next."""
    if args.list or not args.names:
        print(artifact_table())
        return []
    artifacts = [get_artifact(name) for name in args.names]
    folder = Path(args.dir)
    results = []
    for artifact in artifacts:
        result = fetch(artifact, folder=folder, cache_dir=args.cache_dir)
        print(report(artifact, result, folder), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    run_cli(main, get_args_parser())
