"""Layer groups, freezing policy, and trainable/frozen parameter counts.

Layer groups come from timm: ``model.group_matcher(coarse=True)`` names the
stem, each block or stage, and the final layers, and
``timm.models.group_parameters`` assigns every parameter to one group, input
to output. The classifier (``model.get_classifier()``, named ``fc``, ``head``,
``head.fc`` or ``classifier`` depending on the family) always forms its own
last group, ``"head"``, which is always trained.

The groups are found in :mod:`ftcore.models._groups` (:func:`layer_groups`,
imported from here); this module chooses what learns (:func:`trainable_group_names`),
freezes the rest (:func:`apply_freeze`) and keeps frozen BatchNorm layers in
eval mode (:func:`set_train_mode`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ftcore.core.config import FreezeConfig, parse_unfreeze
from ftcore.core.errors import ConfigError
from ftcore.models._groups import HEAD, LayerGroup, classifier_modules, layer_groups
from ftcore.models.backbones import meta_model

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

    The model is built on PyTorch's ``meta`` device (no memory for weights) by
    :func:`ftcore.models.backbones.meta_model`.

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
