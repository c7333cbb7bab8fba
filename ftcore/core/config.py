"""Typed, frozen run configuration, validated on construction.

A :class:`RunConfig` holds everything needed to repeat a run: the backbone
and its weights, which layer groups learn, the data, and the training
settings. It is saved as ``config.json`` in the run's artifact folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcore.core.errors import ConfigError

__all__ = [
    "BackboneConfig",
    "FreezeConfig",
    "DataConfig",
    "TrainConfig",
    "RunConfig",
    "parse_unfreeze",
    "AUGMENT_PRESETS",
    "EARLY_STOPPING_METRICS",
    "DEVICES",
]

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
#: Values of :attr:`TrainConfig.class_balance`.
CLASS_BALANCE = ("none", "loss", "sampler")
#: Augmentation presets of the training transform (see :func:`ftcore.data.augment.preset_transforms`).
AUGMENT_PRESETS = ("none", "light", "standard")
#: Validation metrics early stopping can watch, with the direction that is better.
EARLY_STOPPING_METRICS = {"val_loss": "min", "val_accuracy": "max", "val_macro_recall": "max"}
#: Device choices (see :func:`ftcore.accel._device.choose_device`).
DEVICES = ("auto", "cpu", "cuda", "mps")
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
        :func:`ftcore.models.layers.layer_groups`). A name may also be a sub-block
        of a group (a fine group from timm's ``group_matcher(coarse=False)``,
        e.g. ``"groups:blocks.5.2,blocks.6"``): only that part of its group
        learns. The head is always trained.
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
        for name in ("train_dir", "val_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"'{name}' is {value!r}; it must be a folder path (a string).")
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
        statistics (see :func:`ftcore.models.layers.set_train_mode`). Frozen groups'
        BatchNorm never updates. Needs a batch size of at least 2.
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
        (:mod:`ftcore.accel._prefix`): much faster, at the cost of the random
        augmentation before the first trainable layer.
    channels_last : bool, default True
        Run convolutional models in the ``channels_last`` memory layout
        (faster for oneDNN convolutions on CPUs and for cuDNN on recent GPUs).
    class_balance : str, default "none"
        ``"none"``; ``"loss"``: cross-entropy weighted per class by
        :func:`ftcore.data.split.class_weights` (scikit-learn's "balanced" weights);
        ``"sampler"``: batches drawn with every class equally likely
        (:func:`ftcore.data.split.balanced_sampler`). For imbalanced classes.
    layer_decay : float or None, default None
        Layer-wise learning-rate decay in (0, 1]: the head learns at ``lr``
        and every layer group ``d`` groups before it at ``lr * layer_decay**d``
        (Clark et al., "ELECTRA", 2020, appendix A; Bao et al., "BEiT", 2021,
        section 2.6). None uses ``lr * backbone_lr_scale`` for every unfrozen
        backbone group instead. See :func:`ftcore.train.schedule.group_peak_lrs`.
    warmup_epochs : float, default 0.0
        Epochs of linear warm-up from ``lr / warm-up steps`` to the peak
        rate before the cosine decay, in [0, epochs); fractions of an epoch
        are allowed (rounded to whole steps).
    unfreeze_after : int, default 0
        Gradual unfreezing: train the head alone for this many epochs, then
        the ticked groups too (Howard & Ruder, "ULMFiT", 2018); 0 trains
        every ticked group from the start. In [0, epochs).
    augment : str, default "light"
        Training augmentation preset: ``"none"`` (the deterministic
        validation transform), ``"light"`` (random resized crop of 50 to 100%
        of the area and horizontal flip) or ``"standard"`` (timm's ImageNet
        recipe: crop of 8 to 100%, flip, RandAugment ``rand-m9-mstd0.5-inc1``).
    label_smoothing : float, default 0.0
        Label smoothing of the training cross-entropy in [0, 0.5] (Szegedy
        et al., "Rethinking the Inception Architecture", 2016); 0.1 is usual.
    early_stopping_patience : int, default 0
        Stop when `early_stopping_metric` has not improved for this many
        epochs, and keep the best epoch's weights; 0 turns it off.
    early_stopping_metric : str, default "val_loss"
        ``"val_loss"`` (lower is better), ``"val_accuracy"`` or
        ``"val_macro_recall"`` (higher is better).
    device : str, default "auto"
        ``"auto"`` (CUDA, else Apple MPS, else the CPU), ``"cpu"``, ``"cuda"``
        or ``"mps"``.
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
    layer_decay: float | None = None
    warmup_epochs: float = 0.0
    unfreeze_after: int = 0
    augment: str = "light"
    label_smoothing: float = 0.0
    early_stopping_patience: int = 0
    early_stopping_metric: str = "val_loss"
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("update_bn", "baseline", "feature_cache", "channels_last"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"'{name}' is {value!r}; it must be true or false (JSON booleans, not strings).")
        _check_int("epochs", self.epochs, 1, 1000)
        _check_int("batch size", self.batch_size, 1, 4096)
        if self.update_bn and self.batch_size < 2:
            raise ConfigError("batch size 1 cannot be used with update_bn (--update-bn): a BatchNorm layer that "
                              "updates its statistics needs at least 2 images a batch. Raise the batch size, or "
                              "leave update_bn off.")
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
        self._check_training_options()

    def _check_training_options(self) -> None:
        if self.layer_decay is not None and not (0.0 < _as_float(self.layer_decay) <= 1.0):
            raise ConfigError(f"layer decay {self.layer_decay!r} is not in (0, 1]; 0.75 is usual (BEiT), or leave it "
                              "unset to use the backbone learning-rate scale.")
        if not (0.0 <= _as_float(self.warmup_epochs) < self.epochs):
            raise ConfigError(f"warm-up epochs {self.warmup_epochs!r} is not in [0, {self.epochs}) (the number of "
                              "epochs); use e.g. 1, or 0 for no warm-up.")
        _check_int("unfreeze-after epochs", self.unfreeze_after, 0, 1000)
        if self.unfreeze_after >= self.epochs:
            raise ConfigError(f"unfreeze after {self.unfreeze_after} epochs is not below the {self.epochs} epochs of "
                              "training, so the ticked groups would never learn; use fewer, or 0 to train them from "
                              "the start.")
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(f"augmentation preset {self.augment!r} is not one of {', '.join(AUGMENT_PRESETS)}.")
        if not (0.0 <= _as_float(self.label_smoothing) <= 0.5):
            raise ConfigError(f"label smoothing {self.label_smoothing!r} is not in [0, 0.5]; 0.1 is usual, 0 turns "
                              "it off.")
        _check_int("early-stopping patience", self.early_stopping_patience, 0, 1000)
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise ConfigError(f"early-stopping metric {self.early_stopping_metric!r} is not one of "
                              f"{', '.join(EARLY_STOPPING_METRICS)}.")
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r} is not one of {', '.join(DEVICES)}.")


def _as_float(value: Any) -> float:
    """The value as a float, NaN (which fails every range check) when it is not a number."""
    if isinstance(value, (bool, str)):  # "0.01" in a config file is a mistake to name, not to convert
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

    def __post_init__(self) -> None:
        if self.train.unfreeze_after and self.freeze.unfreeze == "head":
            raise ConfigError(f"unfreeze after {self.train.unfreeze_after} epochs needs layer groups to unfreeze, "
                              "but the choice is 'head' only; tick groups or set unfreeze-after to 0.")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-able nested dicts."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Return the configuration as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
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
        if not isinstance(d, dict):
            raise ConfigError("a run configuration is a JSON object with the sections backbone, freeze, data, train.")
        for key in sections:
            part = d.get(key, {}) or {}
            if not isinstance(part, dict):
                raise ConfigError(f"section '{key}' is {part!r}; it must be an object of settings, e.g. "
                                  f'"{key}": {{...}}.')
        for key, klass in sections.items():
            part = d.get(key, {}) or {}
            names = {f.name for f in dataclasses.fields(klass)}
            bad = set(part) - names
            if bad:
                raise ConfigError(f"unknown keys {sorted(bad)} in '{key}'; allowed: {sorted(names)}.")
            kwargs[key] = klass(**part)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
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
