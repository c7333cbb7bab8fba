"""Layer groups of a timm model, input to output, with their sub-blocks; the classifier head.

Layer groups come from timm: ``model.group_matcher(coarse=True)`` names the
stem, each block or stage, and the final layers, and
``timm.models.group_parameters`` assigns every parameter to one group, input
to output; ``coarse=False`` gives the finer sub-blocks, attached to their
group as ``parts``. The classifier (``model.get_classifier()``, named ``fc``,
``head``, ``head.fc`` or ``classifier`` depending on the family) always forms
its own last group, ``"head"``. Freezing by group is in
:mod:`ftcore.models.layers`, which is where the public names are imported from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn

log = logging.getLogger(__name__)

#: Name of the classifier's layer group, which always learns.
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
