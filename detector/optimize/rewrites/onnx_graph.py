"""An ONNX graph as the speed rewrites (this package) see it: lookups, matching helpers, each map's scale
against the network input (downsampling), and a builder that splices a new subgraph in place of the nodes
it replaces."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike, DTypeLike


class Graph:
    """Lookups over an ONNX graph: producers, consumers, constant values; names for new tensors.

    Expects bypass_identities to have run: an Identity node is taken as just another operator."""

    def __init__(self, model: Any) -> None:
        self.graph = model.graph
        self.refresh()
        self._counter = 0

    def refresh(self) -> None:
        self.producer = {name: node for node in self.graph.node for name in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.outputs = {output.name for output in self.graph.output}

    def fresh(self, prefix: str, stem: str) -> str:
        """A tensor/node name no other in the graph has: prefix/stem_N."""
        self._counter += 1
        return f"{prefix}/{stem}_{self._counter}"

    def constant(self, name: str) -> Optional[np.ndarray]:
        """The value of a tensor that does not depend on the input, or None."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            value = attribute(node, "value")
            return None if value is None else numpy_helper.to_array(value)
        if node.op_type == "Reshape":
            data, shape = self.constant(node.input[0]), self.constant(node.input[1])
            return None if data is None or shape is None else data.reshape(shape)
        return None

    def source(self, name: str, op_type: str) -> Optional[Any]:
        """The node of op_type that makes name; None if another op (or nothing) does."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str) -> Optional[Any]:
        """The single node reading name, if it is op_type and name is not a graph output."""
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or name in self.outputs or readers[0].op_type != op_type:
            return None
        return readers[0]


def default_opset(model: Any) -> int:
    """The model's version of the default (ai.onnx) operator set, 0 if it imports none."""
    return max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), default=0)


def rewritable_nodes(model: Any, min_opset: int, skip: Collection[str]) -> Iterator[tuple[Graph, Any]]:
    """(graph, node) for every node of model not named in skip, over the nodes as they were at the start (a
    rewrite splices its nodes in as it goes); none at all for a model of an opset before min_opset."""
    if default_opset(model) < min_opset:
        return
    graph = Graph(model)
    for node in list(graph.graph.node):
        if node.name not in skip:
            yield graph, node


def unpadded(node: Any) -> bool:
    """Whether a convolution adds no padding (auto_pad NOTSET or VALID, pads all zero)."""
    padding = as_text(attribute(node, "auto_pad", "NOTSET"))
    return padding in ("NOTSET", "VALID") and not any(attribute(node, "pads", [0, 0, 0, 0]))


def scale_initializer(graph: Graph, name: str, factor: float) -> None:
    """Multiply the initializer name by factor, in place (as float32)."""
    from onnx import numpy_helper

    tensor = graph.initializers[name]
    scaled = numpy_helper.to_array(tensor).astype(np.float32) * np.float32(factor)
    tensor.CopyFrom(numpy_helper.from_array(scaled, tensor.name))


