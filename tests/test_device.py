"""Tests for cainnflow.device."""

from __future__ import annotations

import pytest
import torch

from cainnflow import device as device_module
from cainnflow.device import autocast_dtype, describe_device, resolve_device
from cainnflow.errors import CainnflowError


@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "mps_available", lambda: False)


def test_auto_falls_back_to_cpu(no_accelerators: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_auto_prefers_mps_when_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert describe_device("mps") == "Apple MPS"
    assert autocast_dtype("mps") is None


def test_explicit_unavailable_accelerators_raise(no_accelerators: None) -> None:
    with pytest.raises(CainnflowError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(CainnflowError, match="CUDA is not available"):
        resolve_device(torch.device("cuda", 0))
    with pytest.raises(CainnflowError, match="MPS is not available"):
        resolve_device("mps")


def test_bad_names_raise() -> None:
    with pytest.raises(CainnflowError, match="Unknown device"):
        resolve_device("tpu-please")
    with pytest.raises(CainnflowError):
        resolve_device(3)  # type: ignore[arg-type]


def test_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert describe_device("cpu") == "CPU (2 threads)"
    assert autocast_dtype("cpu") is None


def test_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(CainnflowError, match="1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda() -> None:
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert describe_device(device).startswith("CUDA: ")
    assert describe_device(device).endswith(" GiB)")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert autocast_dtype(device) is expected


def test_cpu_bf16_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(device_module.CPU_BF16_ENV, raising=False)
    assert device_module.autocast_dtype("cpu") is None
    monkeypatch.setenv(device_module.CPU_BF16_ENV, "1")
    monkeypatch.setattr(device_module, "_cpu_has_amx", lambda: True)
    assert device_module.autocast_dtype("cpu") is torch.bfloat16
    monkeypatch.setattr(device_module, "_cpu_has_amx", lambda: False)
    assert device_module.autocast_dtype("cpu") is None
