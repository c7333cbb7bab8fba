"""The walk's state: one :class:`Walk` in ``st.session_state["walk"]``, and the widgets that edit it.

The training settings of the walk are the fields of
:class:`ftcore.TrainConfig`, taken from its field list: their defaults, and
the label, help, bounds and choices of the widgets that edit them
(:func:`setting_input`), come from each field's
:class:`ftcore.FieldSpec`. UI only: everything computed comes from ftcore.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from ftcore import BackboneConfig, DataConfig, FreezeConfig, RunConfig, TrainConfig, field_spec, field_specs

__all__ = ["Walk", "walk", "train_defaults", "load_config", "widget_key", "setting_input"]


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def train_defaults() -> dict[str, Any]:
    """Every field of :class:`ftcore.TrainConfig` with its default, in field order."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@dataclass
class Walk:
    """The choices of the walk, kept across pages (``st.session_state["walk"]``).

    Not widget keys, which Streamlit forgets when a page stops showing the
    widget: the widgets are seeded from here (:func:`widget_key`) and their
    values copied back.

    Parameters
    ----------
    backbone, weights, unfreeze : str
        The run's backbone, starting weights and unfreeze choice
        (:class:`ftcore.BackboneConfig`, :class:`ftcore.FreezeConfig`).
    data_dir, val_dir : str or None
        The data folder once step 3 accepted it, and a separate validation folder.
    val_fraction : float
        Share of each class held out for validation when splitting.
    train : dict
        Every :class:`ftcore.TrainConfig` field -> its value (also values the
        config refuses, so that the page can say why).
    data_label : str or None
        What the data is, for people ("demo digits", the folder).
    n_classes : int or None
        Classes of the accepted data.
    lr_mode : str
        ``"head and backbone"`` or ``"layer-wise decay"``: the widget behind
        ``train["layer_decay"]``, with `layer_decay_value`.
    """

    # what the run will be
    backbone: str = _default(BackboneConfig, "name")
    weights: str = _default(BackboneConfig, "weights")
    unfreeze: str = _default(FreezeConfig, "unfreeze")
    data_dir: str | None = None
    val_dir: str | None = None
    val_fraction: float = _default(DataConfig, "val_fraction")
    train: dict[str, Any] = field(default_factory=train_defaults)
    # how the pages got there
    data_label: str | None = None
    n_classes: int | None = None
    lr_mode: str = "head and backbone"
    layer_decay_value: float = 0.75
    img_size_suggested: int | None = None
    backbone_query: str = "efficientnet_lite"
    weights_choice: str | None = None
    weights_file: str = ""
    data_source: str = "demo"
    folder_path: str = ""
    folder_val: str = ""
    upload_key: tuple | None = None
    upload_path: str | None = None
    audit_memo: dict = field(default_factory=dict)
    busy_when_drawn: str | None = None

    def run_config(self) -> RunConfig:
        """The run these choices make.

        Raises
        ------
        ftcore.ConfigError
            If a choice is refused (the message names the key and the flag).
        """
        return RunConfig(backbone=BackboneConfig(self.backbone, self.weights), freeze=FreezeConfig(self.unfreeze),
                         data=DataConfig(self.data_dir, self.val_dir, self.val_fraction),
                         train=TrainConfig(**self.train))

    def forget_data(self) -> None:
        """No data accepted (yet): step 3 must be done again."""
        self.data_dir = self.val_dir = self.data_label = None


def walk() -> Walk:
    """This session's :class:`Walk` (created by :func:`pages.common.init_state`)."""
    return st.session_state.setdefault("walk", Walk())


def _widget_value(name: str, value: Any) -> Any:
    """A value as its widget takes it: number widgets refuse an int where their bounds are floats."""
    specs = field_specs(TrainConfig)
    if name in specs and specs[name].kind == "float" and value is not None:
        return float(value)
    return value


