"""Exact graph rewrites that onnxruntime runs faster: one module per rewrite, applied after conversion.

Each rewrite fires only where every detail of its pattern matches, and the export verifies the
rewritten graph against the source. onnx_graph.py is the small graph helper they share.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import partial
from typing import Any, Optional

from ...cpu_features import AVX2_CHANNEL_BLOCK, CHANNEL_BLOCKS, EXPORT_CHANNEL_BLOCKS, NO_CHANNEL_BLOCK, this_cpu_block
from .affine_depthwise import AFFINE_DEPTHWISE_REWRITE, rewrite_affines_as_depthwise
from .affine_pointwise import AFFINE_POINTWISE_REWRITE, fold_affines_into_pointwise
from .channel_padding import CHANNEL_PADDING_REWRITE, pad_conv_channels
from .concat_conv_split import CONCAT_CONV_SPLIT_REWRITE, split_concat_convs
from .conv_affine import CONV_AFFINE_REWRITE, drop_dead_nodes, fold_conv_affines
from .db_head_depth_to_space import DB_HEAD_REWRITE, rewrite_db_heads
from .dead_channels import DEAD_CHANNEL_REWRITE, remove_dead_channels
from .dft_convolution import DFT_CONV_REWRITE, rewrite_large_convs
from .onnx_graph import Graph, bypass_identities, default_opset
from .pfhead_local import PFHEAD_LOCAL_REWRITE, rewrite_pfhead_locals
from .pointwise_unblocked import POINTWISE_UNBLOCKED_REWRITE, unblock_wide_pointwises
from .se_residual import SE_RESIDUAL_REWRITE, rewrite_se_residuals

__all__ = [
    "AFFINE_DEPTHWISE_REWRITE",
    "AFFINE_POINTWISE_REWRITE",
    "CHANNEL_BLOCKS",
    "CHANNEL_PADDING_REWRITE",
    "CONCAT_CONV_SPLIT_REWRITE",
    "CONV_AFFINE_REWRITE",
    "DB_HEAD_REWRITE",
    "DEAD_CHANNEL_REWRITE",
    "DFT_CONV_REWRITE",
    "EXPORT_CHANNEL_BLOCKS",
    "MIN_OPSET",
    "PFHEAD_LOCAL_REWRITE",
    "POINTWISE_UNBLOCKED_REWRITE",
    "SE_RESIDUAL_REWRITE",
    "block_note",
    "block_record",
    "bypass_identities",
    "rewrite_for_speed",
    "this_cpu_block",
    "why_not_rewritable",
]

MIN_OPSET = 11  # Slice with tensor inputs (opset 10) and DepthToSpace with a mode (opset 11)
# The rewrites that make a file for the CPUs with one channel block (the block goes in the export record).
BLOCK_SPECIFIC_REWRITES = frozenset({CHANNEL_PADDING_REWRITE, POINTWISE_UNBLOCKED_REWRITE})


def block_record(applied: Collection[str], block: int) -> dict[str, int]:
    """The export record's entry for the channel block the file was made for (none if no rewrite depends on it)."""
    made_for_a_block = BLOCK_SPECIFIC_REWRITES.intersection(applied)
    # a file made without the padding for a CPU with no block says so too: a CPU with one then warns
    return {"channel_block": block} if made_for_a_block or (applied and block == NO_CHANNEL_BLOCK) else {}


def block_note(applied: Collection[str], block: int) -> str:
    """What the export prints after the rewrites' names, so that the block chosen for this CPU shows."""
    if CHANNEL_PADDING_REWRITE in applied:
        return f" (channels padded to blocks of {block})"
    if block == NO_CHANNEL_BLOCK and applied:
        return " (no channel padding: onnxruntime has no blocked layout on this CPU)"
    return f" (for CPUs that block channels by {block})" if BLOCK_SPECIFIC_REWRITES.intersection(applied) else ""


FLOAT16_ELEMENT_TYPE = 10  # onnx.TensorProto.FLOAT16


def why_not_rewritable(model: Any) -> Optional[str]:
    """Why no rewrite can apply to model, in words for the export's output and record; None if they can."""
    opset = default_opset(model)
    if opset < MIN_OPSET:
        return f"opset {opset}: the rewrites need opset {MIN_OPSET} or later"
    # the rewrites build float32 constants: a graph already in float16 (a GPU variant) runs as it is. Its
    # weights are initializers, or Constant nodes (paddle2onnx's older files, RapidOCR's: no initializer at all)
    held = [
        attribute.t
        for node in model.graph.node
        if node.op_type == "Constant"
        for attribute in node.attribute
        if attribute.name == "value"
    ]
    if any(tensor.data_type == FLOAT16_ELEMENT_TYPE for tensor in [*model.graph.initializer, *held]):
        return "float16 weights: the rewrites are for float32 graphs"
    return None


def rewrite_for_speed(model: Any, skip: Collection[str] = (), channel_block: Optional[int] = None) -> list[str]:
    """Apply every rewrite whose pattern the graph holds, but those named in skip; returns the names of
    those applied, once each, in the order applied. The file is made for CPUs that block channels by
    channel_block (8 or 16, or 1 for CPUs without a blocked layout; default: the block of the CPU this runs on,
    cpu_features.this_cpu_block): its channels are padded to that block, and with 8 (AVX2) wide pointwise
    convolutions leave the blocked layout."""
    if default_opset(model) < MIN_OPSET:
        return []
    bypass_identities(model)
    graph = Graph(model)
    block = channel_block or this_cpu_block()
    # first: it reads the sizes of the maps off the strides of the graph as converted
    for_avx2: list[tuple[str, Callable[[Graph], int]]] = (
        [(POINTWISE_UNBLOCKED_REWRITE, unblock_wide_pointwises)] if block == AVX2_CHANNEL_BLOCK else []
    )
    rewrites: list[tuple[str, Callable[[Graph], int]]] = [
        *for_avx2,
        (PFHEAD_LOCAL_REWRITE, rewrite_pfhead_locals),
        (DFT_CONV_REWRITE, rewrite_large_convs),
        # after pfhead_local, whose pattern holds a transposed convolution of its own
        (DB_HEAD_REWRITE, rewrite_db_heads),
        # after the rewrites above, whose patterns read the Mul/Add nodes these fold away
        (CONV_AFFINE_REWRITE, fold_conv_affines),
        # before affine_as_depthwise_conv: the chains a 1×1 convolution reads fold into it instead
        (AFFINE_POINTWISE_REWRITE, fold_affines_into_pointwise),
        (AFFINE_DEPTHWISE_REWRITE, rewrite_affines_as_depthwise),
        (SE_RESIDUAL_REWRITE, rewrite_se_residuals),
        (CONCAT_CONV_SPLIT_REWRITE, split_concat_convs),
        # after the folds above, which put affine chains into the convolutions' weights
        (DEAD_CHANNEL_REWRITE, partial(remove_dead_channels, opset=default_opset(model))),
        # last: it pads the weights of the convolutions the rewrites above leave
        *([(CHANNEL_PADDING_REWRITE, partial(pad_conv_channels, block=block))] if block != NO_CHANNEL_BLOCK else []),
    ]
    applied = [name for name, rewrite in rewrites if name not in skip and rewrite(graph)]
    drop_dead_nodes(graph)
    return applied
