"""Layer groups, freezing policy, and trainable/frozen parameter counts.

Layer groups come from timm: ``model.group_matcher(coarse=True)`` names the
stem, each block or stage, and the final layers, and
``timm.models.group_parameters`` assigns every parameter to one group, input
to output. The classifier (``model.get_classifier()``, named ``fc``, ``head``,
``head.fc`` or ``classifier`` depending on the family) always forms its own
last group, ``"head"``, which is always trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from timm.models import group_parameters
from torch import nn

from ftcore.core.config import FreezeConfig, parse_unfreeze
from ftcore.core.errors import ConfigError

__all__ = [
    "HEAD",
    "LayerGroup",
    "FreezeSummary",
    "layer_groups",
    "trainable_group_names",
    "apply_freeze",
    "set_train_mode",
    "frozen_batchnorm_modules",
    "describe_layer_groups",
    "meta_model",
    "classifier_modules",
    "trainable_param_names",
]

log = logging.getLogger(__name__)

HEAD = "head"


@dataclass(frozen=True)
class LayerGroup:
    """One layer group of a model, in input-to-output order.

    Attributes
    ----------
    name : str
        ``"stem"`` for the first group, ``"head"`` for the classifier, else the
        common module prefix of its parameters (``"blocks.3"``, ``"layer2"``) or
        its top-level modules joined by ``" + "`` (``"conv_head + bn2"``).
    index : int
        Position from the input, 0-based.
    param_names : tuple of str
        Names of the parameters in the group (``model.named_parameters()``).
    n_params : int
        Number of scalar parameters in the group.
    parts : tuple of LayerGroup
        The group's sub-blocks, from timm's ``group_matcher(coarse=False)``,
        input to output, when it has more than one (else empty). A part's
        name can be ticked on its own (``"groups:blocks.3.1"``).
    """

    name: str
    index: int
    param_names: tuple[str, ...]
    n_params: int
    parts: tuple[LayerGroup, ...] = ()

    @property
    def is_head(self) -> bool:
        """True for the classifier group, which is always trained."""
        return self.name == HEAD


@dataclass(frozen=True)
class FreezeSummary:
    """Parameter counts after freezing.

    Attributes
    ----------
    trainable_groups : tuple of str
        Names of the unfrozen layer groups, input to output (head last).
    n_trainable, n_frozen : int
        Scalar parameters that learn / stay fixed.
    """

    trainable_groups: tuple[str, ...]
    n_trainable: int
    n_frozen: int

    @property
    def n_total(self) -> int:
        """All scalar parameters of the model."""
        return self.n_trainable + self.n_frozen


def classifier_modules(model: nn.Module) -> list[nn.Module]:
    """The classifier module(s) of a timm model.

    ``model.get_classifier()`` returns one module for most families and a
    tuple ``(head, head_dist)`` for distilled ones (DeiT-distilled, LeViT,
    EfficientFormer...); both are the head.

    Raises
    ------
    BackboneError
        If the model has no ``get_classifier`` (an encoder without a head).
    """
    from ftcore.core.errors import BackboneError

    try:
        clf = model.get_classifier()
    except (AttributeError, NotImplementedError) as e:
        raise BackboneError(
            f"{type(model).__name__} has no classifier head (timm's get_classifier); it is an encoder, not an "
            "image classifier. Pick another backbone."
        ) from e
    items = clf if isinstance(clf, (tuple, list)) else (clf,)
    return [m for m in items if isinstance(m, nn.Module)]


def _classifier_param_names(model: nn.Module) -> list[str]:
    ids = {id(p) for m in classifier_modules(model) for p in m.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def _common_prefix(names: list[str], max_numeric: int) -> str:
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    numeric = 0
    for level in zip(*parts):
        if not all(x == level[0] for x in level):
            break
        common.append(level[0])
        if level[0].isdigit():
            numeric += 1
            if numeric >= max_numeric:
                break
    return ".".join(common)


def _label(names: list[str], coarse: bool) -> str:
    """Name a group by the common module path of its parameters.

    Parameters of different top-level modules are labelled per module and
    joined with " + ". The path is cut after its first (coarse) or second
    (fine) block index, so a stage with one block reads ``blocks.0``.
    """
    by_top: dict[str, list[str]] = {}
    for n in names:
        by_top.setdefault(n.split(".")[0], []).append(n)
    labels = []
    for top, sub in by_top.items():
        prefix = _common_prefix(sub, 1 if coarse else 2)
        labels.append(prefix or top)
    return " + ".join(labels)


def _split_label(names: list[str], prefix: str) -> str:
    """Label a fine group that spans several modules below `prefix` by each module's own prefix."""
    by_next: dict[str, list[str]] = {}
    for n in names:
        rest = n[len(prefix) + 1:] if prefix else n
        by_next.setdefault(rest.split(".")[0], []).append(n)
    return " + ".join(_common_prefix(sub, 2) or f"{prefix}.{k}" for k, sub in by_next.items())


