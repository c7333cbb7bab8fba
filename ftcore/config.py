"""Typed, frozen run configuration, validated on construction.

A :class:`RunConfig` holds everything needed to repeat a run: the backbone
and its weights, which layer groups learn, the data, and the training
settings. It is saved as ``config.json`` in the run's artifact folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "BackboneConfig",
    "FreezeConfig",
    "DataConfig",
    "TrainConfig",
    "RunConfig",
    "parse_unfreeze",
]

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
#: Values of :attr:`TrainConfig.class_balance`.
CLASS_BALANCE = ("none", "loss", "sampler")
_UNFREEZE_RE = re.compile(r"^(head|all|last:(\d+))$")


def parse_unfreeze(spec: str) -> tuple[str, int]:
    """Parse an unfreeze preset.

    Parameters
    ----------
    spec : str
        ``"head"`` (linear probe: only the new head learns), ``"all"`` (every
        layer group learns) or ``"last:N"`` (the N layer groups just before
        the head learn, plus the head), N >= 1.

    Returns
    -------
    tuple of (str, int)
        The preset kind (``"head"``, ``"all"`` or ``"last"``) and N (0 unless
        the kind is ``"last"``).

    Raises
    ------
    ConfigError
        If `spec` is none of the forms above.
    """
    m = _UNFREEZE_RE.match(str(spec).strip())
    if not m:
        raise ConfigError(
            f"unfreeze preset {spec!r} is not understood; use 'head', 'all' or "
            "'last:N' with N a whole number of layer groups, e.g. 'last:2'."
        )
    if m.group(2) is not None:
        n = int(m.group(2))
        if n < 1:
            raise ConfigError(f"unfreeze preset {spec!r}: N must be at least 1; use 'head' to train the head only.")
        return "last", n
    return m.group(1), 0


@dataclass(frozen=True)
class BackboneConfig:
    """Which timm backbone to build and where its weights come from.

    Parameters
    ----------
    name : str, default "tf_efficientnet_lite0"
        A timm model name (``timm.list_models()``).
    weights : str, default "auto"
        ``"auto"``: the best pretrained source found (packaged offline weights,
        the local Hugging Face cache, or a download); ``"none"``: random
        initialisation, an explicit choice; anything else: the path of a local
        weights file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) for this
        architecture.
    """

    name: str = DEFAULT_BACKBONE
    weights: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("backbone name is empty; pick a timm model name such as 'tf_efficientnet_lite0'.")
        if not isinstance(self.weights, str) or not self.weights.strip():
            raise ConfigError("weights is empty; use 'auto', 'none' or the path of a weights file.")


@dataclass(frozen=True)
class FreezeConfig:
    """Which layer groups are unfrozen in the fine-tuned model.

    Parameters
    ----------
    unfreeze : str, default "all"
        A preset (see :func:`parse_unfreeze`), or ``"groups:"`` followed by a
        comma-separated list of layer group names (see
        :func:`ftcore.layers.layer_groups`). The head is always trained.
    """

    unfreeze: str = "all"

    def __post_init__(self) -> None:
        if not str(self.unfreeze).startswith("groups:"):
            parse_unfreeze(self.unfreeze)
        elif not self.group_names:
            raise ConfigError("unfreeze 'groups:' names no layer group; list them ('groups:blocks.5,blocks.6') "
                              "or use 'head' to train the head only.")

    @property
    def group_names(self) -> tuple[str, ...] | None:
        """Explicit layer group names, or None when a preset is used."""
        if str(self.unfreeze).startswith("groups:"):
            body = self.unfreeze[len("groups:"):]
            return tuple(g for g in (s.strip() for s in body.split(",")) if g)
        return None


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split.

    Parameters
    ----------
    train_dir : str
        Folder with one sub-folder per class, or with ``train/`` and ``val/``
        sub-folders that each hold one sub-folder per class.
    val_dir : str or None, default None
        A separate validation folder (one sub-folder per class). When None and
        `train_dir` has no ``val/``, a seeded stratified split is made.
    val_fraction : float, default 0.2
        Share of each class held out for validation when splitting, in (0, 1).
    """

    train_dir: str = ""
    val_dir: str | None = None
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not str(self.train_dir).strip():
            raise ConfigError("no data folder given; pass the folder that holds one sub-folder per class.")
        if not (0.0 < _as_float(self.val_fraction) < 1.0):
            raise ConfigError(
                f"validation fraction {self.val_fraction!r} is outside (0, 1); use e.g. 0.2 to hold out 20% of each class."
            )


