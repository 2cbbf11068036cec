"""The few ONNX protobuf messages the CPU session's layout pass edits (blocked_layout.py), without the onnx package.

Opening a session must stay light: importing onnx takes 0.5 s (its ml_dtypes extension, onnx 1.23), more
than opening a model. The messages are declared here, field numbers as in onnx.proto (proto2), for
google.protobuf, which onnxruntime itself depends on. Only the fields the pass reads or writes are declared;
protobuf keeps every other field of a parsed message as it was and writes it back unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np

# onnx.proto's numbers: TensorProto.DataType, AttributeProto.AttributeType
FLOAT, INT64 = 1, 7
ATTRIBUTE_FLOAT, ATTRIBUTE_INT, ATTRIBUTE_STRING, ATTRIBUTE_FLOATS, ATTRIBUTE_INTS = 1, 2, 3, 6, 7
_NUMPY_TYPES = {FLOAT: np.float32, INT64: np.int64}

# message -> (number, field, type); "*" repeated, "+" repeated and packed (as onnx.proto declares them)
_SCHEMA: dict[str, tuple[tuple[int, str, str], ...]] = {
    "ModelProto": ((7, "graph", "GraphProto"),),
    "GraphProto": (
        (1, "node", "NodeProto*"),
        (5, "initializer", "TensorProto*"),
        (11, "input", "ValueInfoProto*"),
        (12, "output", "ValueInfoProto*"),
        (13, "value_info", "ValueInfoProto*"),
    ),
    "NodeProto": (
        (1, "input", "string*"),
        (2, "output", "string*"),
        (3, "name", "string"),
        (4, "op_type", "string"),
        (5, "attribute", "AttributeProto*"),
        (7, "domain", "string"),
    ),
    "AttributeProto": (
        (1, "name", "string"),
        (2, "f", "float"),
        (3, "i", "int64"),
        (4, "s", "bytes"),
        (7, "floats", "float*"),
        (8, "ints", "int64*"),
        (20, "type", "int32"),
    ),
    "TensorProto": (
        (1, "dims", "int64*"),
        (2, "data_type", "int32"),
        (4, "float_data", "float+"),
        (7, "int64_data", "int64+"),
        (8, "name", "string"),
        (9, "raw_data", "bytes"),
    ),
    "ValueInfoProto": ((1, "name", "string"), (2, "type", "TypeProto")),
    "TypeProto": ((1, "tensor_type", "TypeProtoTensor"),),
    "TypeProtoTensor": ((1, "elem_type", "int32"), (2, "shape", "TensorShapeProto")),
    "TensorShapeProto": ((1, "dim", "TensorShapeProtoDimension*"),),
    "TensorShapeProtoDimension": ((1, "dim_value", "int64"), (2, "dim_param", "string")),
    # ModelProto's metadata alone: parsing it leaves the graph unparsed, as bytes
    "ModelMetadataProto": ((14, "metadata_props", "StringStringEntryProto*"),),
    "StringStringEntryProto": ((1, "key", "string"), (2, "value", "string")),
}
_PACKAGE = "detector_onnx_messages"


@functools.cache
def message_classes() -> dict[str, Any]:
    """The message classes by name, declared once in a descriptor pool of their own."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    scalar = descriptor_pb2.FieldDescriptorProto
    types = {
        "string": scalar.TYPE_STRING,
        "bytes": scalar.TYPE_BYTES,
        "float": scalar.TYPE_FLOAT,
        "int64": scalar.TYPE_INT64,
        "int32": scalar.TYPE_INT32,
    }
    file = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
    for message_name, fields in _SCHEMA.items():
        message = file.message_type.add(name=message_name)
        for number, field_name, kind in fields:
            base = kind.rstrip("*+")
            field = message.field.add(name=field_name, number=number)
            field.label = scalar.LABEL_REPEATED if kind[-1] in "*+" else scalar.LABEL_OPTIONAL
            if base in types:
                field.type = types[base]
            else:
                field.type = scalar.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{base}"
            if kind.endswith("+"):
                field.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: _message_class(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _SCHEMA}


def _message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory

    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory().GetPrototype(descriptor)  # older protobuf


def parse_model(data: bytes) -> Any:
    model = message_classes()["ModelProto"]()
    model.ParseFromString(data)
    return model


def model_metadata(data: bytes) -> dict[str, str]:
    """A serialized model's metadata_props, without parsing its graph."""
    model = message_classes()["ModelMetadataProto"]()
    model.ParseFromString(data)
    return {entry.key: entry.value for entry in model.metadata_props}


def make_node(
    op_type: str, inputs: list[str], outputs: list[str], name: str, domain: str = "", **attributes: Any
) -> Any:
    """A NodeProto; attributes given as int, str, or a list of ints."""
    node = message_classes()["NodeProto"](op_type=op_type, input=inputs, output=outputs, name=name, domain=domain)
    for key, value in attributes.items():
        attribute = node.attribute.add(name=key)
        if isinstance(value, str):
            attribute.type, attribute.s = ATTRIBUTE_STRING, value.encode()
        elif isinstance(value, (list, tuple)):
            attribute.type = ATTRIBUTE_INTS
            attribute.ints.extend(int(item) for item in value)
        else:
            attribute.type, attribute.i = ATTRIBUTE_INT, int(value)
    return node


def attribute(node: Any, name: str, default: Any = None) -> Any:
    """A node attribute's value (int, float, str, list of ints or floats), or default where it has none."""
    for found in node.attribute:
        if found.name == name:
            kind = found.type
            if kind == ATTRIBUTE_INT:
                return found.i
            if kind == ATTRIBUTE_INTS:
                return list(found.ints)
            if kind == ATTRIBUTE_STRING:
                return found.s.decode()
            if kind == ATTRIBUTE_FLOAT:
                return found.f
            if kind == ATTRIBUTE_FLOATS:
                return list(found.floats)
            return None  # a kind the pass never reads: treated as unknown
    return default


def int64_tensor(name: str, values: list[int]) -> Any:
    array = np.asarray(values, dtype="<i8")
    return message_classes()["TensorProto"](
        name=name, dims=list(array.shape), data_type=INT64, raw_data=array.tobytes()
    )


def tensor_values(tensor: Any) -> Optional[np.ndarray]:
    """A float32 or int64 initializer's values (raw or typed data); None for other types."""
    dtype = _NUMPY_TYPES.get(tensor.data_type)
    if dtype is None:
        return None
    shape = tuple(tensor.dims)
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    typed = tensor.float_data if tensor.data_type == FLOAT else tensor.int64_data
    return np.asarray(list(typed), dtype=dtype).reshape(shape)


def remove_dead_code(model: Any) -> int:
    """Drop nodes and initializers nothing reads, in place (a ModelProto of the onnx package or of this module):
    paddle2onnx leaves dead Constant nodes behind, and onnxruntime prints a warning for each one every time
    the model is loaded; the CPU layout pass leaves plain copies no one reads. Returns how many went."""
    graph, removed = model.graph, 0
    while True:
        read = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
        dead_nodes = [node for node in graph.node if not any(name in read for name in node.output)]
        dead_inits = [init for init in graph.initializer if init.name not in read]
        if not dead_nodes and not dead_inits:
            return removed
        for node in dead_nodes:
            graph.node.remove(node)
        for init in dead_inits:
            graph.initializer.remove(init)
        removed += len(dead_nodes) + len(dead_inits)
