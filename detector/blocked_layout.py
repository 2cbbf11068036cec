"""Session stage on the CPU: more of onnxruntime's optimized graph kept in its blocked channel layout.

onnxruntime's NchwcTransformer (graph optimization level ALL) runs convolutions, pools, sums of equal
shapes and activations in a blocked layout, NCHWc: the channels in blocks of 16 (AVX-512) or 8 (AVX2),
the block innermost. Every operator it has no blocked form for runs in plain NCHW behind a ReorderOutput
and before a ReorderInput, two more passes over the map. In the PP-OCR networks those are the
squeeze-excitation products ``x · g`` (g of shape N×C×1×1: its blocked Mul takes equal shapes only), and
then what reads them: the residual sums, the neck's nearest-neighbour Resize and Concat.
PP-OCRv6_small_det spent 6.1 ms of 76 at 672×960 in reorders and 3.8 more in those operators
(onnxruntime's profile, 2026-12-03).

open_cpu_session lets onnxruntime optimize the model as always and save the optimized graph, moves those
operators into the blocked layout with onnxruntime's own blocked kernels (keep_maps_blocked), and opens the
result with graph optimizations off (it is optimized already). Every value stays as onnxruntime computes it
in the plain graph, bit for bit:

- ``x · g`` -> a blocked 1×1 depthwise Conv whose weight is g. For a 1×1 map the blocked and plain layouts
  are the same memory, so g reshaped to C×1×1×1 is the blocked weight: the same products. The weight is
  one image's gate, so that graph takes one image per run (session_run.run_session splits batches);
- ``a + b`` of two blocked maps, Concat on the channels of blocked maps of whole blocks: the same operators
  on the blocked buffers (elementwise on equal shapes; whole blocks moved);
- Resize, nearest (asymmetric, floor) by whole scales -> the blocked Upsample (copies).

Pools stay plain: onnxruntime's blocked GlobalAveragePool sums a map in another order than its ReduceMean,
and on a 672×960 input PP-OCRv6_small_det's map moved by up to 1.2e-3 with it.

An NCHW reader left keeps a ReorderOutput; a ReorderInput of a map now blocked goes. Only maps whose channel
count is a whole number of blocks move (the padded channels of another map hold whatever its convolution
wrote). The graph is checked against the plain session on a probe image as it opens: any difference at all,
or anything unexpected (an onnxruntime whose blocked operators differ, a graph it refuses), leaves the plain
session in use.
The graph is edited as protobuf messages (onnx_messages.py), without the onnx package.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .onnx_messages import attribute as _attribute
from .onnx_messages import int64_tensor, make_node, parse_model, remove_dead_code, tensor_values

logger = logging.getLogger(__name__)

BLOCKED_DOMAIN = "com.microsoft.nchwc"
# Larger model files open as they are. onnxruntime's optimized graph of the rebuilt PP-OCRv4_server_det (a
# 114 MB file) is 291 MB (its reordered weights and folded transforms): saving, parsing, writing and opening
# it again took its session from 0.8-1.3 s to 4.5-5.8 s to open, for 7 operators moved and no measurable gain
# (session.run 0.90-1.03x at 640x960, 320x480, 64x960: the noise). The PP-OCR mobile / small / tiny files are
# 2-20 MB.
MAX_MODEL_BYTES = 32 * 2**20
# The probe image's height and width: no map of a stride-32 network is 1×1 at this size.
PROBE_SIZE = (96, 128)
# Operators that act on each value alone: a 1×1 map stays 1×1 through them.
VALUEWISE = frozenset({"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Tanh", "LeakyRelu", "Identity"})
SCALAR_ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div"})


def open_cpu_session(
    model_path: Path,
    make_options: Callable[[], Any],
    block: int,
    open_session: Callable[[Any, Any], Any],
) -> tuple[Any, int]:
    """The session to run on the CPU and how many operators moved into the blocked layout (0: the plain one).

    make_options() makes fresh onnxruntime session options; open_session(model path or bytes, options) opens
    a session on the CPU provider (raising the caller's error for a file onnxruntime cannot load).
    """
    if _file_bytes(model_path) > MAX_MODEL_BYTES:
        return open_session(str(model_path), make_options()), 0
    try:
        with tempfile.TemporaryDirectory(prefix="detector-blocked-") as folder:
            options = make_options()
            optimized_path = Path(folder) / "optimized.onnx"
            options.optimized_model_filepath = str(optimized_path)
            plain = open_session(str(model_path), options)
            model = parse_model(optimized_path.read_bytes())
    except Exception as exc:  # no temporary folder, nothing saved, no protobuf: open it as always
        logger.debug("blocked layout: no optimized graph to edit (%s)", exc)
        return open_session(str(model_path), make_options()), 0
    try:
        moved = keep_maps_blocked(model, block)
        if not moved:
            logger.debug("blocked layout: nothing to move (no blocked operator onnxruntime left plain)")
            return plain, 0
        options = make_options()
        options.graph_optimization_level = _disable_all()
        blocked = open_session(model.SerializeToString(), options)
        difference = probe_difference(plain, blocked)
    except Exception as exc:  # an onnxruntime whose blocked operators differ: run as optimized
        logger.debug("blocked layout: not used (%s)", exc)
        return plain, 0
    if difference != 0.0:  # None: no float NCHW input to probe with
        logger.debug("blocked layout: not used (probe difference %s)", difference)
        return plain, 0
    return blocked, moved


def _file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # opening it will say what is wrong
        return 0


def probe_difference(plain: Any, blocked: Any) -> Optional[float]:
    """Largest difference between the two sessions' outputs on a seeded probe image (None: no float NCHW input)."""
    (model_input,) = plain.get_inputs()
    if model_input.type != "tensor(float)" or len(model_input.shape) != 4 or not isinstance(model_input.shape[1], int):
        return None
    from .session import fixed_input_size  # session imports this module: here, not at its top

    batch, channels = model_input.shape[:2]
    # a file of one fixed size refuses any other: the probe is of its size (it was always PROBE_SIZE, refused, so
    # such files never ran blocked)
    images = batch if isinstance(batch, int) and batch > 0 else 1
    shape = (images, channels, *(fixed_input_size(plain) or PROBE_SIZE))
    probe = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = plain.run(None, {model_input.name: probe})
    actual = blocked.run(None, {model_input.name: probe})
    return max(float(np.max(np.abs(a - b))) for a, b in zip(expected, actual))


def keep_maps_blocked(model: Any, block: int) -> int:
    """Move the operators listed above into the blocked layout of onnxruntime's optimized ``model`` (in place);
    returns how many moved. ``block``: the channel block of onnxruntime's blocked kernels on this CPU."""
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    constants = {tensor.name: tensor for tensor in graph.initializer}
    # a plain tensor -> (its blocked twin, channel count): ReorderOutput's input, or what we compute
    twins: dict[str, tuple[str, int]] = {}
    for node in graph.node:
        if node.op_type == "ReorderOutput" and node.domain == BLOCKED_DOMAIN and not _attribute(node, "channels_last"):
            twins[node.output[0]] = (node.input[0], int(_attribute(node, "channels")))
    names = _fresh_names({name for node in graph.node for name in (*node.input, *node.output, node.name)})
    new_constants: list[Any] = []
    moved, per_image = 0, False
    nodes: list[Any] = []
    for node in graph.node:
        replacement = _blocked_form(node, twins, producer, constants, block, names, new_constants)
        if replacement is None:
            nodes.append(node)
            continue
        steps, twin = replacement
        moved += 1
        per_image = per_image or node.op_type == "Mul"
        twins[node.output[0]] = twin
        nodes.extend(steps)
        # the plain tensor, for readers that stay plain (dropped below if none does)
        nodes.append(_reorder_output(twin, node.output[0], names))
    if not moved:
        return 0
    renamed = {}
    kept = []
    for node in nodes:
        blocked_input = twins.get(node.input[0]) if node.input else None
        if (
            node.op_type == "ReorderInput"
            and node.domain == BLOCKED_DOMAIN
            and not _attribute(node, "channels_last")
            and blocked_input is not None
            and blocked_input[1] % block == 0
        ):
            renamed[node.output[0]] = blocked_input[0]
            continue
        kept.append(node)
    for node in kept:
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_constants)
    remove_dead_code(model)  # the plain copies no reader is left for
    if per_image:  # the products' weights are one image's gates
        image = next(value for value in graph.input if value.name not in constants)
        batch = image.type.tensor_type.shape.dim[0]
        batch.ClearField("dim_param")
        batch.dim_value = 1
    del graph.value_info[:]  # recorded for the graph before: shapes of renamed tensors would mislead
    return moved


