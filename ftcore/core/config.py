"""Typed, frozen run configuration, validated on construction.

A :class:`RunConfig` holds everything needed to repeat a run: the backbone
and its weights, which layer groups learn, the data, and the training
settings (:class:`TrainConfig`, in :mod:`ftcore.core.train_config`). It is
saved as ``config.json`` in the run's artifact folder.

Every field carries its metadata (:class:`ftcore.core.fields.FieldSpec`:
label, help, command-line flag, bounds, choices); validation messages name
the key and the flag, in one format.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcore.core.errors import ConfigError
from ftcore.core.fields import bad_value, check_fields, field_spec, setting
from ftcore.core.train_config import AUGMENT_PRESETS, CLASS_BALANCE, DEVICES, EARLY_STOPPING_METRICS, TrainConfig

__all__ = [
    "BackboneConfig",
    "FreezeConfig",
    "DataConfig",
    "TrainConfig",
    "RunConfig",
    "SECTIONS",
    "parse_unfreeze",
    "AUGMENT_PRESETS",
    "CLASS_BALANCE",
    "EARLY_STOPPING_METRICS",
    "DEVICES",
    "DEFAULT_BACKBONE",
]

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
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

    name: str = setting(DEFAULT_BACKBONE, label="Model", flag="--model", metavar="NAME",
                        help="timm backbone name (timm.list_models())",
                        hint="Pick a timm model name such as 'tf_efficientnet_lite0'.")
    weights: str = setting("auto", label="Starting weights", flag="--weights", metavar="auto|FILE|none",
                           help="auto: the best pretrained weights found (packaged, the local Hugging Face cache, a "
                                "download); none: random initialisation; or a weights file for this architecture",
                           hint="Use 'auto', 'none' or the path of a weights file.")

    def __post_init__(self) -> None:
        check_fields(self)


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

    unfreeze: str = setting("all", label="Unfreeze", flag="--unfreeze", metavar="head|all|last:N|groups:NAME,...",
                            help="the layer groups that learn besides the head: head, all, last:N or "
                                 "groups:NAME,NAME (layer groups or their sub-blocks)",
                            hint="Use 'head', 'all', 'last:N' or 'groups:NAME,NAME'.")

    def __post_init__(self) -> None:
        check_fields(self)
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
        sub-folders that each hold one sub-folder per class. Required: a
        data configuration without images means nothing.
    val_dir : str or None, default None
        A separate validation folder (one sub-folder per class). When None and
        `train_dir` has no ``val/``, a seeded stratified split is made.
    val_fraction : float, default 0.2
        Share of each class held out for validation when splitting, in (0, 1).
    """

    train_dir: str = setting(label="Folder path", flag="--data", kind="path", metavar="FOLDER",
                             help="folder with one sub-folder per class (or train/ and val/)",
                             hint="Give the folder that holds one sub-folder per class.")
    val_dir: str | None = setting(None, label="Separate validation folder (optional)", flag="--val", kind="path",
                                  optional=True, none_means="a split of the data folder", metavar="FOLDER",
                                  help="separate validation folder (one sub-folder per class)")
    val_fraction: float = setting(0.2, label="Validation share of each class (when the folder has no val/)",
                                  flag="--val-fraction", kind="float", low=0.0, high=1.0, closed="neither",
                                  help="share of each class held out for validation when splitting",
                                  hint="Use e.g. 0.2 to hold out 20% of each class.")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; saved with it as ``config.json``.

    Raises
    ------
    ConfigError
        If gradual unfreezing (``unfreeze_after``) is asked for with nothing to unfreeze.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(train_dir="."))
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.unfreeze_after and str(self.freeze.unfreeze).strip() == "head":
            raise bad_value("unfreeze_after", field_spec(TrainConfig, "unfreeze_after"),
                            "0 when 'unfreeze' (--unfreeze) is 'head': there are no layer groups to unfreeze later",
                            self.train.unfreeze_after)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-able nested dicts."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Return the configuration as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        """Build and validate a configuration from :meth:`to_dict` output.

        Sections and keys left out take their defaults, except the data
        folder (``data.train_dir``), which is required.

        Parameters
        ----------
        d : dict
            ``{"backbone": {...}, "freeze": {...}, "data": {...}, "train": {...}}``.

        Raises
        ------
        ConfigError
            If `d` is not a dict of sections, a section or key is unknown or
            missing, or a value is out of range.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a run configuration is a JSON object with the sections backbone, freeze, data and "
                              f"train; got {d!r} ({type(d).__name__}).")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown configuration sections {sorted(unknown)}; allowed: {sorted(SECTIONS)}.")
        for key in SECTIONS:
            part = d.get(key)
            if part is not None and not isinstance(part, dict):  # null or absent: that section's defaults
                raise ConfigError(f"section '{key}' is {part!r}; it must be an object of settings, e.g. "
                                  f'"{key}": {{...}}.')
        kwargs = {}
        for key, klass in SECTIONS.items():
            part = d.get(key) or {}
            fields = {f.name: f for f in dataclasses.fields(klass)}
            bad = set(part) - set(fields)
            if bad:
                raise ConfigError(f"unknown keys {sorted(bad)} in '{key}'; allowed: {sorted(fields)}.")
            for name, f in fields.items():
                if name not in part and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    spec = f.metadata["spec"]
                    raise bad_value(name, spec, f"given in section '{key}': {spec.allowed()}", dataclasses.MISSING)
            kwargs[key] = klass(**part)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "the configuration") -> RunConfig:
        """Parse and validate a configuration from JSON text; errors name `source` (a file name).

        Raises
        ------
        ConfigError
            If the text is not JSON or not a valid configuration.
        """
        try:
            d = json.loads(text)
        except ValueError as e:  # also UnicodeDecodeError of bytes that are not UTF-8
            raise ConfigError(f"cannot read run configuration {source}: {e}") from e
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"run configuration {source}: {e}") from e

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Read a configuration saved by :meth:`to_json`.

        Raises
        ------
        ConfigError
            If the file cannot be read or is not a valid configuration; the message names the file.
        """
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read run configuration {p}: {e}") from e
        return cls.from_json(text, str(p))


#: Section name -> its configuration class, in the order of :class:`RunConfig`.
SECTIONS: dict[str, type] = {"backbone": BackboneConfig, "freeze": FreezeConfig, "data": DataConfig,
                             "train": TrainConfig}
