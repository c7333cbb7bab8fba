"""Which device trains, and with which automatic mixed precision.

:func:`choose_device` and :func:`autocast_dtype` are pure decisions (the
facts about the machine are parameters), so every branch, CUDA included, is
tested on any machine; :func:`pick_device` asks PyTorch for the facts.
"""

from __future__ import annotations

import torch

from ftcore.core.config import DEVICES
from ftcore.core.errors import ConfigError

__all__ = ["choose_device", "autocast_dtype", "pick_device", "machine_facts", "describe_device", "device_summary"]


def machine_facts() -> dict[str, bool]:
    """What this machine offers: ``cuda``, ``mps`` and ``cuda_bf16`` (bfloat16 on the CUDA device)."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return {"cuda": cuda, "mps": bool(mps), "cuda_bf16": bool(cuda and torch.cuda.is_bf16_supported())}


def choose_device(requested: str, cuda: bool, mps: bool) -> str:
    """The device type to train on.

    Parameters
    ----------
    requested : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    cuda, mps : bool
        Whether an NVIDIA GPU (CUDA) / Apple GPU (MPS) is usable.

    Returns
    -------
    str
        ``"auto"`` gives ``"cuda"`` if present, else ``"mps"`` if present,
        else ``"cpu"``; an explicit choice is returned when present.

    Raises
    ------
    ConfigError
        If `requested` is unknown or names a device this machine lacks.
    """
    if requested not in DEVICES:
        raise ConfigError(f"device {requested!r} is not one of {', '.join(DEVICES)}.")
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise ConfigError(f"device {requested!r} was asked for, but this machine has no usable {requested.upper()} "
                          "device; use 'auto' or 'cpu'.")
    return requested


def autocast_dtype(device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """Data type of automatic mixed precision for a device, or None for full float32.

    bfloat16 on a CUDA device that supports it (compute capability 8.0 and
    newer, ``torch.cuda.is_bf16_supported()``): it keeps float32's exponent
    range, so no loss scaling is needed. float16 (which would need a
    gradient scaler), MPS and the CPU train in float32.
    """
    return torch.bfloat16 if device_type == "cuda" and bf16_supported else None


def pick_device(requested: str = "auto") -> torch.device:
    """The :class:`torch.device` to train on (see :func:`choose_device`)."""
    f = machine_facts()
    return torch.device(choose_device(requested, f["cuda"], f["mps"]))


def describe_device(device: torch.device, amp: torch.dtype | None) -> str:
    """The device for people, e.g. ``"cuda (NVIDIA H200), bfloat16 autocast"`` or ``"cpu, float32"``."""
    name = str(device)
    if device.type == "cuda":
        try:
            name += f" ({torch.cuda.get_device_name(device)})"
        except Exception:  # noqa: BLE001 - a description only
            pass
    return f"{name}, {'bfloat16 autocast' if amp == torch.bfloat16 else 'float32'}"


def device_summary(requested: str = "auto") -> str:
    """:func:`describe_device` of the device and autocast type a run with `requested` gets here.

    Raises
    ------
    ConfigError
        As :func:`choose_device`.
    """
    dev = pick_device(requested)
    return describe_device(dev, autocast_dtype(dev.type, machine_facts()["cuda_bf16"]))