def _grouped_names(model: nn.Module, coarse: bool) -> list[list[str]]:
    """Parameter names per group, input to output, from ``group_matcher`` or top-level modules."""
    try:
        matcher = model.group_matcher(coarse=coarse)
        grouped = group_parameters(model, matcher)
        return [list(grouped[k]) for k in sorted(grouped)]
    except Exception as e:  # absent, not implemented, or asserting for this grain (e.g. RDNet coarse)
        log.info("%s: no usable group_matcher (%s); grouping by top-level module", type(model).__name__, e)
        ordered = []
        for child_name, child in model.named_children():
            names = [f"{child_name}.{n}" for n, _ in child.named_parameters()]
            if names:
                ordered.append(names)
        top = [n for n, _ in model.named_parameters(recurse=False)]
        if top:
            ordered.insert(0, top)
        return ordered


def _plain_groups(model: nn.Module, coarse: bool, clf_names: list[str]) -> list[LayerGroup]:
    clf_set = set(clf_names)
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    raw: list[list[str]] = []
    for names in _grouped_names(model, coarse):
        body = [n for n in names if n not in clf_set]
        if body:
            raw.append(body)
    groups: list[LayerGroup] = []
    for i, names in enumerate(raw):
        name = "stem" if i == 0 and len(raw) > 1 else _label(names, coarse)
        if name == HEAD:
            name = "head (features)"
        groups.append(LayerGroup(name, i, tuple(names), sum(sizes[n] for n in names)))
    if clf_names:
        groups.append(LayerGroup(HEAD, len(groups), tuple(clf_names), sum(sizes[n] for n in clf_names)))
    return _unique(groups)


def _unique(groups: list[LayerGroup]) -> list[LayerGroup]:
    """Make names unique (two groups can share a label, e.g. two unnamed tails)."""
    seen: dict[str, int] = {}
    out = []
    for g in groups:
        k = seen.get(g.name, 0)
        seen[g.name] = k + 1
        out.append(g if k == 0 else LayerGroup(f"{g.name} ({k + 1})", g.index, g.param_names, g.n_params, g.parts))
    return out


def _with_parts(coarse: list[LayerGroup], fine: list[LayerGroup], sizes: dict[str, int]) -> list[LayerGroup]:
    """Attach to each coarse group the fine groups (or their share of it) that lie inside it."""
    coarse_names = {g.name for g in coarse}
    out = []
    for g in coarse:
        mine = set(g.param_names)
        parts = []
        for f in fine:
            names = [n for n in f.param_names if n in mine]
            if not names:
                continue
            name = f.name
            if name in coarse_names and set(names) != mine:
                # e.g. ConvNeXt's fine "stages.1" (downsample + first block) inside the coarse stage "stages.1"
                name = _split_label(names, _common_prefix(names, 2))
            parts.append(LayerGroup(name, f.index, tuple(names), sum(sizes[n] for n in names)))
        keep = tuple(parts) if len(parts) > 1 and not g.is_head else ()
        out.append(LayerGroup(g.name, g.index, g.param_names, g.n_params, keep))
    return out


