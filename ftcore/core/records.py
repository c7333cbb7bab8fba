"""Typed run records: run status and model role, run facts, the frozen-prefix decision, step costs, results.

Each record is a frozen dataclass with ``to_dict``/``from_dict`` (JSON-able
plain values, like :class:`ftcore.core.config.RunConfig`). Records cross
processes and versions of the product through the run store, so a reader is
lenient where :class:`RunConfig` is strict:

- a key it does not know is kept in ``extra`` and written back by ``to_dict``
  (a round trip through an older reader loses nothing);
- a missing key takes the field's default;
- a value of the wrong type takes the field's default (logged as a warning;
  the value as given stays readable in ``extra``, and ``to_dict`` writes the
  field), so one damaged fact never hides the others;
- a status or role string it does not know (written by a newer version) is
  read as a member of its own (:meth:`RunStatus.read`), never an error.

Statuses and roles are ``str`` enums: ``RunStatus.FINISHED == "finished"``,
``f"{role}"`` gives ``"finetuned"``, and the stored strings are unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from ftcore.core.errors import RunStoreError

__all__ = [
    "RunStatus", "ModelRole", "ACTIVE_STATUSES", "Record", "FileProblem", "PrefixDecision", "StepCost",
    "ModelFacts", "RunFacts", "EvalResult", "ExperimentResult",
]

log = logging.getLogger(__name__)

R = TypeVar("R", bound="Record")


class _StrEnum(str, enum.Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` are its value (as ``enum.StrEnum`` of Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def read(cls, value: str):
        """The member with this value; a value written by another version becomes a member of its own.

        Raises
        ------
        TypeError
            If `value` is not a string.
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise TypeError(f"a {cls.__name__} is a string; got {type(value).__name__} {value!r}")
        try:
            return cls(value)
        except ValueError:
            log.debug("%s %r is not known to this version; kept as given", cls.__name__, value)
            member = str.__new__(cls, value)
            member._name_, member._value_ = value.upper(), value
            return member


class RunStatus(_StrEnum):
    """Where a run stands. ``queued`` and ``running`` are active; the others are ends."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """True while queued or running."""
        return self in ACTIVE_STATUSES


#: Statuses of a run that has not ended.
ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class ModelRole(_StrEnum):
    """The two models of a run, in training order: the frozen baseline (linear probe) and the fine-tuned one."""

    BASELINE = "baseline"
    FINETUNED = "finetuned"


class Record:
    """Mixin of the typed records: lenient ``from_dict`` and a ``to_dict`` that keeps unknown keys.

    A subclass is a dataclass; a field named ``extra`` (a dict) receives the
    keys the class does not know, and the values that could not be read.
    """

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able values (tuples as lists, enums as strings), unknown keys included."""
        out = {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"}
        for k, v in getattr(self, "extra", {}).items():
            out.setdefault(k, _encode(v))
        return out

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any] | None) -> R:
        """Read a record written by any version of the product.

        Parameters
        ----------
        d : mapping or None
            As from :meth:`to_dict`; None reads as an empty mapping (all defaults).

        Raises
        ------
        RunStoreError
            If `d` is not a mapping (a damaged record, not another version).
        """
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise RunStoreError(f"a stored {cls.__name__} must be a JSON object; got {type(d).__name__} {d!r:.80}. "
                                "The run's stored record is damaged; start the run again.")
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in d.items():
            if k not in hints or k == "extra":
                extra[k] = v
                continue
            try:
                kwargs[k] = _decode(hints[k], v)
            except (TypeError, ValueError, RunStoreError) as e:
                log.warning("%s.%s: %s; the value is kept as given and the default used", cls.__name__, k, e)
                extra[k] = v
        if "extra" in hints:
            kwargs["extra"] = extra
        elif extra:
            log.debug("%s: keys %s are not known to this version; left out", cls.__name__, sorted(extra))
        return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _encode(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (tuple, list)):
        return [_encode(x) for x in v]
    if isinstance(v, Mapping):
        return {str(_encode(k)): _encode(x) for k, x in v.items()}
    return v


