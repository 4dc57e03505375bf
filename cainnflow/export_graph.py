"""Graph work for the exported scoring graph (every precision): the same numbers, fewer ops.

:class:`cainnflow.export.ScoringGraph` traces the eager modules; five rewrites make the
traced graph cheaper for ONNX Runtime and OpenVINO without changing what it computes (maps
and scores within float rounding, ~1e-7, of :meth:`cainnflow.model.CAINNFlow.score`):

* **TF-"same" padding as constants** (:func:`static_same_padding`). timm's ``Conv2dSame``
  (EfficientNet-Lite's stride-2 convolutions) computes its padding from the input's shape at
  run time, so the traced graph carries a ``Shape → Ceil → Pad`` chain per convolution that
  no engine can fold. At a fixed input size the padding is known: it becomes a constant
  ``Pad``, which :func:`fold_pads_into_convs` then moves into the ``Conv``'s own (possibly
  asymmetric) ``pads`` — one op, one layout, no padded copy of the activation.
* **The map's upsample + blur as two matrix products per scale** (:class:`FusedMapScorer`).
  Bilinear upsampling (``align_corners=False``) and the Gaussian blur with its reflect (or
  replicate) border are both linear and separable, so upsample-then-blur of an
  ``h × w`` scale map is ``A · M · Bᵀ`` with precomputed ``A`` (S × h) and ``B`` (S × w).
  The matrices are made by running :mod:`cainnflow.scoring`'s own functions on unit inputs,
  so the fused map is the library's map (differences are float rounding, ~1e-6), not an
  approximation: pixel AUROC and AUPRO do not move. The scales share one product: their
  ``M · Bᵀ`` are stacked along the rows and multiplied once by the stacked ``A``.
* **No closing permutation** (:class:`ExportFlows`): the map reads a latent through
  ``mean_c z²``, which a channel permutation does not change, so each flow's final
  ``PermuteRandom`` (a ``Gather`` plus a layout reorder in OpenVINO) is left out.
* **Shape arithmetic folded** (:func:`fold_constants`): what the TorchScript exporter leaves
  as ops on constants becomes constants.
* **The soft clamp's ``atan`` in element-wise ops, for OpenVINO** (:func:`elementwise_atan`):
  OpenVINO's ``Atan`` is a reference kernel; multiplications, additions, divisions and square
  roots it fuses with the coupling around them (within 4e-7 of ``atan``).

The PyTorch model and :mod:`cainnflow.scoring` are untouched: this is the export path only.

Over 500 lines: each rewrite above is a small module that stands in for one PyTorch piece of
the scoring graph, and they are checked together against the PyTorch model (one file keeps
the parity argument in one place).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .scoring import (
    COARSE_TOP_FRACTION,
    GAUSSIAN_TRUNCATE,
    MAP_POOLINGS,
    _coarse_half,
    _scale_terms,
    _upsample,
    gaussian_blur,
    image_scores,
    scale_weights,
    top_fraction_mean,
)

__all__ = [
    "SPLIT_SCOPE",
    "ExportFlows",
    "FusedMapScorer",
    "fold_pads_into_convs",
    "optimize_onnx_file",
    "static_same_padding",
]

logger = logging.getLogger(__name__)

_BASIS_CHUNK = 64  # unit maps per blur call while building the map matrices
SPLIT_SCOPE = "/split."
"""In the node names of :class:`ExportFlows`' channel-picking convolutions."""


# --------------------------------------------------------------------------- TF-"same" padding