def load_config(cfg: RunConfig) -> None:
    """Make a run configuration the walk's choices (and the values of the widgets that edit them).

    Parameters
    ----------
    cfg : ftcore.RunConfig
        A past run's configuration or a loaded ``config.json``; every training
        setting is taken, also those without a widget (``num_workers``,
        ``channels_last``), so that the run can be repeated as it was.
    """
    w = walk()
    t = cfg.train
    w.backbone, w.weights, w.unfreeze = cfg.backbone.name, cfg.backbone.weights, cfg.freeze.unfreeze
    w.data_dir, w.val_dir, w.val_fraction = cfg.data.train_dir, cfg.data.val_dir, float(cfg.data.val_fraction)
    w.data_label, w.data_source, w.folder_path, w.folder_val = cfg.data.train_dir, "folder", cfg.data.train_dir, \
        cfg.data.val_dir or ""
    w.train = {k: _widget_value(k, v) for k, v in dataclasses.asdict(t).items()}
    w.train["img_size"] = t.img_size or 224
    w.img_size_suggested = 224
    w.lr_mode = "layer-wise decay" if t.layer_decay is not None else "head and backbone"
    w.layer_decay_value = float(t.layer_decay) if t.layer_decay is not None else 0.75
    w.weights_choice = w.weights if w.weights in ("auto", "none") else "file"
    widgets = {**w.train, "backbone": w.backbone, "weights_choice": w.weights_choice, "data_source": "folder",
               "folder_path": w.folder_path, "folder_val": w.folder_val, "val_fraction": w.val_fraction,
               "lr_mode": w.lr_mode, "layer_decay_value": w.layer_decay_value}
    for k, v in widgets.items():  # widgets keyed by widget_key() show the loaded values
        st.session_state[f"w_{k}"] = v
    for k in [k for k in st.session_state if str(k).startswith("tick::")]:
        del st.session_state[k]  # the layers page ticks again from the loaded choice


def widget_key(name: str, value: Any) -> str:
    """Key of the widget that edits walk state `name`, seeded with `value` (its walk state) when absent.

    Widgets get a key and no ``value=``/``index=`` that changes between reruns
    (a changing default gives the widget a new identity, which drops the
    user's next change). Streamlit forgets a widget's key when its page is
    left, so it is seeded again from the walk on return; the page copies the
    widget's value back into the walk.

    Parameters
    ----------
    name : str
        The walk state the widget edits (``"epochs"``, ``"data_source"``).
    value : object
        Its value in the walk, the widget's value when it has none yet.

    Returns
    -------
    str
        The widget's key, ``"w_<name>"``.
    """
    wk = f"w_{name}"
    if wk not in st.session_state:
        st.session_state[wk] = _widget_value(name, value)
    return wk


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def setting_input(container, name: str, widget: str = "number", **kw: Any) -> Any:
    """The widget that edits training setting `name`, from its field's metadata; its value goes into the walk.

    Parameters
    ----------
    container : streamlit container
        Where to draw it (``st``, a column, an expander).
    name : str
        A field of :class:`ftcore.TrainConfig`.
    widget : {"number", "checkbox", "selectbox", "slider", "select_slider"}, default "number"
        The kind of widget. Label, help, bounds (numbers and sliders; an open
        bound moves one ``step`` inside) and choices (selectbox) come from the
        field's :class:`ftcore.FieldSpec`.
    **kw
        More arguments of the widget (``step``, ``format``, ``options`` of a
        select_slider, ``format_func``); ``min_value``/``max_value`` narrow
        the field's bounds for the widget.

    Returns
    -------
    object
        The widget's value, as the field's type (int, float, bool or str).
    """
    spec = field_spec(TrainConfig, name)
    w = walk()
    args = {"label": spec.label, "key": widget_key(name, w.train[name]), "help": _sentence(spec.help)}
    if widget in ("number", "slider"):
        lo, hi = spec.widget_range(kw.get("step", 1))
        args.update(min_value=kw.pop("min_value", lo), max_value=kw.pop("max_value", hi))
        if spec.kind == "float":
            args.update(min_value=float(args["min_value"]), max_value=float(args["max_value"]))
    draw = {"number": container.number_input, "checkbox": container.checkbox, "selectbox": container.selectbox,
            "slider": container.slider, "select_slider": container.select_slider}[widget]
    if widget == "selectbox":
        args["options"] = list(spec.choices)
    value = draw(**args, **kw)
    value = {"int": int, "float": float, "bool": bool}.get(spec.kind, str)(value)
    w.train[name] = value
    return value


if __name__ == "__main__":  # run as a script by Streamlit's pages/ folder mode (/walk): see pages.common
    from pages.common import route_through_app

    route_through_app()