def layer_groups(model: nn.Module, coarse: bool = True) -> list[LayerGroup]:
    """Split a timm model's parameters into layer groups, input to output.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model (built by ``timm.create_model``), on any device,
        including ``"meta"``.
    coarse : bool, default True
        Passed to ``model.group_matcher``: True gives stem, blocks or stages,
        and head, each with its sub-blocks in ``parts``; False gives the
        finer sub-blocks themselves (without parts).

    Returns
    -------
    list of LayerGroup
        Every parameter appears in exactly one group. The first group is named
        ``"stem"``, the last is ``"head"`` (the classifier).

    Notes
    -----
    Models without ``group_matcher`` fall back to one group per top-level
    child module, in registration order.
    """
    clf_names = _classifier_param_names(model)
    fine = _plain_groups(model, False, clf_names)
    if not coarse:
        return fine
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    return _with_parts(_plain_groups(model, True, clf_names), fine, sizes)


def trainable_group_names(groups: list[LayerGroup], unfreeze: str | FreezeConfig) -> tuple[str, ...]:
    """Names of the layer groups (or sub-blocks) that learn under a freezing choice.

    Parameters
    ----------
    groups : list of LayerGroup
        From :func:`layer_groups` (coarse, with their ``parts``).
    unfreeze : str or FreezeConfig
        ``"head"``, ``"all"``, ``"last:N"`` (the N groups before the head,
        plus the head; N larger than the number of groups means all) or
        ``"groups:a,b,c"`` with layer group names or names of their parts
        (sub-blocks).

    Returns
    -------
    tuple of str
        Trainable group and part names in model order; the head is always
        included. A group named with all its parts is returned once, by its
        group name.

    Raises
    ------
    ConfigError
        If a named group or part does not exist in the model.
    """
    cfg = unfreeze if isinstance(unfreeze, FreezeConfig) else FreezeConfig(unfreeze)
    names = [g.name for g in groups]
    body = [n for n in names if n != HEAD]
    explicit = cfg.group_names
    if explicit is not None:
        part_names = {p.name for g in groups for p in g.parts}
        unknown = [n for n in explicit if n not in names and n not in part_names]
        if unknown:
            hint = "" if not part_names else " (or one of their sub-blocks, e.g. " + ", ".join(
                sorted(part_names)[:3]) + ")"
            raise ConfigError(
                f"layer groups {unknown} are not in this model; its groups are: {', '.join(names)}{hint}."
            )
        chosen = set(explicit)
    else:
        kind, n = parse_unfreeze(cfg.unfreeze)
        if kind == "head":
            chosen = set()
        elif kind == "all":
            chosen = set(body)
        else:
            chosen = set(body[-n:]) if n <= len(body) else set(body)
    chosen.add(HEAD)
    out: list[str] = []
    for g in groups:
        if g.name in chosen or (g.parts and all(p.name in chosen for p in g.parts)):
            out.append(g.name)
        else:
            out.extend(p.name for p in g.parts if p.name in chosen)
    return tuple(out)


def trainable_param_names(groups: list[LayerGroup], trainable: tuple[str, ...] | list[str] | set[str]) -> set[str]:
    """Parameter names in the named layer groups and parts.

    Parameters
    ----------
    groups : list of LayerGroup
        From :func:`layer_groups`.
    trainable : iterable of str
        Group and part names (from :func:`trainable_group_names`); names not
        in `groups` are ignored.

    Returns
    -------
    set of str
    """
    want = set(trainable)
    out: set[str] = set()
    for g in groups:
        if g.name in want:
            out.update(g.param_names)
        for p in g.parts:
            if p.name in want:
                out.update(p.param_names)
    return out


