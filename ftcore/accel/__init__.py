"""The speed engine: BatchNorm folding, the frozen prefix computed once, CPU kernels, device choice.

The modules inside are private; other packages import the names below.
Imports only :mod:`ftcore.core` (and torch, timm).
"""

from ftcore.accel._device import autocast_dtype, choose_device, describe_device, device_summary, pick_device
from ftcore.accel._fold import bn_folded
from ftcore.accel._kernels import keep_freed_memory
from ftcore.accel._prefix import PrefixCut, compute_features, cut_applied, feature_bytes, find_prefix_cut

__all__ = [
    "autocast_dtype", "choose_device", "describe_device", "device_summary", "pick_device",
    "bn_folded", "keep_freed_memory",
    "PrefixCut", "compute_features", "cut_applied", "feature_bytes", "find_prefix_cut",
]
