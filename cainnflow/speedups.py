"""Inference speed-ups for a frozen CNN backbone: BatchNorm folding and TorchScript freezing.

Both give the same features (checked) and are caches rebuilt whenever the weights or their
device change; they are never part of a state dict.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import threading
import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["fold_batchnorm_checked", "freeze_graph", "fuse_conv_batchnorm", "quiet_tracing"]

logger = logging.getLogger(__name__)

_FUSE_CHECK_SIZE = 64
_FUSE_TOLERANCE = 1e-4
_JIT_WARMUP_RUNS = 3
_TRACE_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Every warning silenced around a TorchScript trace or export, one thread at a time.

    Tracing warns about Python-side shape math (``TracerWarning``) and deprecations, none of
    them the user's concern. The warning filters are process-wide, and ``catch_warnings``
    restores the list it found on entry: two threads inside it at once (two app sessions
    building a backbone, or one exporting) restore each other's lists, and an exit out of
    order leaves "ignore everything" installed for the whole process. Every place the library
    silences warnings goes through here, so the scopes nest and never interleave.
    """
    with _TRACE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def fuse_conv_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An inference copy of ``model`` with every BatchNorm folded into the conv before it.

    A frozen backbone's BatchNorm is an affine map per channel, so ``bn(conv(x))`` equals one
    convolution with scaled weights and a bias. Pairs are a ``Conv2d`` directly followed by a
    ``BatchNorm2d`` (or timm's ``BatchNormAct2d``, whose activation is kept) among the same
    parent's children. The copy is for inference only (eval mode, no gradients).

    Returns:
        The fused copy and the number of pairs folded.
    """
    from timm.layers import BatchNormAct2d

    fused = copy.deepcopy(model).eval()
    count = 0
    for parent in list(fused.modules()):
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = parent._modules[first], parent._modules[second]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
                shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
                scale = weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
            if isinstance(bn, BatchNormAct2d):
                parent._modules[second] = nn.Sequential(bn.drop, bn.act)
            else:
                parent._modules[second] = nn.Identity()
            count += 1
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    return fused, count


def fold_batchnorm_checked(model: nn.Module, rgb_channels: int = 3) -> nn.Module:
    """``model`` with BatchNorm folded into its convs, in channels-last layout.

    The copy's outputs are checked against ``model`` once on a random input; if they differ,
    ``model`` itself is returned. About a third faster on a CPU.
    """
    reference = next(model.parameters())
    fused, count = fuse_conv_batchnorm(model)
    fused = fused.to(memory_format=torch.channels_last)
    if not count:
        return fused
    probe = torch.randn(
        1, rgb_channels, _FUSE_CHECK_SIZE, _FUSE_CHECK_SIZE, generator=torch.Generator().manual_seed(0)
    ).to(reference)
    with torch.no_grad(), torch.autocast(reference.device.type, enabled=False):
        expected = model(probe)
        got = fused(probe.contiguous(memory_format=torch.channels_last))
    ok = all(
        torch.allclose(g, e, rtol=_FUSE_TOLERANCE, atol=_FUSE_TOLERANCE * float(e.abs().max()))
        for g, e in zip(got, expected, strict=True)
    )
    if not ok:
        logger.debug("BatchNorm folding changed the outputs; using the plain model")
        return model
    return fused


def freeze_graph(model: nn.Module, images: Tensor) -> nn.Module:
    """``model`` traced and frozen by TorchScript for the size and dtype of ``images``.

    Same outputs; on a CPU a frozen graph skips Python's per-module overhead (see the speed
    section of benchmarks/README.md). If tracing fails, ``model`` is returned.
    """
    try:
        # Trace and warm up outside inference mode: TorchScript's profiling executor
        # optimises the graph on its first runs, and only with ordinary tensors.
        with quiet_tracing(), torch.inference_mode(False), torch.no_grad():
            probe = torch.zeros(images[:1].shape, dtype=images.dtype, device=images.device)
            probe = probe.contiguous(memory_format=torch.channels_last)
            traced = torch.jit.trace(model, probe, check_trace=False, strict=False)
            frozen = torch.jit.freeze(traced.eval())
            for _ in range(_JIT_WARMUP_RUNS):
                frozen(probe)
        return frozen
    except Exception as exc:  # any tracing failure falls back to eager
        logger.debug("TorchScript tracing failed (%s); running eagerly", exc)
        return model
