"""Hidden channels that cannot change a result, taken out of the two convolutions around them.

Take two convolutions of one group, A (weight W1 [H, C, kh, kw], bias b1) and B (weight W2 [O, H, ...],
bias b2), joined by a chain of operators that act on each value alone with scalar constants (GELU's
Div-Erf-Add-Mul-Mul, a Relu, a HardSigmoid, a scalar Mul...), the chain f read by nothing but B. A hidden
channel j of the H:

- adds nothing to B when B's weights for it, W2[:, j], are all zero: it can go;
- is the constant f(b1[j]) at every pixel when A's weights for it, W1[j], are all zero (A's padding adds
  zeros times zero weights). Where B has no padding, each of its outputs then gets that constant times
  the sum of B's taps for j, which B's bias can hold instead: the channel can go too.

Channels go only where they free a whole block of onnxruntime's widest channel block (16), and a width
that was a whole number of blocks stays one (some dead channels are kept), or the blocked kernels would
leave the second convolution unblocked. Fewer channels within the same blocks save nothing: the kernels
compute whole blocks (PP-OCRv6_tiny_det's one dead channel of 8 in a squeeze-excitation gate stays, so its
int8 variant, whose calibration moved with it, stays as it was).

PaddlePaddle's PP-OCRv6_small_det has 199 and 491 of 768 such channels (weights exactly zero) in the two
channel mixers of its last stage (4 % of the network's multiply-adds): 576 and 288 stay, the four
convolutions at 672×960 take 0.61, 0.61, 0.31, 0.31 ms instead of 0.80 each (profiler). Only the order of
the float sums changes (the constants join the bias): the export's check against the source moved from
3.5e-6 to 4.1e-6.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ...cpu_features import CHANNEL_BLOCKS
from .channel_padding import block_size, constant_weight
from .onnx_graph import Graph, Subgraph, unpadded

DEAD_CHANNEL_REWRITE = "dead_hidden_channels_removed"
# 569 of 768 hidden channels instead of 576 made PP-OCRv6_small_det no faster (0.996x session.run).
KEPT_MULTIPLE = max(CHANNEL_BLOCKS)
# Operators that compute each output value from the value at the same place alone (with scalar operands).
VALUEWISE_OP_TYPES = frozenset(
    {"Relu", "Sigmoid", "Tanh", "Erf", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Softplus", "Clip"}
    | {"Add", "Sub", "Mul", "Div", "Pow"}
)


def plain_weights(graph: Graph, node: Any) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of a one-group Conv with a constant float32 weight and bias (zeros if it has none)."""
    weight = constant_weight(graph, node)
    if weight is None:
        return None
    bias = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(len(weight))
    if bias is None or bias.size != len(weight):
        return None
    return weight, bias.reshape(-1).astype(np.float32)


def valuewise_chain(graph: Graph, hidden: str) -> Optional[tuple[list, Any]]:
    """The valuewise nodes between A's output hidden and the one convolution that reads their result
    (graph order), and that convolution; None unless every path from hidden leads there through such
    nodes alone, with scalar constants as their only other operands."""
    chain: dict[int, Any] = {}
    tensors, frontier = {hidden}, [hidden]
    reader_conv, exit_name = None, None
    while frontier:
        name = frontier.pop()
        readers = graph.consumers.get(name, [])
        if name in graph.outputs or not readers:
            return None
        for reader in readers:
            if reader.op_type == "Conv":
                if reader_conv is not None or reader.input[0] != name or len(readers) != 1:
                    return None
                reader_conv, exit_name = reader, name
            elif reader.op_type in VALUEWISE_OP_TYPES and len(reader.output) == 1:
                if id(reader) not in chain:
                    chain[id(reader)] = reader
                    tensors.add(reader.output[0])
                    frontier.append(reader.output[0])
            else:
                return None
    if reader_conv is None or exit_name in reader_conv.input[1:]:
        return None
    for node in chain.values():
        for name in node.input:
            if name and name not in tensors:
                value = graph.constant(name)
                if value is None or value.size != 1:
                    return None
    order = {id(node): index for index, node in enumerate(graph.graph.node)}
    return sorted(chain.values(), key=lambda node: order[id(node)]), reader_conv