class _StaticPadConv2d(nn.Conv2d):
    """A ``Conv2dSame`` at one input size: constant zero padding, then an unpadded convolution."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            0,
            conv.dilation,  # type: ignore[arg-type]
            conv.groups,
            conv.bias is not None,
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.pads = pads  # (left, right, top, bottom), as F.pad takes them

    def forward(self, x: Tensor) -> Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def static_same_padding(model: nn.Module, image_size: int) -> int:
    """Replaces every timm ``Conv2dSame`` in ``model`` (in place) by a constant-padding conv.

    The padding is the one ``Conv2dSame`` computes for the input it receives when ``model``
    runs on ``image_size`` × ``image_size`` images, so outputs are unchanged at that size
    (and only there: use it on the export's copy of the backbone).

    Returns:
        How many convolutions were replaced.
    """
    try:
        from timm.layers import Conv2dSame
    except ImportError:  # pragma: no cover - timm is a dependency
        return 0
    targets = [(name, m) for name, m in model.named_modules() if type(m) is Conv2dSame]
    if not targets:
        return 0
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))
        )
        for name, module in targets
    ]
    reference = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, dtype=reference.dtype, device=reference.device))
    finally:
        for hook in hooks:
            hook.remove()
    for name, conv in targets:
        height, width = sizes[name]
        top, bottom = _same_pads(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        left, right = _same_pads(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _StaticPadConv2d(conv, (left, right, top, bottom)))
    return len(targets)


def fold_pads_into_convs(model) -> int:
    """Moves constant zero ``Pad`` ops of an ONNX graph into the ``Conv`` each one feeds.

    A ``Pad`` qualifies when its mode is ``constant``, its value is 0 (or absent), its pads are
    an initializer or ``Constant`` touching only the two spatial axes, and its output is read
    by ``Conv`` nodes only. Works in place on an ``onnx.ModelProto``.

    Returns:
        How many ``Pad`` ops were folded.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = 0
    keep = []
    for node in graph.node:
        pads = _foldable_pads(node, constants, readers, outputs)
        if pads is None:
            keep.append(node)
            continue
        for conv in readers[node.output[0]]:
            current = next((a for a in conv.attribute if a.name == "pads"), None)
            base = list(helper.get_attribute_value(current)) if current is not None else [0, 0, 0, 0]
            merged = [a + b for a, b in zip(base, pads, strict=True)]
            if current is not None:
                conv.attribute.remove(current)
            auto_pad = next((a for a in conv.attribute if a.name == "auto_pad"), None)
            if auto_pad is not None:
                conv.attribute.remove(auto_pad)
            conv.attribute.append(helper.make_attribute("pads", merged))
            conv.input[0] = node.input[0]
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(_live_nodes(keep, {o.name for o in graph.output}))
        _drop_unread_initializers(graph)
    return folded


def _foldable_pads(node, constants, readers, outputs) -> list[int] | None:
    """ONNX Conv ``pads`` ([top, left, bottom, right]) a Pad node adds, or None if it cannot fold."""
    if node.op_type != "Pad" or node.output[0] in outputs:
        return None
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
    if mode != b"constant" or len(node.input) < 2 or node.input[1] not in constants:
        return None
    if len(node.input) > 2 and node.input[2]:
        value = constants.get(node.input[2])
        if value is None or value.size != 1 or float(value.reshape(-1)[0]) != 0.0:
            return None
    if len(node.input) > 3 and node.input[3]:  # explicit axes: not produced by the exporter
        return None
    pads = [int(v) for v in constants[node.input[1]].reshape(-1)]
    if len(pads) != 8 or any(v < 0 for v in pads) or any(pads[i] for i in (0, 1, 4, 5)):
        return None
    users = readers.get(node.output[0], [])
    if not users or any(u.op_type != "Conv" or u.input[0] != node.output[0] for u in users):
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


# --------------------------------------------------------------------------- anomaly map


def _operator(size: int, out: int, sigma: float) -> Tensor:
    """The (out × size) matrix of upsample-then-blur along one axis of a square map.

    Column ``j`` is what :mod:`cainnflow.scoring`'s own functions make of a map that is 1 on
    row ``j`` and 0 elsewhere: along the other axis such a map is constant, and bilinear
    upsampling and a normalised blur keep a constant, so that axis can be narrow. It is
    ``radius + 1`` wide (or ``out``, when ``out`` is not wider than the blur radius) so that
    :func:`gaussian_blur` chooses the border (reflect or replicate) it chooses for the real
    ``out × out`` map.
    """
    radius = max(1, math.ceil(GAUSSIAN_TRUNCATE * sigma)) if sigma > 0 else 0
    width = out if out <= radius else radius + 1
    basis = torch.eye(size, dtype=torch.float64)
    columns = []
    for start in range(0, size, _BASIS_CHUNK):
        maps = basis[start : start + _BASIS_CHUNK, :, None]  # (k, size, 1)
        columns.append(gaussian_blur(_upsample(maps, (out, width)), sigma)[:, :, 0])
    return torch.cat(columns).T.contiguous()


class FusedMapScorer(nn.Module):
    """The model's maps and image scores with upsample + blur as precomputed matrix products.

    Gives what :meth:`cainnflow.model.CAINNFlow.score` gives for latents of ``shapes`` at
    ``image_size`` (same combine, sigma and pooling), up to float rounding.

    Args:
        config: the model's :class:`cainnflow.config.CAINNFlowConfig`.
        shapes: (C, H, W) of each scale's latent.
        image_size: the map side ``S``.
    """

    def __init__(self, config, shapes: Sequence[tuple[int, int, int]], image_size: int) -> None:
        super().__init__()
        self.combine = config.combine
        self.pooling = "max" if config.pooling == "auto" else config.pooling
        self.n_scales = len(shapes)
        sigma = float(config.sigma)
        operators: dict[int, Tensor] = {}  # one per side length: the map is square
        for _, height, width in shapes:
            for side in (height, width):
                if side not in operators:
                    operators[side] = _operator(side, image_size, sigma)
        rows = [operators[h] for _, h, _ in shapes]  # (S, h)
        cols = [operators[w].T for _, _, w in shapes]  # (w, S)
        fake = [torch.zeros(1, 1, h, w) for _, h, w in shapes]
        weight = config.coarsest_map_weight
        weights = scale_weights(fake, 1.0 if weight is None else weight)
        # The map's weighted mean over scales is folded into the left matrix.
        left = torch.cat([r * w for r, w in zip(rows, weights, strict=True)], dim=1) / sum(weights)
        self.register_buffer("left", left.float())
        # Map-pooled image scores read the equal-weight map (cainnflow.scoring.score_latents).
        self.equal_map = any(w != 1.0 for w in weights) and self.pooling in MAP_POOLINGS
        if self.equal_map:
            self.register_buffer("left_equal", (torch.cat(rows, dim=1) / len(shapes)).float())
        for i, col in enumerate(cols):
            self.register_buffer(f"right{i}", col.float())
        self.coarse: list[int] = []
        self.coarsest = _coarse_half(fake)[0]
        if self.pooling == "coarse":
            self.coarse = sorted(_coarse_half(fake))
            self.register_buffer(
                "left_coarse", (torch.cat([rows[i] for i in self.coarse], dim=1) / len(self.coarse)).float()
            )

    def forward(self, z: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Latents (one (N, C_i, H_i, W_i) per scale) → maps (N, S, S) and scores (N,)."""
        terms = _scale_terms(z, self.combine)  # (N, h_i, w_i)
        halves = [torch.matmul(t, getattr(self, f"right{i}")) for i, t in enumerate(terms)]  # (N, h_i, S)
        maps = torch.matmul(self.left, torch.cat(halves, dim=1))
        if self.pooling == "coarse":
            coarse = torch.matmul(self.left_coarse, torch.cat([halves[i] for i in self.coarse], dim=1))
            return maps, coarse.flatten(1).amax(dim=1)
        if self.pooling == "coarse_top":
            return maps, top_fraction_mean(terms[self.coarsest], COARSE_TOP_FRACTION)
        if self.equal_map:
            return maps, image_scores(torch.matmul(self.left_equal, torch.cat(halves, dim=1)), self.pooling)
        return maps, image_scores(maps, self.pooling)


# --------------------------------------------------------------------------- flows


def _selection_conv(mean: Tensor, std: Tensor, channels: slice) -> nn.Conv2d:
    """A 1×1 convolution that picks ``channels`` of its input and standardises them."""
    picked = range(mean.shape[1])[channels]
    conv = nn.Conv2d(mean.shape[1], len(picked), kernel_size=1)
    with torch.no_grad():
        conv.weight.zero_()
        for out, channel in enumerate(picked):
            conv.weight[out, channel, 0, 0] = 1.0 / std[0, channel, 0, 0]
        conv.bias.copy_(-(mean / std)[0, channels, 0, 0])
    conv.requires_grad_(False)
    return conv


def _output_slice(conv: nn.Conv2d, channels: slice) -> nn.Conv2d:
    """A convolution computing ``channels`` of ``conv``'s output (same weights, no copy of the rest)."""
    weight = conv.weight[channels]
    part = nn.Conv2d(
        conv.in_channels,
        weight.shape[0],
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        part.weight.copy_(weight)
        if conv.bias is not None:
            part.bias.copy_(conv.bias[channels])
    part.requires_grad_(False)
    return part


class _Coefficients(nn.Module):
    """A coupling subnet's output as its two halves ``(s, t)``, from two convolutions.

    The subnet's last layer is split by output channel, so the engine runs two convolutions
    instead of one and a channel split (OpenVINO's reference ``VariadicSplit``). Subnets that
    do not end in a plain convolution (``CA`` ends in CBAM) are run whole and sliced.
    """

    def __init__(self, subnet: nn.Module, first: int) -> None:
        super().__init__()
        layers = getattr(subnet, "layers", None)
        self.first = first
        self.subnet = subnet
        self.split = (
            isinstance(layers, nn.Sequential) and type(layers[-1]) is nn.Conv2d and layers[-1].groups == 1
        )
        if self.split:
            self.body = layers[:-1]
            self.s = _output_slice(layers[-1], slice(0, first))
            self.t = _output_slice(layers[-1], slice(first, None))

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        if self.split:
            hidden = self.body(u)
            return self.s(hidden), self.t(hidden)
        a = self.subnet(u)
        return a[:, : self.first], a[:, self.first :]


_ATAN_SERIES = tuple((-1) ** k / (2 * k + 1) for k in range(8))  # atan's Taylor series to v¹⁵
_ATAN_RANGE = 1e6  # |x| beyond this: atan(x) = ±π/2 within 1e-6 (and x² stays finite)


def elementwise_atan(x: Tensor) -> Tensor:
    """``atan(x)`` from multiplications, additions, divisions and square roots (error ≤ 4e-7).

    OpenVINO runs ``Atan`` as a reference kernel (0.6 ms of a 6 ms model, for the coupling
    blocks' soft clamp); these ops it fuses into one JIT kernel. Two half-angle steps,
    ``atan(x) = 2·atan(x / (1 + √(1 + x²)))``, bring any argument into |v| < tan(π/8) ≈ 0.414,
    where the series to v¹⁵ is exact to 2e-8; the rest is float32 rounding (torch's own
    ``atan`` is within 1.2e-7 of the exact value). Beyond |x| = 1e6 the result is ±(π/2 − 1e-6).
    """
    x = x.clamp(-_ATAN_RANGE, _ATAN_RANGE)
    for _ in range(2):
        x = x / (1.0 + torch.sqrt(1.0 + x * x))
    v2 = x * x
    series = torch.full_like(x, _ATAN_SERIES[-1])
    for coefficient in reversed(_ATAN_SERIES[:-1]):
        series = series * v2 + coefficient
    return 4.0 * x * series


def _soft_clamp(glow) -> object:
    """The block's ``f_clamp``; FrEIA's ``"ATAN"`` one (``0.636·atan``) with :func:`elementwise_atan`."""
    probe = torch.linspace(-50.0, 50.0, 101)
    if torch.allclose(glow.f_clamp(probe), 0.636 * torch.atan(probe), rtol=0.0, atol=1e-7):
        return lambda u: 0.636 * elementwise_atan(u)
    return glow.f_clamp


class ExportFlows(nn.Module):
    """The model's flows as scoring needs them: latents up to a permutation of their channels.

    * The anomaly map reads each latent through ``mean_c z²``, which no channel permutation
      changes, so a flow's closing ``PermuteRandom`` (a ``Gather`` and a layout reorder in the
      engines) is left out.
    * A flow that opens with the feature standardisation and a GLOW coupling block gets its two
      halves from two 1×1 convolutions that pick and standardise the channels
      (``x · (1/std) − mean/std``) instead of ``Sub → Div → Split``: OpenVINO runs a channel
      ``Split`` of these sizes as a slow reference kernel, a 1×1 convolution as a fast one.
      Their node names hold :data:`SPLIT_SCOPE`; INT8 exports keep them FP32. The block's two
      subnets then give their ``s`` and ``t`` halves from two convolutions each
      (:class:`_Coefficients`), and the coupling is FrEIA's ``GLOWCouplingBlock`` forward
      written out: ``y1 = exp(c·f(s2(x2))) ⊙ x1 + t2(x2)``, ``y2 = exp(c·f(s1(y1))) ⊙ x2 + t1(y1)``.
    * ``elementwise_clamp=True`` (the OpenVINO export) writes FrEIA's ``atan`` soft clamp ``f``
      in element-wise ops (:func:`elementwise_atan`), which OpenVINO fuses into one kernel with
      the coupling's ``exp``, product and sum; ONNX Runtime runs its own ``Atan`` faster than
      that chain of separate ops (bottle, 2 threads: 7.3 against 8.0 ms), so it keeps ``Atan``.

    The flows are shared with the model (not copied, not changed).
    """

    def __init__(self, flows: nn.ModuleList, *, elementwise_clamp: bool = False) -> None:
        super().__init__()
        import FrEIA.modules as Fm

        from .flow import FeatureStandardizer

        self.flows = flows
        self.steps = []
        self.split = nn.ModuleList()
        self.coefficients = nn.ModuleList()
        self.heads: list[tuple[int, object] | None] = []
        for flow in flows:
            modules = list(flow.module_list)
            if modules and isinstance(modules[-1], Fm.PermuteRandom):
                modules = modules[:-1]
            head = None
            if (
                len(modules) >= 2
                and isinstance(modules[0], FeatureStandardizer)
                and isinstance(modules[1], Fm.GLOWCouplingBlock)
                and not modules[1].conditional
            ):
                standardizer, glow = modules[0], modules[1]
                mean, std = standardizer.mean.float(), standardizer.std.float()
                self.split.append(_selection_conv(mean, std, slice(0, glow.split_len1)))
                self.split.append(_selection_conv(mean, std, slice(glow.split_len1, None)))
                self.coefficients.append(_Coefficients(glow.subnet2, glow.split_len1))
                self.coefficients.append(_Coefficients(glow.subnet1, glow.split_len2))
                f_clamp = _soft_clamp(glow) if elementwise_clamp else glow.f_clamp
                head = (len(self.split) - 2, glow, f_clamp)
                modules = modules[2:]
            self.heads.append(head)
            self.steps.append(modules)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        latents = []
        for head, modules, x in zip(self.heads, self.steps, features, strict=True):
            if head is not None:
                index, glow, f_clamp = head
                x1, x2 = self.split[index](x), self.split[index + 1](x)
                s2, t2 = self.coefficients[index](x2)
                y1 = torch.exp(glow.clamp * f_clamp(s2)) * x1 + t2
                s1, t1 = self.coefficients[index + 1](y1)
                y2 = torch.exp(glow.clamp * f_clamp(s1)) * x2 + t1
                out = (torch.cat((y1, y2), 1),)
            else:
                out = (x,)
            for module in modules:
                out, _ = module(out, jac=False)
            latents.append(out[0])
        return latents


# --------------------------------------------------------------------------- ONNX file

_FOLD_MAX_ELEMENTS = 1 << 12  # constant folding only replaces small (shape-sized) results


def _evaluate_node(node, values: dict) -> list | None:
    """Outputs of one ONNX node whose inputs are all known, by onnx's reference evaluator."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [n for n in node.input if n]
    inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype), None)
        for n in names
    ]
    outputs = [helper.make_tensor_value_info(n, 0, None) for n in node.output]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    try:
        return ReferenceEvaluator(helper.make_model(graph)).run(None, {n: values[n] for n in names})
    except Exception:  # an op the reference evaluator does not run: leave it to the engine
        return None


def fold_constants(model) -> int:
    """Evaluates ONNX nodes whose inputs are all constants into ``Constant`` nodes, in place.

    The TorchScript exporter keeps shape arithmetic (``Concat → Reshape → Slice → Cast`` for a
    ``Pad``'s pads, and so on) even where every input is a constant; folded, a ``Pad``'s pads
    become the constant :func:`fold_pads_into_convs` needs. Only results of at most
    ``_FOLD_MAX_ELEMENTS`` values replace their node (never a weight-sized tensor). Nodes left
    without readers are removed.

    Returns:
        How many nodes were folded.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = []
    folded = 0
    for node in graph.node:
        if node.op_type == "Constant":
            attribute = node.attribute[0] if len(node.attribute) == 1 else None
            if attribute is not None and attribute.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attribute.t)
            nodes.append(node)
            continue
        has_subgraph = any(a.type in (5, 10) for a in node.attribute)  # GRAPH, GRAPHS
        if has_subgraph or not all(n in values for n in node.input if n):
            nodes.append(node)
            continue
        results = _evaluate_node(node, values)
        if results is None or any(
            getattr(r, "size", _FOLD_MAX_ELEMENTS + 1) > _FOLD_MAX_ELEMENTS for r in results
        ):
            nodes.append(node)
            continue
        for name, result in zip(node.output, results, strict=True):
            values[name] = result
            nodes.append(
                helper.make_node(
                    "Constant", [], [name], name=f"{name}/folded", value=numpy_helper.from_array(result, name)
                )
            )
        folded += 1
    del graph.node[:]
    graph.node.extend(_live_nodes(nodes, {o.name for o in graph.output}))
    _drop_unread_initializers(graph)
    return folded


def _drop_unread_initializers(graph) -> None:
    read = {name for node in graph.node for name in node.input}
    read.update(o.name for o in graph.output)
    unread = [init for init in graph.initializer if init.name not in read]
    for init in unread:
        graph.initializer.remove(init)


def _live_nodes(nodes: list, outputs: set[str]) -> list:
    """``nodes`` less those whose outputs nothing reads (in order)."""
    needed = set(outputs)
    live = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(n for n in node.input if n)
    return live[::-1]


def optimize_onnx_file(path) -> tuple[int, int]:
    """Rewrites an exported ONNX file in place: constants folded, zero ``Pad`` ops moved into ``Conv``.

    Returns:
        (nodes folded to constants, ``Pad`` ops folded into convolutions).
    """
    import onnx

    model = onnx.load(str(path))
    constants = fold_constants(model)
    pads = fold_pads_into_convs(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    logger.debug("folded %d constant nodes and %d Pad ops", constants, pads)
    return constants, pads
