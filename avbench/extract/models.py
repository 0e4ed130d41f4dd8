"""Frozen timm feature extractors for audio (1-channel spectrogram) and video (RGB frames).

Any timm model name works for either modality. The audio model gets a 1-channel stem: timm's
``in_chans=1`` sums the pretrained RGB stem weights over the input channels when it loads pretrained
weights, which is what the UAVM authors did by hand, and a local checkpoint with a 3-channel stem is
adapted the same way here. Features are ``forward_features`` (the last stage, before the head and
its norm):

* audio: input ``[B, 1, 128 mel, L frames]``, output ``[B, C, F', T']`` averaged over frequency ->
  ``[B, T', C]`` (ConvNeXt-Base: 1000 frames -> 31 steps of 1024-d, 32 frames a step);
* video: input ``[N, 3, H, W]`` ImageNet-normalised, output averaged over space -> ``[N, C]``.

A model's *identity* (name, timm version, where its weights came from and their sha256) goes into the
cache key, so caches from different extractors never mix (HEAR #37, lm-eval #4063).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from avbench.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT_SEED = 0  # random-init weights are reproducible, so two runs give one cache


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_checkpoint(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the user's file problem
            raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a checkpoint into ``model``: timm's own key filter, stem adapted to the model's channels,
    classifier weights dropped (features are taken before the head)."""
    sd = _read_checkpoint(path)
    module = importlib.import_module(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
        except Exception:  # noqa: BLE001 - the filter is best effort; strict loading below decides
            pass
    own = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k not in own:
            continue  # classifier / head weights of a model built with num_classes=0
        if v.shape != own[k].shape and v.ndim == 4 and own[k].ndim == 4 and v.shape[1] != own[k].shape[1] \
                and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:]:
            v = timm.models.adapt_input_conv(own[k].shape[1], v)
        if v.shape != own[k].shape:
            raise UserError(f"{path}: '{k}' has shape {list(v.shape)}, the model expects {list(own[k].shape)}")
        out[k] = v
    missing = [k for k in own if k not in out]
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise UserError(f"{path}: checkpoint lacks {len(missing)} weights of {type(model).__name__}, "
                        f"e.g. {', '.join(missing[:5])}{more}")
    model.load_state_dict(out, strict=True)


def build_model(name: str, *, in_chans: int, pretrained: bool, weights: str | Path | None) -> tuple[nn.Module, dict]:
    """A timm model without classifier, in eval mode, and its identity for the cache key."""
    if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
        close = timm.list_models(f"*{name.split('.')[0]}*")[:5]
        raise UserError(f"unknown timm model '{name}'" + (f"; similar: {', '.join(close)}" if close else ""))
    identity: dict[str, Any] = {"name": name, "timm": timm.__version__, "in_chans": in_chans}
    use_hub = pretrained and weights is None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(name, pretrained=use_hub, in_chans=in_chans, num_classes=0)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - hub unreachable, bad name: one clear line
        hint = ("; pass --audio-weights/--video-weights FILE for a local checkpoint, or --no-pretrained"
                if use_hub else "")
        raise UserError(f"cannot build timm model '{name}': {type(e).__name__}: {e}{hint}") from None
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"weights file not found: {path}")
        load_local_weights(model, path)
        identity["weights"] = f"sha256:{file_sha256(path)}"
        identity["weights_file"] = str(path)  # recorded, not hashed: the same file may move
    elif use_hub:
        tag = getattr(model, "pretrained_cfg", {}) or {}
        arch = tag.get("architecture", name)
        identity["weights"] = f"timm-pretrained:{arch}.{tag['tag']}" if tag.get("tag") else f"timm-pretrained:{name}"
    else:
        identity["weights"] = f"random-init:seed{RANDOM_INIT_SEED}"
    model.eval().requires_grad_(False)
    return model, identity


def key_identity(identity: dict) -> dict:
    """The part of an identity that decides the numbers (file locations excluded)."""
    return {k: v for k, v in identity.items() if k != "weights_file"}


def _nhwc(model: nn.Module) -> bool:
    return str(getattr(model, "output_fmt", "NCHW")) == "NHWC"


def _tokens_to_grid(model: nn.Module, f: Tensor) -> Tensor:
    """ViT-style ``[B, N, C]`` tokens -> ``[B, C, H', W']`` using the patch grid."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    f = f[:, prefix:]
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None or grid[0] * grid[1] != f.shape[1]:
        raise UserError(f"{type(model).__name__} returns tokens without a known grid; use a convolutional model")
    return f.transpose(1, 2).reshape(f.shape[0], f.shape[2], grid[0], grid[1])


class AudioExtractor:
    """``[B, L, 128]`` normalised fbank -> ``[B, T', C]`` features."""

    def __init__(self, model: nn.Module, identity: dict, device: torch.device, autocast_dtype: torch.dtype | None):
        self.model = model.to(device)
        self.identity = identity
        self.device = device
        self.autocast_dtype = autocast_dtype

    @torch.inference_mode()
    def __call__(self, fb: Tensor) -> Tensor:
        x = fb.to(self.device, non_blocking=True).transpose(1, 2).unsqueeze(1)  # [B, 1, mel, L]
        with _autocast(self.device, self.autocast_dtype):
            f = self.model.forward_features(x)
        f = f.float()
        if f.ndim == 3:
            f = _tokens_to_grid(self.model, f)
        elif _nhwc(self.model):
            f = f.permute(0, 3, 1, 2)
        return f.mean(dim=2).transpose(1, 2)  # mean over frequency -> [B, T', C]

    def probe(self, target_length: int, mel_bins: int) -> tuple[int, int]:
        """(steps, dim) for a ``target_length``-frame input; a model that cannot run says so."""
        try:
            out = self(torch.zeros(1, target_length, mel_bins))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001
            raise UserError(f"audio model '{self.identity['name']}' cannot run on a [1, 1, {mel_bins}, "
                            f"{target_length}] spectrogram: {type(e).__name__}: {e}") from None
        return int(out.shape[1]), int(out.shape[2])


class VideoExtractor:
    """``[N, H, W, 3]`` uint8 frames -> ``[N, C]`` features (ImageNet normalisation, spatial mean)."""

    def __init__(self, model: nn.Module, identity: dict, device: torch.device, autocast_dtype: torch.dtype | None,
                 chunk: int = 64):
        self.model = model.to(device)
        self.identity = identity
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.chunk = chunk
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0

    @torch.inference_mode()
    def __call__(self, frames: Tensor) -> Tensor:
        outs = []
        for start in range(0, frames.shape[0], self.chunk):
            x = frames[start:start + self.chunk].to(self.device, non_blocking=True)
            x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std  # (x/255 - m)/s
            with _autocast(self.device, self.autocast_dtype):
                f = self.model.forward_features(x)
            f = f.float()
            if f.ndim == 3:
                prefix = int(getattr(self.model, "num_prefix_tokens", 0))
                outs.append(f[:, prefix:].mean(dim=1))
            elif _nhwc(self.model):
                outs.append(f.mean(dim=(1, 2)))
            else:
                outs.append(f.mean(dim=(2, 3)))
        return torch.cat(outs)

    def probe(self, short_side: int) -> int:
        try:
            out = self(torch.zeros(1, short_side, short_side, 3, dtype=torch.uint8))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001
            raise UserError(f"video model '{self.identity['name']}' cannot run on {short_side}-pixel frames: "
                            f"{type(e).__name__}: {e}") from None
        return int(out.shape[1])


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
