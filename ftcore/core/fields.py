"""Field metadata of the configuration dataclasses: one list for validation, the CLI and the dashboard.

Every field of :class:`ftcore.core.config.TrainConfig` (and of the other
sections) is declared with :func:`setting`, which stores a :class:`FieldSpec`
in the field's ``metadata["spec"]``. From it come

- validation on construction and its messages, in scikit-learn's one format
  ("The 'lr' parameter (--lr) must be a float in (0, 10]. Got -1.0."),
  naming the key of ``config.json`` and the command-line flag;
- the command-line options of ``python -m ftcore train`` with their shown
  defaults (:func:`ftcore.cli.build_parser`);
- the dashboard's walk state and the labels, help, bounds and choices of its
  widgets (``pages/``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

from ftcore.core.errors import ConfigError

__all__ = ["FieldSpec", "setting", "field_specs", "field_spec", "check_fields", "bad_value"]

Kind = Literal["int", "float", "bool", "str", "path"]
_BRACKETS = {"both": "[]", "left": "[)", "right": "(]", "neither": "()"}


@dataclass(frozen=True)
class FieldSpec:
    """What a configuration field means and which values it takes.

    Parameters
    ----------
    label : str
        Short name for people; the dashboard's widget label.
    help : str
        One or two sentences: the CLI's ``--help`` and the widget's tooltip.
    flag : str or None, default None
        The command-line flag, e.g. ``"--lr"``; None: not on the command line.
        A bool field's flag turns it to the opposite of its default
        (``--no-baseline``, ``--update-bn``).
    kind : {"int", "float", "bool", "str", "path"}, default "str"
        The value's type. ``"int"`` refuses floats and bools, ``"float"``
        takes ints but not bools or strings, ``"path"`` takes a str or
        ``os.PathLike``.
    low, high : float or None, default None
        Bounds of a number; None: unbounded on that side.
    closed : {"both", "left", "right", "neither"}, default "both"
        Which bounds belong to the interval (scikit-learn's ``Interval``).
    choices : tuple of str, default ()
        The allowed values of a str field; empty: any non-empty str.
    optional : bool, default False
        None is allowed; `none_means` says what it stands for.
    none_means : str, default ""
        What None means, shown as the default (``"the backbone's default"``).
    hint : str, default ""
        A sentence appended to a refusal: a usual value, or how to fix it.
    metavar : str or None, default None
        The value's name in ``--help`` (argparse ``metavar``).
    """

    label: str
    help: str
    flag: str | None = None
    kind: Kind = "str"
    low: float | None = None
    high: float | None = None
    closed: Literal["both", "left", "right", "neither"] = "both"
    choices: tuple[str, ...] = ()
    optional: bool = False
    none_means: str = ""
    hint: str = ""
    metavar: str | None = None

    def interval(self, high: float | None = None) -> str:
        """The allowed interval as text, e.g. ``"(0, 10]"``; `high` overrides the upper bound."""
        high = self.high if high is None else high
        left, right = _BRACKETS[self.closed]
        lo = "-inf" if self.low is None else _num(self.low)
        hi = "inf" if high is None else _num(high)
        if self.low is None:
            left = "("
        if high is None:
            right = ")"
        return f"{left}{lo}, {hi}{right}"

    def allowed(self, high: float | None = None) -> str:
        """What the field takes, in words: ``"a float in (0, 10]"``, ``"None or an int in [16, 1024]"``."""
        if self.kind in ("int", "float"):
            text = f"{'an int' if self.kind == 'int' else 'a float'} in {self.interval(high)}"
        elif self.kind == "bool":
            text = "a bool (true or false, not a string)"
        elif self.kind == "path":
            text = "a non-empty folder path (a str)"
        elif self.choices:
            text = "a str among {" + ", ".join(repr(c) for c in self.choices) + "}"
        else:
            text = "a non-empty str"
        return f"None or {text}" if self.optional else text

    def accepts(self, value: Any, high: float | None = None) -> bool:
        """Whether `value` is allowed (`high` overrides the upper bound)."""
        if value is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "path":
            return isinstance(value, (str, os.PathLike)) and bool(str(value).strip())
        if self.kind == "str":
            return isinstance(value, str) and (value in self.choices if self.choices else bool(value.strip()))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float is outside every bound
            return False
        return _inside(number, self.low, self.high if high is None else high, self.closed)

    def check(self, key: str, value: Any, high: float | None = None, why: str = "") -> None:
        """Raise :class:`ConfigError` naming `key` and the flag unless `value` is allowed.

        Parameters
        ----------
        key : str
            The field's name, the key of ``config.json``.
        value : object
            The value given.
        high : float or None, default None
            An upper bound that depends on another field (e.g. ``epochs``).
        why : str, default ""
            Said after the allowed values, e.g. ``"(below 'epochs')"``.
        """
        if not self.accepts(value, high):
            allowed = self.allowed(high) + (f" {why}" if why else "")
            raise bad_value(key, self, allowed, value)

    def shown_default(self, default: Any) -> str:
        """The default as ``--help`` shows it: ``"3"``, ``"0.001"``, ``"on"``, or `none_means`."""
        if default is None or default is dataclasses.MISSING:
            return self.none_means or "none"
        if isinstance(default, bool):
            return "on" if default else "off"
        if isinstance(default, float):
            return f"{default:g}"
        return str(default)

    def widget_range(self, step: float = 1.0) -> tuple[float | None, float | None]:
        """Inclusive (min, max) of a number widget: an open bound moves one `step` inside."""
        lo, hi = self.low, self.high
        if lo is not None and self.closed in ("right", "neither"):
            lo = lo + step
        if hi is not None and self.closed in ("left", "neither"):
            hi = hi - step
        if self.kind == "int":
            return (None if lo is None else int(lo)), (None if hi is None else int(hi))
        return lo, hi


def _num(x: float) -> str:
    """A bound as text: whole numbers in full (``4294967295``), others shortest (``0.001``)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _inside(x: float, lo: float | None, hi: float | None, closed: str) -> bool:
    if math.isnan(x):
        return False
    if lo is not None and (x < lo or (x == lo and closed in ("right", "neither"))):
        return False
    return not (hi is not None and (x > hi or (x == hi and closed in ("left", "neither"))))


def bad_value(key: str, spec: FieldSpec, allowed: str, value: Any) -> ConfigError:
    """The one message format of a refused value, as a :class:`ConfigError` (to raise).

    ``The 'lr' parameter (--lr) must be a float in (0, 10]. Got -1.0. A
    usual value is 1e-3 (AdamW).`` after scikit-learn's
    ``InvalidParameterError``: the key the user edits, its flag, what is
    allowed, what was given, and the spec's hint.

    Parameters
    ----------
    key : str
        The field's name (the key of ``config.json``).
    spec : FieldSpec
        Its metadata (flag and hint).
    allowed : str
        What the field takes, e.g. ``spec.allowed()``.
    value : object
        The value given; ``dataclasses.MISSING`` when none was.

    Returns
    -------
    ConfigError
        The error, not raised.
    """
    flag = f" ({spec.flag})" if spec.flag else ""
    got = "nothing" if value is dataclasses.MISSING else repr(value)
    hint = f" {spec.hint}" if spec.hint else ""
    return ConfigError(f"The {key!r} parameter{flag} must be {allowed}. Got {got}.{hint}")


def setting(default: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """Declare a configuration field with its metadata: ``lr: float = setting(1e-3, label=..., flag="--lr", ...)``.

    Parameters
    ----------
    default : object, optional
        The field's default; without it the field is required.
    **spec
        The :class:`FieldSpec` (``label``, ``help``, ``flag``, ``kind``,
        ``low``, ``high``, ``closed``, ``choices``, ...).

    Returns
    -------
    dataclasses.Field
        A field whose ``metadata["spec"]`` is the FieldSpec.
    """
    return dataclasses.field(default=default, metadata={"spec": FieldSpec(**spec)})


def field_specs(cls: type) -> dict[str, FieldSpec]:
    """The metadata of every field of a configuration dataclass.

    Parameters
    ----------
    cls : type or dataclass instance
        E.g. :class:`ftcore.core.config.TrainConfig`.

    Returns
    -------
    dict of str to FieldSpec
        Field name -> its :class:`FieldSpec`, in field order (fields without one are left out).
    """
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls) if "spec" in f.metadata}


def field_spec(cls: type, name: str) -> FieldSpec:
    """The :class:`FieldSpec` of field `name` of a configuration dataclass.

    Raises
    ------
    KeyError
        If the class has no such field with a spec.
    """
    return field_specs(cls)[name]


def check_fields(obj: Any) -> None:
    """Check every field of a configuration dataclass instance against its spec, in field order.

    Raises
    ------
    ConfigError
        At the first field whose value its spec does not allow.
    """
    for name, spec in field_specs(obj).items():
        spec.check(name, getattr(obj, name))
