"""Training augmentation presets built on timm's ``create_transform``.

Validation always uses the deterministic transform of
:func:`ftcore.data.split.build_transforms` (resize, centre crop, normalise); only
the training transform changes with the preset.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ftcore.core.config import AUGMENT_PRESETS
from ftcore.core.errors import ConfigError
from ftcore.data.split import build_transforms

__all__ = ["PRESET_SETTINGS", "preset_transforms"]

#: ``create_transform`` arguments of each preset (``None``: the validation transform).
#: "standard" is timm's ImageNet training recipe with RandAugment as in DeiT
#: (Touvron et al., 2021): magnitude 9, magnitude noise 0.5, increasing severity.
PRESET_SETTINGS: dict[str, dict | None] = {
    "none": None,
    "light": {"scale": (0.5, 1.0), "hflip": 0.5, "color_jitter": 0.0},
    "standard": {"scale": (0.08, 1.0), "hflip": 0.5, "auto_augment": "rand-m9-mstd0.5-inc1"},
}


def preset_transforms(model: torch.nn.Module, img_size: int | None, preset: str = "light",
                      ) -> tuple[Callable, Callable, int]:
    """Training and validation transforms for an augmentation preset.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model; its ``pretrained_cfg`` gives mean, std, interpolation
        and crop fraction (``timm.data.resolve_data_config``).
    img_size : int or None
        Square input size in pixels; None uses the model's default.
    preset : str, default "light"
        ``"none"``: train on the validation transform (no augmentation);
        ``"light"``: random resized crop of 50 to 100% of the area, aspect
        3/4 to 4/3, horizontal flip; ``"standard"``: crop of 8 to 100% (timm's
        ImageNet default), flip and RandAugment ``rand-m9-mstd0.5-inc1``.

    Returns
    -------
    train_transform, val_transform : callable
        PIL image to float Tensor of shape (3, size, size); the validation
        one is deterministic.
    short_side : int
        As from :func:`ftcore.data.split.build_transforms`.

    Raises
    ------
    ConfigError
        If `preset` is unknown.
    """
    from timm.data import create_transform, resolve_data_config

    if preset not in PRESET_SETTINGS:
        raise ConfigError(f"augmentation preset {preset!r} is not one of {', '.join(AUGMENT_PRESETS)}.")
    _, val_tf, short = build_transforms(model, img_size)
    settings = PRESET_SETTINGS[preset]
    if settings is None:
        return val_tf, val_tf, short
    cfg = resolve_data_config(model=model)
    if img_size is not None:
        cfg["input_size"] = (3, img_size, img_size)
    return create_transform(**cfg, is_training=True, **settings), val_tf, short