def _blocked_form(
    node: Any,
    twins: dict[str, tuple[str, int]],
    producer: dict[str, Any],
    constants: dict[str, Any],
    block: int,
    names: Iterator[str],
    new_constants: list[Any],
) -> Optional[tuple[list[Any], tuple[str, int]]]:
    """The nodes computing ``node``'s output in the blocked layout, and its twin; None where it stays plain."""
    if node.domain not in ("", "ai.onnx"):
        return None
    whole = {name: twins[name] for name in node.input if name in twins and twins[name][1] % block == 0}
    op = node.op_type
    if op == "Mul" and len(node.input) == 2:
        for map_name, gate_name in (node.input, reversed(node.input)):
            if map_name not in whole or _is_pooled(map_name, producer, constants):
                continue
            channels = whole[map_name][1]
            if (
                not _is_pooled(gate_name, producer, constants)
                or _gate_channels(gate_name, producer, constants) != channels
            ):
                continue
            weight, output = next(names), next(names)
            shape = next(names)
            new_constants.append(int64_tensor(shape, [channels, 1, 1, 1]))
            steps = [
                make_node("Reshape", [gate_name, shape], [weight], name=next(names)),
                make_node(
                    "Conv",
                    [whole[map_name][0], weight],
                    [output],
                    name=next(names),
                    domain=BLOCKED_DOMAIN,
                    auto_pad="NOTSET",
                    dilations=[1, 1],
                    strides=[1, 1],
                    pads=[0, 0, 0, 0],
                    kernel_shape=[1, 1],
                    group=channels,
                ),
            ]
            return steps, (output, channels)
        return None
    if op == "Add" and len(node.input) == 2 and all(name in whole for name in node.input):
        (first, channels), (second, other) = whole[node.input[0]], whole[node.input[1]]
        if channels != other or any(_is_pooled(name, producer, constants) for name in node.input):
            return None
        output = next(names)
        return [make_node("Add", [first, second], [output], name=next(names))], (output, channels)
    if op == "Resize" and node.input[0] in whole:
        scales = _whole_scales(node, constants)
        if scales is None:
            return None
        source, channels = whole[node.input[0]]
        output = next(names)
        upsample = make_node(
            "Upsample",
            [source],
            [output],
            name=next(names),
            domain=BLOCKED_DOMAIN,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            scales=scales,
        )
        return [upsample], (output, channels)
    if op == "Concat" and _attribute(node, "axis") == 1 and node.input and all(name in whole for name in node.input):
        output = next(names)
        concat = make_node("Concat", [whole[name][0] for name in node.input], [output], name=next(names), axis=1)
        return [concat], (output, sum(whole[name][1] for name in node.input))
    return None