@dataclass(frozen=True)
class TrainConfig:
    """Training settings shared by the baseline and the fine-tuned model.

    Parameters
    ----------
    epochs : int, default 3
        Passes over the training images, >= 1.
    batch_size : int, default 32
        Images per step, >= 1. Capped at the number of training images.
    lr : float, default 1e-3
        Peak learning rate of AdamW per step for the head, > 0. Decays by a
        cosine over all steps (Loshchilov & Hutter, "SGDR", 2017).
    backbone_lr_scale : float, default 0.1
        Unfrozen backbone groups learn at ``lr * backbone_lr_scale``, in
        (0, 1]: pretrained layers need smaller steps than a new head
        (discriminative learning rates, Howard & Ruder, "ULMFiT", 2018).
    img_size : int or None, default None
        Square input size in pixels (16 to 1024); None uses the backbone's
        default from its ``pretrained_cfg``.
    update_bn : bool, default False
        Let BatchNorm layers in unfrozen groups update their running
        statistics (see :func:`ftcore.layers.set_train_mode`). Frozen groups'
        BatchNorm never updates.
    baseline : bool, default True
        Also train the frozen baseline (linear probe) on the same split.
    seed : int, default 0
        Seed of the split, the head initialisation and the data order.
    weight_decay : float, default 0.01
        AdamW decoupled weight decay (the PyTorch default for AdamW).
    num_workers : int, default 0
        Data-loader worker processes; 0 decodes in the training process.
    feature_cache : bool, default True
        When the first trainable layer sits after frozen layers, compute the
        frozen prefix's output once per image and train from it
        (:mod:`ftcore.prefix`): much faster, at the cost of the random
        augmentation before the first trainable layer.
    channels_last : bool, default True
        Run convolutional models in the ``channels_last`` memory layout
        (faster for oneDNN convolutions on CPUs and for cuDNN on recent GPUs).
    class_balance : str, default "none"
        ``"none"``; ``"loss"``: cross-entropy weighted per class by
        :func:`ftcore.data.class_weights` (scikit-learn's "balanced" weights);
        ``"sampler"``: batches drawn with every class equally likely
        (:func:`ftcore.data.balanced_sampler`). For imbalanced classes.
    """

    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1
    img_size: int | None = None
    update_bn: bool = False
    baseline: bool = True
    seed: int = 0
    weight_decay: float = 0.01
    num_workers: int = 0
    feature_cache: bool = True
    channels_last: bool = True
    class_balance: str = "none"

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1, 1000)
        _check_int("batch size", self.batch_size, 1, 4096)
        _check_int("seed", self.seed, 0, 2**32 - 1)
        _check_int("data-loader workers", self.num_workers, 0, 64)
        if self.img_size is not None:
            _check_int("image size", self.img_size, 16, 1024)
        if not (0.0 < _as_float(self.lr) <= 10.0):
            raise ConfigError(f"learning rate {self.lr!r} is not in (0, 10]; a usual value is 1e-3 (AdamW).")
        if not (0.0 < _as_float(self.backbone_lr_scale) <= 1.0):
            raise ConfigError(
                f"backbone learning-rate scale {self.backbone_lr_scale!r} is not in (0, 1]; 0.1 is usual, 1 gives "
                "the backbone the head's rate."
            )
        if self.class_balance not in CLASS_BALANCE:
            raise ConfigError(f"class balance {self.class_balance!r} is not one of {', '.join(CLASS_BALANCE)}; use "
                              "'loss' or 'sampler' when some classes have many more images than others.")
        if not (0.0 <= _as_float(self.weight_decay) < 1.0):
            raise ConfigError(f"weight decay {self.weight_decay!r} is not in [0, 1); a usual value is 0.01.")


def _as_float(value: Any) -> float:
    """The value as a float, NaN (which fails every range check) when it is not a number."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _check_int(what: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (lo <= value <= hi):
        raise ConfigError(f"{what} {value!r} is not a whole number in [{lo}, {hi}].")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; saved with it as ``config.json``."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(train_dir="."))
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-able nested dicts."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Return the configuration as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Build and validate a configuration from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            If a section or key is unknown, or a value is out of range.
        """
        sections = {"backbone": BackboneConfig, "freeze": FreezeConfig, "data": DataConfig, "train": TrainConfig}
        unknown = set(d) - set(sections)
        if unknown:
            raise ConfigError(f"unknown configuration sections {sorted(unknown)}; allowed: {sorted(sections)}.")
        kwargs = {}
        for key, klass in sections.items():
            part = d.get(key, {}) or {}
            names = {f.name for f in dataclasses.fields(klass)}
            bad = set(part) - names
            if bad:
                raise ConfigError(f"unknown keys {sorted(bad)} in '{key}'; allowed: {sorted(names)}.")
            kwargs[key] = klass(**part)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a configuration saved by :meth:`to_json`.

        Raises
        ------
        ConfigError
            If the file cannot be read or is not a valid configuration.
        """
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read run configuration {p}: {e}") from e
        return cls.from_dict(d)