def attribute(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def is_plain_conv(node: Any, kernel: int, pad: int, stride: int = 1) -> bool:
    return (
        list(attribute(node, "kernel_shape", [])) == [kernel, kernel]
        and list(attribute(node, "strides", [1, 1])) == [stride, stride]
        and list(attribute(node, "pads", [0, 0, 0, 0])) == [pad] * 4
        and list(attribute(node, "dilations", [1, 1])) == [1, 1]
        and attribute(node, "group", 1) == 1
        and as_text(attribute(node, "auto_pad", b"NOTSET")) == "NOTSET"
    )


def channel_bias(graph: Graph, node: Any, channels: int) -> Optional[tuple[np.ndarray, str]]:
    """The per-channel constant an Add (or Mul) node applies, of shape (C,), (1, C, 1, 1) or (C, 1, 1),
    and the name of the tensor it applies it to; None if neither operand is such a constant."""
    for index in (0, 1):
        value = graph.constant(node.input[index])
        if value is not None and value.size == channels and (value.ndim <= 1 or value.shape[-2:] == (1, 1)):
            return value.reshape(channels).astype(np.float64), node.input[1 - index]
    return None


def batch_norm_affine(graph: Graph, node: Any, channels: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The per-channel (scale, shift), float64, of an inference BatchNormalization with constant parameters
    over channels channels (y = scale · x + shift); None for any other node."""
    if (
        node.op_type != "BatchNormalization"
        or len(node.input) != 5
        or len([name for name in node.output if name]) != 1
        or attribute(node, "training_mode", 0)
    ):
        return None
    values = [graph.constant(name) for name in node.input[1:]]
    known = [value.reshape(-1).astype(np.float64) for value in values if value is not None]
    if len(known) != 4 or any(value.size != channels for value in known):
        return None
    gamma, beta, mean, variance = known
    scale = gamma / np.sqrt(variance + attribute(node, "epsilon", 1e-5))
    return scale, beta - mean * scale


def self_contained(graph: Graph, nodes: list, exit_name: str, shape_readers: list) -> bool:
    """Whether nothing outside nodes reads what they make, but for exit_name and the given Shape readers."""
    inside = {id(node) for node in nodes} | {id(node) for node in shape_readers}
    for node in nodes:
        for name in node.output:
            if name == exit_name:
                continue
            if name in graph.outputs or any(id(reader) not in inside for reader in graph.consumers.get(name, [])):
                return False
    return True


def bypass_identities(model: Any) -> int:
    """Remove Identity nodes (paddle2onnx writes hundreds) by wiring their readers to their input.

    Identities that produce a graph output stay, so the model's output names do not change.
    """
    outputs = {output.name for output in model.graph.output}
    removable = [node for node in model.graph.node if node.op_type == "Identity" and node.output[0] not in outputs]
    alias = {node.output[0]: node.input[0] for node in removable}

    def original(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for node in removable:
        model.graph.node.remove(node)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in alias:
                node.input[index] = original(name)
    return len(removable)


class Subgraph:
    """Nodes and initializers a rewrite builds, named prefix/stem_N, spliced in where it replaces nodes."""

    def __init__(self, graph: Graph, prefix: str) -> None:
        self.graph, self.prefix = graph, prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, stem: str, value: ArrayLike, dtype: DTypeLike = np.float32) -> str:
        from onnx import numpy_helper

        name = self.graph.fresh(self.prefix, stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def ints(self, stem: str, values: ArrayLike) -> str:
        return self.const(stem, values, np.int64)

    def node(self, op: str, inputs: list[str], stem: str, output: Optional[str] = None, **attrs: Any) -> str:
        """Add a node; its single output is a fresh name unless output names an existing tensor."""
        from onnx import helper

        name = self.graph.fresh(self.prefix, stem)
        out = output or name
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def node_like(self, template: Any, inputs: list[str], stem: str, output: str) -> str:
        """Add a node of template's op type and attributes on other inputs, making output."""
        from onnx import helper

        node = helper.make_node(template.op_type, inputs, [output], name=self.graph.fresh(self.prefix, stem))
        node.attribute.extend(template.attribute)
        self.nodes.append(node)
        return output

    def replace(self, replaced: list, at: Optional[Any] = None) -> None:
        """Put the built nodes where at stood (default: the first of replaced; the graph stays
        topologically sorted, as the new nodes read only what the replaced ones read, given that all of it
        exists before at), then drop replaced."""
        nodes = self.graph.graph.node
        order = list(nodes)
        position = order.index(at) if at is not None else min(order.index(node) for node in replaced)
        for offset, new in enumerate(self.nodes):
            nodes.insert(position + offset, new)
        for old in replaced:
            nodes.remove(old)
        self.graph.graph.initializer.extend(self.initializers)
        self.graph.refresh()


# Ops that keep their spatial inputs' size: what downsampling() follows besides pools, convolutions and resizes.
SIZE_KEEPING_OPS = frozenset(
    {
        "Add",
        "BatchNormalization",
        "Clip",
        "Concat",
        "Div",
        "Erf",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "LeakyRelu",
        "Mul",
        "Relu",
        "Sigmoid",
        "Sub",
        "Tanh",
    }
)
GLOBAL = 0.0  # a 1×1 summary of a map (global pooling): broadcasts against any size


def spatial_strides(node: Any) -> Optional[int]:
    """A convolution's or pool's stride, where it is the same along both sides (None otherwise)."""
    strides = attribute(node, "strides") or [1, 1]
    return int(strides[0]) if len(strides) == 2 and strides[0] == strides[1] else None


def resize_factor(graph: Graph, node: Any) -> Optional[float]:
    """How many times a Resize/Upsample enlarges each side, from its constant scales (None otherwise)."""
    names = [name for name in node.input[1:] if name]
    scales = None
    for name in names:
        value = graph.constant(name)
        if value is not None and value.dtype == np.float32 and value.size == 4:
            scales = value.reshape(4)
    if scales is None or scales[2] != scales[3] or scales[2] <= 0:
        return None
    return float(scales[2])


def downsampling(graph: Graph) -> dict[str, float]:
    """How many times smaller per side than the network input each map is, by name: strides multiply,
    transposed convolutions and resizes divide, global pools give GLOBAL. Maps whose size this cannot
    tell (reshapes, shape arithmetic, anything else) are left out."""
    factors = {put.name: 1.0 for put in graph.graph.input if put.name not in graph.initializers}
    for node in graph.graph.node:  # topological order
        known = [factors[name] for name in node.input if name in factors]
        if not known:
            continue
        factor: Optional[float] = None
        op = node.op_type
        if node.input[0] not in factors:
            pass
        elif op in ("Conv", "MaxPool", "AveragePool", "ConvTranspose"):
            stride = spatial_strides(node)
            if stride is not None:
                source = factors[node.input[0]]
                factor = source / stride if op == "ConvTranspose" else source * stride
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            factor = GLOBAL
        elif op in ("Resize", "Upsample"):
            enlarged = resize_factor(graph, node)
            factor = None if enlarged is None else factors[node.input[0]] / enlarged
        elif op in SIZE_KEEPING_OPS:
            sizes = {value for value in known if value != GLOBAL}
            factor = sizes.pop() if len(sizes) == 1 else (GLOBAL if not sizes else None)
        if factor is not None:
            factors.update((name, factor) for name in node.output)
    return factors