def _is_pooled(name: str, producer: dict[str, Any], constants: dict[str, Any]) -> bool:
    """Whether the tensor is 1×1 by construction: a global pool, then 1×1 convolutions and valuewise steps."""
    node = producer.get(name)
    for _ in range(64):  # a gate is a short chain
        if node is None:
            return False
        op = node.op_type
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            return True
        if op == "ReduceMean":
            return _means_height_and_width(node, constants)
        if op == "Conv":
            if not _pointwise(node, constants):
                return False
        elif op not in SCALAR_ARITHMETIC and op not in VALUEWISE and op not in ("ReorderInput", "ReorderOutput"):
            return False
        feeding = _chain_input(node, constants)
        if feeding is None:
            return False
        node = producer.get(feeding)
    return False


def _pointwise(conv: Any, constants: dict[str, Any]) -> bool:
    """A 1×1 convolution with stride 1 and no padding (its kernel size from the attribute, else its weight)."""
    weight = constants.get(conv.input[1]) if len(conv.input) > 1 else None
    kernel = _attribute(conv, "kernel_shape", None if weight is None else list(weight.dims[2:]))
    return (
        kernel == [1, 1]
        and _attribute(conv, "strides", [1, 1]) == [1, 1]
        and _attribute(conv, "pads", [0, 0, 0, 0]) == [0, 0, 0, 0]
    )