def frozen_batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers whose parameters are all frozen.

    A BatchNorm layer without affine parameters counts as frozen when every
    other parameter of its parent module is frozen.

    Returns
    -------
    list of torch.nn.Module
        ``torch.nn.modules.batchnorm._BatchNorm`` instances (timm's
        ``BatchNormAct2d`` included) that must stay in eval mode.
    """
    out = []
    modules = dict(model.named_modules())
    for name, m in modules.items():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        params = list(m.parameters())
        if not params:
            parent = modules.get(name.rsplit(".", 1)[0] if "." in name else "", model)
            params = list(parent.parameters())
        if not any(p.requires_grad for p in params):
            out.append(m)
    return out


def apply_freeze(model: nn.Module, groups: list[LayerGroup], trainable: tuple[str, ...]) -> FreezeSummary:
    """Set ``requires_grad`` per layer group.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose parameters are changed in place.
    groups : list of LayerGroup
        From :func:`layer_groups` on the same model.
    trainable : tuple of str
        Group and part names that learn (from :func:`trainable_group_names`).

    Returns
    -------
    FreezeSummary
        The trainable and frozen parameter counts.

    Raises
    ------
    ConfigError
        If nothing would be trainable.
    """
    want = set(trainable)
    learn = trainable_param_names(groups, want)
    ordered = [n for g in groups for n in (g.name, *(p.name for p in g.parts)) if n in want]
    n_tr = n_fr = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name in learn)
        if name in learn:
            n_tr += p.numel()
        else:
            n_fr += p.numel()
    if n_tr == 0:
        raise ConfigError("this choice leaves no parameter trainable; tick at least the head.")
    return FreezeSummary(tuple(dict.fromkeys(ordered)), n_tr, n_fr)


def set_train_mode(model: nn.Module, update_bn: bool = False) -> None:
    """Put a partly frozen model in training mode, with BatchNorm statistics kept where they must be.

    ``model.train()`` would let every BatchNorm layer normalise with batch
    statistics and move its running mean and variance, which changes a
    "frozen" backbone. This calls ``model.train()`` and then ``eval()`` on
    every layer from :func:`frozen_batchnorm_modules`, and, unless
    `update_bn`, on every other BatchNorm layer too (its affine weight and
    bias still learn when its group is unfrozen).

    Parameters
    ----------
    model : torch.nn.Module
    update_bn : bool, default False
        Let BatchNorm layers in unfrozen groups use batch statistics and
        update their running statistics. Off by default: with small data sets
        and batches, keeping the pretrained statistics fine-tunes more stably
        (Keras transfer-learning guide, "BatchNormalization layers").
    """
    model.train()
    frozen = {id(m) for m in frozen_batchnorm_modules(model)}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (id(m) in frozen or not update_bn):
            m.eval()


def describe_layer_groups(model_name: str, num_classes: int = 2, coarse: bool = True) -> list[LayerGroup]:
    """Layer groups of a timm architecture without loading weights.

    The model is built on PyTorch's ``meta`` device (no memory for weights).

    Parameters
    ----------
    model_name : str
        timm model name.
    num_classes : int, default 2
        Head size used for the head's parameter count.
    coarse : bool, default True
        See :func:`layer_groups`.

    Raises
    ------
    BackboneError
        If timm cannot build the model.
    """
    return layer_groups(meta_model(model_name, num_classes), coarse=coarse)


def meta_model(model_name: str, num_classes: int = 2) -> nn.Module:
    """A timm architecture built on the ``meta`` device: shapes only, no weights, no memory.

    Raises
    ------
    BackboneError
        If timm cannot build the model.
    """
    import timm

    from ftcore.core.errors import BackboneError

    try:
        with torch.device("meta"):
            return timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    except Exception as e:
        raise BackboneError(f"timm cannot build '{model_name}': {e}") from e
