"""ftcore.accel._device: the device decision (CUDA, MPS, CPU) and bfloat16 autocast, on any machine."""

from __future__ import annotations

import pytest
import torch

from ftcore.accel import _device as dev
from ftcore.core.errors import ConfigError


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"),
                                                 (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(cuda, mps, expected):
    assert dev.choose_device("auto", cuda, mps) == expected


def test_explicit_choices():
    assert dev.choose_device("cpu", True, True) == "cpu"
    assert dev.choose_device("cuda", True, False) == "cuda"
    assert dev.choose_device("mps", False, True) == "mps"
    with pytest.raises(ConfigError, match="device 'cuda' was asked for, but this machine has no usable CUDA device"):
        dev.choose_device("cuda", False, True)
    with pytest.raises(ConfigError, match="no usable MPS device; use 'auto' or 'cpu'"):
        dev.choose_device("mps", True, False)
    with pytest.raises(ConfigError, match="device 'tpu' is not one of auto, cpu, cuda, mps"):
        dev.choose_device("tpu", True, True)


def test_autocast_dtype():
    assert dev.autocast_dtype("cuda", True) is torch.bfloat16
    assert dev.autocast_dtype("cuda", False) is None  # older GPUs train in float32
    assert dev.autocast_dtype("mps", True) is None
    assert dev.autocast_dtype("cpu", True) is None


def test_pick_device_asks_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dev.pick_device() == torch.device("cuda")
    assert dev.machine_facts()["cuda_bf16"] is True
    assert dev.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.pick_device() == torch.device("cpu")
    assert dev.device_summary() == "cpu, float32"


def test_describe_device():
    assert dev.describe_device(torch.device("cpu"), None) == "cpu, float32"
    assert dev.describe_device(torch.device("mps"), None) == "mps, float32"