def _gate_channels(name: str, producer: dict[str, Any], constants: dict[str, Any]) -> Optional[int]:
    """The channel count of a gate: the ReorderOutput it leaves the blocked layout by, before scalar steps."""
    node = producer.get(name)
    while node is not None and node.domain != BLOCKED_DOMAIN:
        if node.op_type not in SCALAR_ARITHMETIC and node.op_type not in VALUEWISE:
            return None
        feeding = _chain_input(node, constants)
        if feeding is None:
            return None
        node = producer.get(feeding)
    if node is None or node.op_type != "ReorderOutput" or _attribute(node, "channels_last"):
        return None
    return int(_attribute(node, "channels"))


def _chain_input(node: Any, constants: dict[str, Any]) -> Optional[str]:
    """The input a step of a gate's chain carries on: scalar arithmetic's non-constant operand, else input 0."""
    if node.op_type in SCALAR_ARITHMETIC:
        return _other_scalar_input(node, constants)
    return node.input[0] if node.input else None


def _other_scalar_input(node: Any, constants: dict[str, Any]) -> Optional[str]:
    """For a binary operator with one single-value constant operand, its other input; else None."""
    if len(node.input) != 2:
        return None
    first, second = node.input
    for constant, other in ((second, first), (first, second)):
        tensor = constants.get(constant)
        if tensor is not None and int(np.prod(tensor.dims)) == 1 and other not in constants:
            return other
    return None


def _means_height_and_width(node: Any, constants: dict[str, Any]) -> bool:
    """A ReduceMean over axes 2 and 3 keeping its dimensions (axes an attribute or, from opset 18, an input)."""
    axes = _attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        values = tensor_values(constants[node.input[1]])
        axes = None if values is None else values.ravel().tolist()
    return axes is not None and sorted(axes) in ([2, 3], [-2, -1]) and _attribute(node, "keepdims", 1) == 1


def _whole_scales(node: Any, constants: dict[str, Any]) -> Optional[list[int]]:
    """Resize's scales as whole numbers where it is the plain nearest-neighbour upsampling the blocked Upsample does."""
    if (
        _attribute(node, "mode") != "nearest"
        or _attribute(node, "coordinate_transformation_mode") != "asymmetric"
        or _attribute(node, "nearest_mode") != "floor"
        or _attribute(node, "antialias", 0)
        or _attribute(node, "axes") is not None
        or len(node.input) not in (3, 4)
        or (len(node.input) == 4 and node.input[3])
        or node.input[2] not in constants
    ):
        return None
    values = tensor_values(constants[node.input[2]])
    if values is None:
        return None
    scales = values.astype(np.float64).ravel()
    if scales.size != 4 or np.any(scales != np.round(scales)) or scales[0] != 1 or scales[1] != 1 or np.any(scales < 1):
        return None
    return [int(scale) for scale in scales]


def _reorder_output(twin: tuple[str, int], output: str, names: Iterator[str]) -> Any:
    source, channels = twin
    return make_node(
        "ReorderOutput", [source], [output], name=next(names), domain=BLOCKED_DOMAIN, channels=channels, channels_last=0
    )


def _fresh_names(taken: set[str]) -> Iterator[str]:
    count = 0
    while True:
        count += 1
        name = f"blocked_layout/{count}"
        if name not in taken:
            yield name


def _disable_all() -> Any:
    import onnxruntime as ort

    return ort.GraphOptimizationLevel.ORT_DISABLE_ALL
