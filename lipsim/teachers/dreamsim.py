"""DreamSim teachers (the ensemble and its single-backbone variants) built from the `dreamsim`
package's own ViT code, with weights read from a local folder (never downloaded here).

What DreamSim computes (dreamsim 0.2.1, `PerceptualModel.embed` with `normalize_embeds=True`,
the default of `dreamsim.dreamsim()`, which is how LipSim's code built its teacher):
  1. per backbone, normalise the [0, 1] 224x224 image with that backbone's mean/std
     (ImageNet for DINO, OpenAI-CLIP for CLIP and OpenCLIP);
  2. take its feature: DINO -> the CLS token at the output of block 11 (before the final
     LayerNorm, 768-d); CLIP / OpenCLIP -> the final CLS token after LayerNorm times the
     visual projection (512-d, "embedding");
  3. concatenate in backbone order (ensemble: DINO B/16, CLIP B/16, OpenCLIP B/16 ->
     768 + 512 + 512 = 1792-d);
  4. subtract the embedding's own mean over its coordinates and divide by its l2 norm.
The distance is 1 - cos. LoRA adapters (DreamSim's finetuning) are merged into the ViT
weights at load time, so inference is plain ViTs.

This module builds the modules itself (same attribute paths as DreamSim's PerceptualModel,
`extractor_list.{i}.model...`, so DreamSim's LoRA adapter files apply unchanged) because
DreamSim's constructor downloads weights; building here lets `random_weights=True` make the
real architectures with seeded random weights offline (tests, demo), and lets a missing
weight file fail with the command that fetches it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import nn

from lipsim.registry import register
from lipsim.teachers.base import Teacher

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DINO_HUB_URL = (
    "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"
)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One DreamSim branch: how to build it, normalise its input and read its feature."""

    family: str  # "dino" | "clip" | "open_clip": selects the architecture tweaks and loader
    patch: int
    feat: str  # "cls" (block-11 CLS, pre-norm) | "embedding" (post-norm CLS @ proj)
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_file: str  # file under the teacher's weights folder


BACKBONES: dict[str, Backbone] = {
    "dino_vitb16": Backbone(
        "dino", 16, "cls", 768, IMAGENET_MEAN, IMAGENET_STD, "dino_vitbase16_pretrain.pth"
    ),
    "clip_vitb16": Backbone(
        "clip", 16, "embedding", 512, CLIP_MEAN, CLIP_STD, "clip_vitb16_pretrain.pth.tar"
    ),
    "clip_vitb32": Backbone(
        "clip", 32, "embedding", 512, CLIP_MEAN, CLIP_STD, "clip_vitb32_pretrain.pth.tar"
    ),
    "open_clip_vitb16": Backbone(
        "open_clip", 16, "embedding", 512, CLIP_MEAN, CLIP_STD, "open_clip_vitb16_pretrain.pth.tar"
    ),
    "open_clip_vitb32": Backbone(
        "open_clip", 32, "embedding", 512, CLIP_MEAN, CLIP_STD, "open_clip_vitb32_pretrain.pth.tar"
    ),
}