def _decode(tp: Any, v: Any) -> Any:
    """`v` (a JSON value) as type `tp`; raises TypeError or ValueError when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if v is None:
            return None
        return _decode(next(a for a in args if a is not type(None)), v)
    if tp is Any:
        return v
    if isinstance(tp, type) and issubclass(tp, Record):
        if not isinstance(v, Mapping):
            raise TypeError(f"expected an object, got {type(v).__name__} {v!r:.60}")
        return tp.from_dict(v)
    if isinstance(tp, type) and issubclass(tp, _StrEnum):
        return tp.read(v)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"expected a list, got {type(v).__name__} {v!r:.60}")
        return tuple(_decode(args[0], x) for x in v)
    if origin is dict or tp is dict:
        if not isinstance(v, Mapping):
            raise TypeError(f"expected an object, got {type(v).__name__} {v!r:.60}")
        return dict(v)
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"expected a number, got {type(v).__name__} {v!r:.60}")
        return float(v)
    if tp in (int, str, bool) and not (isinstance(v, tp) and (tp is bool or not isinstance(v, bool))):
        raise TypeError(f"expected {tp.__name__}, got {type(v).__name__} {v!r:.60}")
    return v


@dataclass(frozen=True)
class FileProblem(Record):
    """A file the run left out or changed (as :class:`ftcore.data.scan.Problem`, stored).

    Attributes
    ----------
    path, kind, message, action : str
        The file, what is wrong (``unreadable``, ``not_image``, ...), why in
        words, and what happened to it (``skipped``, ...).
    """

    path: str = ""
    kind: str = ""
    message: str = ""
    action: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PrefixDecision(Record):
    """Whether the frozen layers before the first learning one were computed once, and where.

    Attributes
    ----------
    used : bool
        The cached activations were used.
    reason : str
        Why not, when not used (e.g. ``"turned off in the settings"``).
    entry : str
        Name of the first module that runs every step (the cut point).
    feature_shape : tuple of int
        Shape of one image's cached activation.
    bytes : int
        Memory of all cached activations.
    prefix_param_share : float
        Share of the model's parameters before the cut, in [0, 1].
    seconds : float
        Time to compute the activations.

    Notes
    -----
    ``to_dict`` writes ``used`` with ``reason`` when not used, and the
    other fields when used, as the product has always stored it.
    """

    used: bool = False
    reason: str = ""
    entry: str = ""
    feature_shape: tuple[int, ...] = ()
    bytes: int = 0
    prefix_param_share: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        drop = ("reason",) if self.used else ("entry", "feature_shape", "bytes", "prefix_param_share", "seconds")
        return {k: v for k, v in d.items() if k not in drop}


@dataclass(frozen=True)
class StepCost(Record):
    """Estimated compute of one training step (:func:`ftcore.models.compute.step_cost`).

    Attributes
    ----------
    step_flops, forward_flops : float
        FLOPs per image of a training step and of a forward pass.
    vs_linear_probe : float
        Step cost over that of training the head only, >= 1.
    share_of_full : float
        Step cost over that of training every group, in (0, 1].
    method : str
        ``"measured"`` (FLOPs counted on the meta device) or ``"parameters"``.
    """

    step_flops: float = 0.0
    forward_flops: float = 0.0
    vs_linear_probe: float = 1.0
    share_of_full: float = 1.0
    method: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFacts(Record):
    """What one model of a run trained: its freezing, folding, frozen prefix and step cost.

    Stored flat in the run's facts under ``<role>_<field>`` keys (``finetuned_prefix``, ...);
    see :meth:`flat` and :meth:`from_flat`. Fields that are None are not written.
    """

    trainable_groups: tuple[str, ...] = ()
    trainable_params: int = 0
    frozen_params: int = 0
    folded_bn: int | None = None
    prefix: PrefixDecision | None = None
    step_cost: StepCost | None = None
    extra: dict = field(default_factory=dict)

    def flat(self, role: ModelRole | str) -> dict[str, Any]:
        """The facts as ``{"<role>_<field>": value}``, None values left out."""
        return {f"{role}_{k}": v for k, v in self.to_dict().items() if v is not None}

    @classmethod
    def from_flat(cls, d: Mapping[str, Any], role: ModelRole | str) -> ModelFacts:
        """The facts of `role` in a flat mapping written by :meth:`flat`."""
        pre = f"{role}_"
        return cls.from_dict({k[len(pre):]: v for k, v in d.items() if k.startswith(pre)})


@dataclass(frozen=True)
class RunFacts(Record):
    """Facts about a run: device, weights, data, and per model its :class:`ModelFacts`.

    Attributes
    ----------
    device, device_text : str
        ``"cpu"`` / ``"cuda:0"``; the device and autocast type for people.
    threads : int
        PyTorch threads.
    weights, weights_kind : str
        Where the weights came from, in words; the kind (``packaged``, ``random``, ...).
    class_names : tuple of str
    layout : str
        ``class_folders``, ``train_val`` or ``separate_val``.
    counts : dict
        Images per class per split: ``{"train": {class: n}, "val": {...}}``.
    skipped : tuple of FileProblem
        Files left out.
    majority_accuracy : float or None
        Validation accuracy, in [0, 1], of always answering the largest class.
    data_warnings, empty_classes : tuple of str
    models : dict of ModelRole to ModelFacts
        Stored flat (``finetuned_prefix``...), as :meth:`ModelFacts.flat`.
    """

    device: str = ""
    device_text: str = ""
    threads: int = 0
    weights: str = ""
    weights_kind: str = ""
    class_names: tuple[str, ...] = ()
    layout: str = ""
    counts: dict = field(default_factory=dict)
    skipped: tuple[FileProblem, ...] = ()
    majority_accuracy: float | None = None
    data_warnings: tuple[str, ...] = ()
    empty_classes: tuple[str, ...] = ()
    models: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Run facts, then each model's facts flat (``<role>_<field>``), then unknown keys."""
        out = {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)
               if f.name not in ("models", "extra")}
        for role, facts in self.models.items():
            out.update(facts.flat(role))
        for k, v in self.extra.items():
            out.setdefault(k, _encode(v))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RunFacts:
        """Read stored facts; keys ``<role>_<field>`` of a known role become that role's :class:`ModelFacts`."""
        if not isinstance(d, Mapping):
            return super().from_dict(d)  # None: all defaults; anything else raises, naming the record
        prefixes = tuple(f"{r}_" for r in ModelRole)
        facts = super().from_dict({k: v for k, v in d.items() if not k.startswith(prefixes) and k != "models"})
        models = {r: ModelFacts.from_flat(d, r) for r in ModelRole if any(k.startswith(f"{r}_") for k in d)}
        extra = dict(facts.extra, **({"models": d["models"]} if "models" in d else {}))
        return dataclasses.replace(facts, models=models, extra=extra)

    def model(self, role: ModelRole | str) -> ModelFacts:
        """The facts of one model; all defaults when that model was not trained (yet)."""
        return self.models.get(ModelRole.read(role), ModelFacts())


