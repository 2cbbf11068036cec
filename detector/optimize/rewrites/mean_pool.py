"""The mean of a 4-D map over its height and width as a GlobalAveragePool, for the int8 variant.

PP-OCRv6's squeeze-excitation blocks pool their map with ``ReduceMean(axes=[2, 3], keepdims=1)``, the same
mean as GlobalAveragePool. onnxruntime has a uint8 kernel for the pool (QLinearGlobalAveragePool) but none
for ReduceMean: in a QDQ model the map would go back to float for it. The same sum divided by the same
count; the summation order may differ, within a few ulp. Not one of the fp32 speed rewrites: in float both
run about as fast (PP-OCRv6_small_det, session.run, within the noise).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Optional

from .onnx_graph import Graph, Subgraph, attribute

MEAN_POOL_REWRITE = "spatial_mean_as_global_pool"
SPATIAL_AXES = ({2, 3}, {-2, -1})


def ranks(model: Any) -> dict[str, int]:
    """The rank of every tensor whose type shape inference (or the file) recorded."""
    found = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            found[info.name] = len(tensor.shape.dim)
    return found


def reduced_axes(graph: Graph, node: Any) -> Optional[set[int]]:
    """The axes a ReduceMean averages over (attribute, or constant input from opset 18), None if unknown."""
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        constant = graph.constant(node.input[1])
        axes = None if constant is None else constant.ravel().tolist()
    return None if axes is None else {int(axis) for axis in axes}


def rewrite_spatial_means(model: Any, skip: Collection[str] = ()) -> int:
    """Rewrite every ReduceMean over the height and width of a 4-D map that keeps its dimensions as a
    GlobalAveragePool (in place), but those named in skip; returns how many. A map whose rank shape
    inference did not record is left alone."""
    graph = Graph(model)
    rank = ranks(model)
    count = 0
    for node in list(graph.graph.node):
        if node.op_type != "ReduceMean" or (node.name and node.name in skip):
            continue
        if int(attribute(node, "keepdims", 1)) != 1 or rank.get(node.input[0]) != 4:
            continue
        if reduced_axes(graph, node) not in SPATIAL_AXES:
            continue
        new = Subgraph(graph, MEAN_POOL_REWRITE)
        new.node("GlobalAveragePool", [node.input[0]], "pool", output=node.output[0])
        new.replace([node])
        count += 1
    return count
