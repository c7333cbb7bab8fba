"""Training and validation transforms from the model's timm data configuration, with augmentation presets.

:func:`build_transforms` is the one builder of the product's transforms:
validation is always deterministic (resize the shorter side to
``size / crop_pct``, centre crop, normalise with the model's mean and std);
only the training transform changes with the preset, built on timm's
``create_transform``. The model's configuration is all it reads
(``model.pretrained_cfg`` through ``timm.data.resolve_data_config``), so a
model built on the ``meta`` device, without weights, serves as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ftcore.core.config import AUGMENT_PRESETS
from ftcore.core.errors import ConfigError

__all__ = ["PRESET_SETTINGS", "build_transforms"]

#: ``create_transform`` arguments of each preset (``None``: the validation transform).
#: "standard" is timm's ImageNet training recipe with RandAugment as in DeiT
#: (Touvron et al., 2021): magnitude 9, magnitude noise 0.5, increasing severity.
PRESET_SETTINGS: dict[str, dict | None] = {
    "none": None,
    "light": {"scale": (0.5, 1.0), "hflip": 0.5, "color_jitter": 0.0},
    "standard": {"scale": (0.08, 1.0), "hflip": 0.5, "auto_augment": "rand-m9-mstd0.5-inc1"},
}


def build_transforms(model: torch.nn.Module, img_size: int | None = None, preset: str = "light",
                     ) -> tuple[Callable, Callable, int]:
    """Training and validation transforms of a timm model for an augmentation preset.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model, e.g. built on the ``meta`` device
        (:func:`ftcore.models.layers.meta_model`); its ``pretrained_cfg``
        gives mean, std, interpolation, crop fraction and default input size
        (``timm.data.resolve_data_config``). Its weights are not read.
    img_size : int or None, default None
        Square input size in pixels; None uses the model's default.
    preset : str, default "light"
        One of :data:`ftcore.core.config.AUGMENT_PRESETS`. ``"none"``: train
        on the validation transform (no augmentation); ``"light"``: random
        resized crop of 50 to 100% of the area, aspect 3/4 to 4/3,
        horizontal flip; ``"standard"``: crop of 8 to 100% (timm's ImageNet
        default), flip and RandAugment ``rand-m9-mstd0.5-inc1``.

    Returns
    -------
    train_transform, val_transform : callable
        PIL image to float Tensor of shape (3, size, size); the validation
        one is deterministic (and is the training one for ``"none"``).
    short_side : int
        Shorter side in pixels that decoded images need (``size / crop_pct``,
        rounded up), for :func:`ftcore.data.split.prepare_split`.

    Raises
    ------
    ConfigError
        If `preset` is unknown.
    """
    from timm.data import create_transform, resolve_data_config

    if preset not in PRESET_SETTINGS:
        raise ConfigError(f"augmentation preset {preset!r} is not one of {', '.join(AUGMENT_PRESETS)}; "
                          "choose one of those.")
    cfg = resolve_data_config(model=model)
    if img_size is not None:
        cfg["input_size"] = (3, img_size, img_size)
    val_tf = create_transform(**cfg, is_training=False)
    short = math.ceil(cfg["input_size"][-1] / cfg.get("crop_pct", 0.875))
    settings = PRESET_SETTINGS[preset]
    if settings is None:
        return val_tf, val_tf, short
    return create_transform(**cfg, is_training=True, **settings), val_tf, short