@dataclass(frozen=True)
class EvalResult(Record):
    """How one model of a run did: the epoch whose weights it holds (the best one with early stopping).

    Attributes
    ----------
    val_accuracy, val_macro_recall : float
        Fractions in [0, 1] on the validation images.
    train_images_per_second : float
        Training images per second over all epochs (training part only).
    seconds : float
        Wall time of the model's training.
    epochs_done : int
    best_epoch : int or None
        With early stopping, the 1-based epoch kept; None without.
    stopped_early : bool
    """

    val_accuracy: float = 0.0
    val_macro_recall: float = 0.0
    train_images_per_second: float = 0.0
    seconds: float = 0.0
    epochs_done: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentResult(Record):
    """The outcome of a run: its status and the result of each model trained (the baseline may be absent).

    ``to_dict`` is the run's summary as the product has always written it:
    ``{"baseline": {...}, "finetuned": {...}, "status": "finished"}``.
    """

    status: RunStatus | None = None
    models: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {str(r): m.to_dict() for r, m in self.models.items()}
        out.update({k: _encode(v) for k, v in self.extra.items() if k not in out})
        if self.status is not None:
            out["status"] = str(self.status)
        return out

    def per_model(self) -> dict[str, Any]:
        """:meth:`to_dict` without the status (the run's ``summary.json``)."""
        return {k: v for k, v in self.to_dict().items() if k != "status"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ExperimentResult:
        """Read a summary; keys of a known role become its :class:`EvalResult`, other keys are kept."""
        if not isinstance(d, Mapping):
            return super().from_dict(d)  # None: all defaults; anything else raises, naming the record
        known = {str(r) for r in ModelRole}
        models = {ModelRole(k): EvalResult.from_dict(v) for k, v in d.items() if k in known and isinstance(v, Mapping)}
        status = RunStatus.read(d["status"]) if isinstance(d.get("status"), str) else None
        extra = {k: v for k, v in d.items() if k != "status" and not (k in known and isinstance(v, Mapping))}
        return cls(status, models, extra)
