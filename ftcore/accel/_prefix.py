"""Compute a frozen prefix of the network once and train from its output.

When the first trainable layer sits deep in a network, every layer before it
is frozen and gives the same output for the same input at every epoch. This
module finds that cut point, computes the activations that enter it once per
image, and then runs only the trainable part on them.

How the cut is made, for any timm model and without knowing its ``forward``:

1. One forward pass with hooks records, in call order, when each module
   starts and ends. The *entry* is the innermost module that contains the
   first trainable parameter to be used; candidate cut points are the entry
   and its enclosing modules, innermost first.
2. For a candidate ``A``: every module whose calls all ended before ``A``
   started gets a stand-in ``forward`` that returns zeros of the shape it
   returned (no work; its parameters and name stay), and a forward pre-hook
   on ``A`` swaps its input for the cached activation. Plain tensor code between modules (a position
   embedding added in ``forward``, a flatten) still runs, on zeros, and its
   result is discarded at ``A``.
3. The candidate is accepted only when, in eval mode on real images, the cut
   model gives the same logits as the whole model (``torch.allclose``); else
   the next enclosing module is tried (a residual block whose shortcut reads
   its own input, for instance). If none passes, the prefix is not cached and
   training runs on images as usual.

What this gives up: random augmentation (and any dropout) before the cut,
because each image's activation is computed once with the deterministic
validation transform.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ftcore.accel._fold import patch_forward

__all__ = ["PrefixCut", "find_prefix_cut", "compute_features", "cut_applied", "feature_bytes"]

log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


def _zeros_forward(shape: tuple[int, ...], dtype: torch.dtype):
    """Forward of a frozen prefix module while the prefix is cached: zeros of the shape it returned, no work."""

    def forward(x, *args, **kwargs):  # noqa: ARG001 - the signature of the module it stands for
        batch = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() > 0 else shape[0]
        return torch.zeros((batch, *shape[1:]), dtype=dtype, device=x.device)

    return forward


@dataclass
class PrefixCut:
    """Where a model's frozen prefix ends.

    Attributes
    ----------
    entry : str
        Name (``model.named_modules()``) of the module whose input is cached;
        ``""`` never occurs (the whole model is not a cut).
    replaced : list of str
        Names of the outermost prefix modules that a cut model replaces by
        zero stand-ins.
    feature_shape : tuple of int
        Shape of one image's cached activation (without the batch dimension).
    prefix_share : float
        Fraction of the model's parameters that lie in the replaced modules,
        a rough guide to the compute saved.
    """

    entry: str
    replaced: list[str]
    feature_shape: tuple[int, ...]
    prefix_share: float
    _shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = field(default_factory=dict, repr=False)


def _record_calls(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, str, object]], dict]:
    """Run `model` once and log ('start'|'end', name, output shape) per module call."""
    events: list[tuple[str, str, object]] = []
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue

        def pre(mod, args, name=name):  # noqa: ARG001
            events.append(("start", name, None))

        def post(mod, args, out, name=name):  # noqa: ARG001
            events.append(("end", name, (tuple(out.shape), out.dtype) if isinstance(out, torch.Tensor) else None))

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return events, {}


def _parent_names(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def find_prefix_cut(model: nn.Module, example: torch.Tensor, rtol: float = 1e-4,
                    atol: float = 1e-4) -> PrefixCut | None:
    """Find the deepest verified cut before the first trainable parameter.

    Parameters
    ----------
    model : torch.nn.Module
        Frozen parameters already have ``requires_grad=False``. Put in eval
        mode for the check; the caller restores its mode.
    example : torch.Tensor of shape (batch, 3, height, width)
        Real images after the validation transform; two to eight suffice.
    rtol, atol : float, default 1e-4
        Tolerances of the logits check (``torch.allclose``); rounding differs
        a little with the batch layout, the result must not.

    Returns
    -------
    PrefixCut or None
        None when the first module is already trainable, nothing is
        trainable, or no candidate passes the check.
    """
    modules = dict(model.named_modules())
    direct_trainable = {n for n, m in modules.items()
                        if n and any(p.requires_grad for p in m.parameters(recurse=False))}
    if not direct_trainable:
        return None
    was_training = model.training
    model.eval()
    try:
        events, _ = _record_calls(model, example)
        with torch.inference_mode():
            reference = model(example).float()
    finally:
        model.train(was_training)
    starts = [n for kind, n, _ in events if kind == "start"]
    first = next((n for n in starts if n in direct_trainable), None)
    if first is None:
        return None
    # Candidate cut points: the first trainable module and its enclosing modules, innermost first.
    candidates = [first] + [p for p in _parent_names(first)]
    total_params = sum(p.numel() for p in model.parameters()) or 1
    for cand in candidates:
        cut = _candidate(model, modules, events, cand, total_params)
        if cut is None:
            continue
        try:
            feats = compute_features(model, cut, [example])
            with cut_applied(model, cut) as run, torch.inference_mode():
                model.eval()
                out = run(feats).float()
        except Exception as e:  # an architecture the stand-ins do not fit: try the next candidate
            log.debug("cut at %s failed: %s", cand, e)
            continue
        finally:
            model.train(was_training)
        if out.shape == reference.shape and torch.allclose(out, reference, rtol=rtol, atol=atol):
            log.info("frozen prefix cut at %s (%d modules replaced)", cand, len(cut.replaced))
            return cut
        log.debug("cut at %s changes the logits; trying an enclosing module", cand)
    return None


def _candidate(model: nn.Module, modules: dict, events: list, entry: str, total_params: int) -> PrefixCut | None:
    start_idx = next(i for i, (k, n, _) in enumerate(events) if k == "start" and n == entry)
    if start_idx == 0:
        return None
    ended_before = {}
    called_after = set()
    for i, (kind, name, shape) in enumerate(events):
        if kind == "end" and i < start_idx:
            ended_before[name] = shape
        elif kind == "start" and i > start_idx:
            called_after.add(name)
    done = {n for n in ended_before if n not in called_after and ended_before[n] is not None}
    # Modules still running when the entry starts (its ancestors) must stay.
    ancestors = set(_parent_names(entry))
    outer = sorted(n for n in done if n not in ancestors and not any(p in done for p in _parent_names(n)))
    if not outer:
        return None
    replaced_params = sum(p.numel() for n in outer for p in modules[n].parameters())
    if any(p.requires_grad for n in outer for p in modules[n].parameters()):
        return None
    shapes = {n: ended_before[n] for n in outer}
    return PrefixCut(entry=entry, replaced=outer, feature_shape=(), prefix_share=replaced_params / total_params,
                     _shapes=shapes)


@torch.inference_mode()
def compute_features(
    model: nn.Module, cut: PrefixCut, batches: Iterable[torch.Tensor],
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor | None:
    """Run the frozen prefix once over image batches and return the activations at the cut.

    The model runs in eval mode up to the cut's entry module, and the rest of
    the forward pass is skipped.

    Parameters
    ----------
    model : torch.nn.Module
        The whole model (not cut).
    cut : PrefixCut
    batches : iterable of torch.Tensor of shape (batch, 3, height, width)
        Deterministically transformed images, on the model's device.
    should_stop : callable or None
        Polled before every batch; True returns None.

    Returns
    -------
    torch.Tensor of shape (n_images, *cut.feature_shape) or None
        float32, on the model's device; None when stopped.
    """
    entry = model.get_submodule(cut.entry)
    out: list[torch.Tensor] = []

    def grab(mod, args):  # noqa: ARG001
        out.append(args[0].detach().clone())
        raise _Stop

    h = entry.register_forward_pre_hook(grab)
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            if should_stop is not None and should_stop():
                return None
            try:
                model(x)
            except _Stop:
                pass
    finally:
        h.remove()
        model.train(was_training)
    feats = torch.cat(out)
    cut.feature_shape = tuple(feats.shape[1:])
    return feats


@contextlib.contextmanager
def cut_applied(model: nn.Module, cut: PrefixCut) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """Temporarily replace the frozen prefix; yields ``run(features) -> logits``.

    Inside the block, ``run(f)`` for a batch of cached activations ``f``
    (Tensor of shape (batch, *cut.feature_shape)) returns the model's logits,
    with gradients for the trainable part. Only the prefix modules' ``forward``
    is replaced, so names, parameters and the ``state_dict`` never change;
    on exit the class's ``forward`` is back.
    """
    entry = model.get_submodule(cut.entry)
    feed: list[torch.Tensor] = []

    def inject(mod, args):  # noqa: ARG001
        return (feed[-1], *args[1:])

    patched = []
    for name in cut.replaced:
        shape, dtype = cut._shapes[name]
        patched.append(patch_forward(model.get_submodule(name), _zeros_forward(shape, dtype)))
    h = entry.register_forward_pre_hook(inject)

    def run(features: torch.Tensor) -> torch.Tensor:
        feed.clear()
        feed.append(features)
        # The model's own input only sets the batch size of the stand-ins; a zero image costs nothing
        # because the first module it reaches is a stand-in.
        return model(features)

    try:
        yield run
    finally:
        h.remove()
        for undo in reversed(patched):
            undo()


def feature_bytes(cut: PrefixCut, n_images: int) -> int:
    """Memory in bytes that `n_images` float32 activations at `cut` take."""
    n = 1
    for s in cut.feature_shape:
        n *= s
    return 4 * n * n_images
