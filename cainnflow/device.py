"""Choosing and describing the torch device that models run on.

``resolve_device("auto")`` picks CUDA when present, else Apple MPS, else the CPU; an explicit
request for an accelerator that is not there is an error rather than a silent CPU fallback.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cainnflow.errors import CainnflowError

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUTO_DEVICE",
    "DEVICE_CHOICES",
    "autocast_dtype",
    "describe_device",
    "mps_available",
    "resolve_device",
]

AUTO_DEVICE = "auto"
"""The device name that means: the best accelerator available, else the CPU."""
DEVICE_CHOICES: tuple[str, ...] = (AUTO_DEVICE, "cpu", "cuda", "mps")
"""The device names a person can choose from (CLI options, the app's device menu)."""
CPU_BF16_ENV = "CAINNFLOW_CPU_BF16"
"""Set to ``1`` to run the frozen backbone in bfloat16 on a CPU with AMX (see autocast_dtype)."""

_BYTES_PER_GIB = 1024**3
_VALID_TYPES = ("cpu", "cuda", "mps")


def mps_available() -> bool:
    """Whether Apple's Metal (MPS) backend can be used by this torch build on this machine."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device = AUTO_DEVICE) -> torch.device:
    """Turn a user's device choice into a usable :class:`torch.device`.

    Args:
        device: ``"auto"`` (CUDA if available, else MPS, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`. Case and surrounding spaces
            are ignored.

    Returns:
        The device. A bare ``"cuda"`` becomes ``cuda:<current device>``.

    Raises:
        CainnflowError: The name is not a device, or the requested accelerator is not
            available on this machine (no silent fallback to the CPU).
    """
    import torch

    if isinstance(device, str):
        text = device.strip().lower()
        if text == AUTO_DEVICE:
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            if mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            resolved = torch.device(text)
        except (RuntimeError, ValueError) as exc:
            raise CainnflowError(
                f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
            ) from exc
    elif isinstance(device, torch.device):
        resolved = device
    else:
        raise CainnflowError(f"Device must be a string or torch.device, not {type(device).__name__}.")

    if resolved.type not in _VALID_TYPES:
        raise CainnflowError(
            f"Unsupported device {str(resolved)!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise CainnflowError(
                f"Device {str(resolved)!r} was requested but CUDA is not available on this machine "
                "(no NVIDIA GPU or a CPU-only torch build); use --device cpu or auto."
            )
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= count:
            raise CainnflowError(
                f"Device {str(resolved)!r} was requested but this machine has {count} CUDA device(s)."
            )
        return torch.device("cuda", index)
    if resolved.type == "mps" and not mps_available():
        raise CainnflowError(
            f"Device {str(resolved)!r} was requested but Apple MPS is not available on this machine; "
            "use --device cpu or auto."
        )
    return resolved


def describe_device(device: str | torch.device) -> str:
    """A short human-readable description of a device, for logs and the app.

    Args:
        device: Anything :func:`resolve_device` accepts.

    Returns:
        For example ``"CUDA: NVIDIA H200 (139 GiB)"``, ``"Apple MPS"`` or ``"CPU (2 threads)"``.
    """
    import torch

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        props = torch.cuda.get_device_properties(resolved)
        memory_gib = round(props.total_memory / _BYTES_PER_GIB)
        return f"CUDA: {props.name} ({memory_gib} GiB)"
    if resolved.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """The mixed-precision dtype to use for the frozen backbone on a device, if any.

    Args:
        device: Anything :func:`resolve_device` accepts.

    Returns:
        ``torch.bfloat16`` on a CUDA device that supports it; on the CPU only when the
        environment sets ``CAINNFLOW_CPU_BF16=1`` and the CPU has native bfloat16 (AMX):
        about 40 % faster backbone there, features within 2–3 % (benchmarks/README.md);
        else ``None`` (run in float32).
    """
    import torch

    resolved = resolve_device(device)
    if resolved.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if resolved.type == "cpu" and os.environ.get(CPU_BF16_ENV) == "1" and _cpu_has_amx():
        return torch.bfloat16
    return None


def _cpu_has_amx() -> bool:
    import torch

    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check is not None and check())