def chain_values(graph: Graph, chain: list, hidden: str, exit_name: str, values: np.ndarray, opset: int) -> np.ndarray:
    """f(values): the chain evaluated (onnx's reference evaluator) on a [1, H, 1, 1] tensor of values."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    made = {node.output[0] for node in chain}
    operands = dict.fromkeys(name for node in chain for name in node.input if name and name not in made | {hidden})
    body = helper.make_graph(
        list(chain),
        "chain",
        [helper.make_tensor_value_info(hidden, TensorProto.FLOAT, [1, len(values), 1, 1])],
        [helper.make_tensor_value_info(exit_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(graph.constant(name)), name) for name in operands],
    )
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", opset)])
    feed = values.astype(np.float32).reshape(1, -1, 1, 1)
    (result,) = ReferenceEvaluator(model).run(None, {hidden: feed})
    return np.asarray(result, np.float32).reshape(-1)


def remove_dead_channels(graph: Graph, opset: int) -> int:
    """Take the hidden channels that cannot change B's output out of every convolution pair that has
    them (see the module doc); returns how many pairs changed."""
    changed = 0
    for conv in list(graph.graph.node):
        first = plain_weights(graph, conv)
        found = valuewise_chain(graph, conv.output[0]) if first is not None else None
        second = plain_weights(graph, found[1]) if found is not None else None
        if first is None or found is None or second is None:
            continue
        (w1, b1), (chain, reader), (w2, b2) = first, found, second
        if w2.shape[1] != len(w1):
            continue
        taps = w2.reshape(len(w2), len(w1), -1)  # [out, hidden, taps]
        unused = np.all(taps == 0, axis=(0, 2))
        constant = np.all(w1.reshape(len(w1), -1) == 0, axis=1) & ~unused
        if not unpadded(reader):
            constant[:] = False
        keep = ~(unused | constant)
        if len(w1) % KEPT_MULTIPLE == 0:  # keep a whole number of blocks: some dead channels stay
            kept = int(keep.sum())
            spare = block_size(kept, KEPT_MULTIPLE) - kept
            for index in [*np.flatnonzero(unused), *np.flatnonzero(constant)][:spare]:
                keep[index], constant[index] = True, False
        kept = int(keep.sum())
        if not kept or block_size(kept, KEPT_MULTIPLE) == block_size(len(w1), KEPT_MULTIPLE):
            continue
        exit_name = reader.input[0]
        bias = b2.astype(np.float64)
        if constant.any():
            levels = chain_values(graph, chain, conv.output[0], exit_name, b1, opset)
            summed = taps.sum(axis=2).astype(np.float64)
            bias = bias + summed[:, constant] @ levels[constant].astype(np.float64)
        sub = Subgraph(graph, DEAD_CHANNEL_REWRITE)
        conv.input[1] = sub.const("weight", w1[keep])
        if len(conv.input) > 2 and conv.input[2]:
            conv.input[2] = sub.const("bias", b1[keep])
        reader.input[1] = sub.const("weight", w2[:, keep])
        if len(reader.input) > 2:
            reader.input[2] = sub.const("bias", bias)
        else:
            reader.input.append(sub.const("bias", bias))
        graph.graph.initializer.extend(sub.initializers)
        # the shapes recorded for the narrowed maps are wrong now: leave them to onnxruntime's inference
        narrowed = {conv.output[0], *(node.output[0] for node in chain)}
        for info in [info for info in graph.graph.value_info if info.name in narrowed]:
            graph.graph.value_info.remove(info)
        graph.refresh()
        changed += 1
    return changed
