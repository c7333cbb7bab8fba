"""Training compute of a freezing choice, from measured forward FLOPs per layer group.

The forward FLOPs of every layer group and sub-block are counted with
PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` on one image pushed
through the model on the ``meta`` device (shapes only, no memory for
weights, well under a second for common backbones). A training step then
costs, in forward-pass units (Kaplan et al., "Scaling Laws for Neural
Language Models", 2020: the backward pass costs about twice the forward,
half for the gradients of the activations and half for those of the weights):

    step = F_all + sum(F_u for units u from the first trainable one to the output)
                 + sum(F_u for trainable units u)

so a linear probe costs about one forward pass and training everything about
three. When a model cannot be traced on the meta device, FLOPs are estimated
as proportional to parameters (stated in ``method``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ftcore.models.backbones import meta_model
from ftcore.models.layers import HEAD, LayerGroup, layer_groups, trainable_param_names

__all__ = ["ComputeUnit", "ComputeProfile", "compute_profile", "describe_compute", "step_cost"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputeUnit:
    """The smallest piece that can be ticked: a sub-block, or a group without sub-blocks.

    Attributes
    ----------
    name : str
        Part name, or the group name when the group has no parts.
    group : str
        The coarse layer group it belongs to.
    n_params : int
    flops : float
        Forward FLOPs for one image (a multiply-add counts 2).
    """

    name: str
    group: str
    n_params: int
    flops: float


@dataclass(frozen=True)
class ComputeProfile:
    """Forward FLOPs per unit, input to output.

    Attributes
    ----------
    units : tuple of ComputeUnit
    total_flops : float
        Forward FLOPs of the whole model for one image (at least the sum of
        the units; the rest is outside every layer group, e.g. pooling).
    img_size : int
        Square input side in pixels.
    method : str
        ``"measured"`` (FlopCounterMode) or ``"parameters"`` (estimated as
        proportional to parameter counts).
    """

    units: tuple[ComputeUnit, ...]
    total_flops: float
    img_size: int
    method: str

    def group_flops(self) -> dict[str, float]:
        """Forward FLOPs per coarse layer group."""
        out: dict[str, float] = {}
        for u in self.units:
            out[u.group] = out.get(u.group, 0.0) + u.flops
        return out


def _units(groups: list[LayerGroup]) -> list[tuple[str, str, tuple[str, ...], int]]:
    out = []
    for g in groups:
        for p in (g.parts or (g,)):
            out.append((p.name, g.name, p.param_names, p.n_params))
    return out


def _roots(model: nn.Module, param_names: tuple[str, ...]) -> set[str]:
    """The largest modules all of whose parameters are in `param_names`."""
    mine = set(param_names)
    owned = {name: {f"{name}.{p}" if name else p for p, _ in m.named_parameters()}
             for name, m in model.named_modules()}
    roots = set()
    for n in param_names:
        mod = n.rsplit(".", 1)[0] if "." in n else ""
        if mod == "":
            continue  # a parameter of the model itself (ViT's cls_token): no FLOPs of its own
        while "." in mod and owned.get(mod.rsplit(".", 1)[0], {None}) <= mine:
            mod = mod.rsplit(".", 1)[0]
        if mod in owned and owned[mod] <= mine:
            roots.add(mod)
    # drop roots inside other roots
    return {r for r in roots if not any(r.startswith(o + ".") for o in roots)}


def compute_profile(model: nn.Module, img_size: int, groups: list[LayerGroup] | None = None) -> ComputeProfile:
    """Forward FLOPs per unit of a model, measured with ``FlopCounterMode``.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model, best built on the ``meta`` device.
    img_size : int
        Square input side in pixels.
    groups : list of LayerGroup or None
        From :func:`ftcore.models.layers.layer_groups`; computed when None.

    Returns
    -------
    ComputeProfile
        ``method="parameters"`` when the forward pass cannot be traced.
    """
    from torch.utils.flop_counter import FlopCounterMode

    groups = groups if groups is not None else layer_groups(model)
    units = _units(groups)
    try:
        p = next(model.parameters())
        counter = FlopCounterMode(display=False)
        was_training = model.training
        model.eval()
        with counter, torch.no_grad():
            model(torch.zeros(1, 3, img_size, img_size, device=p.device, dtype=p.dtype))
        model.train(was_training)
        counts = counter.get_flop_counts()
        root_name = type(model).__name__
        per_module = {k[len(root_name) + 1:]: sum(v.values()) for k, v in counts.items()
                      if k.startswith(root_name + ".")}
        total = float(counter.get_total_flops())
        out = [ComputeUnit(n, g, k, float(sum(per_module.get(r, 0) for r in _roots(model, names))))
               for n, g, names, k in units]
        if total <= 0:
            raise ValueError("no FLOPs counted")
        return ComputeProfile(tuple(out), max(total, sum(u.flops for u in out)), img_size, "measured")
    except Exception as e:  # noqa: BLE001 - any tracing failure falls back to the stated estimate
        log.info("FLOPs of %s not measurable on %s (%s); estimating by parameters", type(model).__name__,
                 "meta", e)
        n_all = sum(k for *_, k in units) or 1
        out = [ComputeUnit(n, g, k, float(k)) for n, g, _, k in units]
        return ComputeProfile(tuple(out), float(n_all), img_size, "parameters")


def describe_compute(model_name: str, img_size: int, num_classes: int = 2) -> ComputeProfile:
    """:func:`compute_profile` of a timm architecture built on the ``meta`` device (no weights).

    Built by :func:`ftcore.models.backbones.meta_model`.

    Raises
    ------
    BackboneError
        If timm cannot build the model.
    """
    return compute_profile(meta_model(model_name, num_classes), img_size)


def step_cost(profile: ComputeProfile, groups: list[LayerGroup], trainable: tuple[str, ...] | list[str]) -> dict:
    """Estimated compute of one training step for a freezing choice.

    Parameters
    ----------
    profile : ComputeProfile
    groups : list of LayerGroup
        The groups the profile was made from.
    trainable : sequence of str
        Group and part names that learn (:func:`ftcore.models.layers.trainable_group_names`).

    Returns
    -------
    dict
        ``step_flops`` (per image), ``forward_flops`` (per image),
        ``vs_linear_probe`` (step cost over that of training the head only,
        >= 1), ``share_of_full`` (step cost over that of training every
        group, in (0, 1]) and ``method``.
    """
    def cost(names) -> float:
        learn = trainable_param_names(groups, names)
        by_unit = {n: names_ for n, _, names_, _ in _units(groups)}
        flags = [any(p in learn for p in by_unit[u.name]) for u in profile.units]
        first = next((i for i, f in enumerate(flags) if f), len(flags))
        back_act = sum(u.flops for u in profile.units[first:])
        back_w = sum(u.flops for u, f in zip(profile.units, flags) if f)
        return profile.total_flops + back_act + back_w

    step = cost(tuple(trainable))
    probe = cost((HEAD,))
    full = cost(tuple(g.name for g in groups))
    return {"step_flops": step, "forward_flops": profile.total_flops, "vs_linear_probe": step / probe,
            "share_of_full": step / full, "method": profile.method}