class _QuickGELU(nn.Module):
    """OpenAI CLIP's activation (x * sigmoid(1.702 x)); DreamSim swaps it into its CLIP ViT."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Branch(nn.Module):
    """A ViT (DINO's implementation, as DreamSim uses it) plus its normalisation and feature."""

    def __init__(self, name: str):
        super().__init__()
        from dreamsim.feature_extraction.vision_transformer import vit_base

        self.backbone_name = name
        spec = BACKBONES[name]
        self.spec = spec
        self.model = vit_base(patch_size=spec.patch)
        if spec.family in ("clip", "open_clip"):
            # CLIP's ViT has a LayerNorm before the blocks (ln_pre) where DINO has dropout,
            # and LayerNorm eps 1e-5; OpenAI CLIP also uses QuickGELU (DreamSim's loaders).
            self.model.pos_drop = nn.LayerNorm(self.model.embed_dim)
            for m in self.model.modules():
                if isinstance(m, nn.LayerNorm):
                    m.eps = 1e-5
            if spec.family == "clip":
                for blk in self.model.blocks:
                    blk.mlp.act = _QuickGELU()
            self.register_buffer("proj", torch.zeros(self.model.embed_dim, spec.dim))
        else:
            self.proj = None
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    def load_weights(self, path: Path) -> None:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if self.spec.family == "dino":
            # torch.hub's DINO file: the backbone state dict itself (hubconf loads it strictly).
            self.model.load_state_dict(sd, strict=True)
            return
        sd = dict(sd["state_dict"])  # DreamSim's *_pretrain.pth.tar: {"state_dict": {..., "proj"}}
        self.proj.copy_(sd.pop("proj"))
        self.model.load_state_dict(sd, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xn = (x - self.mean) / self.std
        if self.spec.feat == "cls":
            tokens = self.model.prepare_tokens(xn)
            for blk in self.model.blocks:
                tokens = blk(tokens)
            return tokens[:, 0]
        return self.model(xn) @ self.proj


class _Extractors(nn.Module):
    """Holds the branches under DreamSim's attribute name, so LoRA keys match."""

    def __init__(self, names):
        super().__init__()
        self.extractor_list = nn.ModuleList(Branch(n) for n in names)


def normalize_embedding(e: torch.Tensor) -> torch.Tensor:
    """DreamSim's `normalize_embedding`: centre each embedding on its own mean, unit l2 norm."""
    e = e - e.mean(dim=1, keepdim=True)
    return e / e.norm(dim=1, keepdim=True)


class DreamSimTeacher(Teacher):
    """A DreamSim embedding: concatenated branch features, DreamSim-normalised (see module doc)."""

    image_size = 224

    def __init__(self, name: str, backbones: tuple[str, ...], *, normalize: bool = True):
        super().__init__()
        self.name = name
        self.backbone_names = tuple(backbones)
        self.net = _Extractors(backbones)
        self.normalize = normalize
        self.emb_dim = sum(BACKBONES[b].dim for b in backbones)
        self.eval().requires_grad_(False)

    @property
    def branches(self) -> list[Branch]:
        return list(self.net.extractor_list)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The un-normalised per-branch features of 224x224 images in [0, 1], in order."""
        return [b(x) for b in self.branches]

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.cat(self.features(x), dim=-1)
        return normalize_embedding(e) if self.normalize else e


# --------------------------------------------------------------------------- building
def _missing_weights_error(teacher: str, folder: Path, missing: list[str]) -> FileNotFoundError:
    return FileNotFoundError(
        f"teacher {teacher!r}: weight file(s) {', '.join(missing)} not found in {folder}. "
        f"Fetch them (needs network) with the `fetch_weights` rule, or run "
        f"`python -m lipsim fetch-weights --teacher {teacher} --weights-dir {folder.parent}`; "
        f"or pass --random-weights for an untrained teacher (tests/demo only)."
    )


def _merge_lora(net: nn.Module, lora_dir: Path) -> nn.Module:
    """Apply a DreamSim LoRA adapter folder (adapter_config.json + weights) and merge it.

    Mirrors `dreamsim.dreamsim()`: a LoraConfig from the five keys DreamSim reads (older
    adapter configs carry keys newer peft versions reject), then the saved adapter weights.
    """
    from peft import LoraConfig, get_peft_model
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    with open(lora_dir / "adapter_config.json", encoding="utf-8") as fh:
        cfg = json.load(fh)
    keys = ("r", "lora_alpha", "lora_dropout", "bias", "target_modules")
    peft_model = get_peft_model(net, LoraConfig(**{k: cfg[k] for k in keys if k in cfg}))
    result = set_peft_model_state_dict(peft_model, load_peft_weights(str(lora_dir), device="cpu"))
    # Both directions matter: an unmatched adapter key is lost, a LoRA layer without saved
    # weights silently stays at its identity initialisation.
    for kind in ("unexpected_keys", "missing_keys"):
        bad = [k for k in getattr(result, kind, []) if "lora_" in k]
        if bad:
            raise ValueError(
                f"LoRA adapter {lora_dir}: {kind.replace('_', ' ')} against the "
                f"model, e.g. {bad[:3]}"
            )
    return peft_model.merge_and_unload()


def build_dreamsim(
    name: str,
    *,
    backbones: tuple[str, ...],
    lora: str | None,
    weights_dir: str | os.PathLike | None,
    device: str = "cpu",
    random_weights: bool = False,
    seed: int = 0,
) -> DreamSimTeacher:
    """Build a DreamSim teacher. Weights come from `weights_dir/<name>/` (see fetch-weights):
    the backbone files of BACKBONES and the LoRA adapter folder `lora`.
    `random_weights=True` skips all files: seeded random weights (same seed -> same model)."""
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            teacher = DreamSimTeacher(name, backbones)
            for b in teacher.branches:
                if b.proj is not None:
                    b.proj.normal_(0.0, b.model.embed_dim**-0.5)
        return teacher.to(device)
    if weights_dir is None:
        raise ValueError(f"teacher {name!r}: needs --weights-dir (or --random-weights)")
    folder = Path(weights_dir) / name
    needed = [BACKBONES[b].weights_file for b in backbones] + ([lora] if lora else [])
    missing = [f for f in needed if not (folder / f).exists()]
    if missing:
        raise _missing_weights_error(name, folder, missing)
    teacher = DreamSimTeacher(name, backbones)
    for b in teacher.branches:
        b.load_weights(folder / b.spec.weights_file)
    if lora:
        teacher.net = _merge_lora(teacher.net, folder / lora)
    return teacher.eval().requires_grad_(False).to(device)


# The registry's DreamSim teachers: name -> (backbones in concatenation order, LoRA folder).
# Their embedding size, input size and weights are their cards (lipsim.registry).
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "dreamsim_ensemble": (("dino_vitb16", "clip_vitb16", "open_clip_vitb16"), "ensemble_lora"),
    "dino_vitb16": (("dino_vitb16",), "dino_vitb16_single_lora"),
    "clip_vitb32": (("clip_vitb32",), "clip_vitb32_single_lora"),
    "open_clip_vitb32": (("open_clip_vitb32",), "open_clip_vitb32_single_lora"),
}


def _register(name: str, backbones: tuple[str, ...], lora: str) -> None:
    @register("teacher", name)
    def build(*, weights_dir=None, device="cpu", random_weights=False) -> DreamSimTeacher:
        return build_dreamsim(
            name,
            backbones=backbones,
            lora=lora,
            weights_dir=weights_dir,
            device=device,
            random_weights=random_weights,
        )


for _name, (_backbones, _lora) in VARIANTS.items():
    _register(_name, _backbones, _lora)
