"""Large-kernel convolutions computed through a 2-D discrete Fourier transform, as an exact graph rewrite.

LKPAN (the neck of PP-OCRv4_server_det) runs eight 9×9 convolutions; the one at 1/4 resolution
alone is a fifth of the network's multiply-adds. The six at 1/4 to 1/16 are rewritten, the two on
1/32 maps stay direct (MAX_DOWNSAMPLING). A K×K convolution over one tile of
T = TILE + K - 1 input pixels per side gives TILE × TILE outputs with no wrap-around, so
(overlap-save) each tile can go through a T-point DFT, where the convolution is one complex
product per frequency, summed over input channels: a matrix product per frequency. For K = 9 and
TILE = 16 that is 1/16 of the direct multiply-adds plus the transforms, which are separable and cheap.

The channels are stacked down one tall plane, each padded to a whole number of tiles (why that is exact:
rewrite_conv_via_dft), so that the forward transforms leave the channel axis after the frequency axes
and the product needs no transpose of the (large) spectrum. With x of shape (N, C, H, W), tiles = tiles_h × tiles_w:

    Pad each channel to P = tiles_h · TILE rows (K//2 above), Reshape    → (N, 1, C·P, W)
    Conv 1×T, stride TILE: the real DFT of each tile row                 → (N, 2L, C·P, tiles_w)     L = T//2 + 1
    Reshape, Conv T×1, stride TILE: the complex DFT of those columns     → (N·L, 2T, C·tiles_h, tiles_w)
    MatMul with the kernel's spectrum, one product per frequency         → (N, L·T, 2, 2·O, tiles)
    MatMul, MatMul: the inverse DFT, only the TILE × TILE valid outputs of each tile
    Transpose, Reshape, Transpose, Reshape, Slice                        → (N, O, H, W)

The kernel's spectrum is computed in the graph from the original weight (MatMul with a constant
basis), so the file stays the size it was and onnxruntime folds it to a constant when the session
is created. It is O·C·L·T·2 floats (41 MB for a 256→64 9×9 kernel): the memory this speed costs.
Outputs match the direct convolution to about 1e-6 relative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .onnx_graph import Graph, Subgraph, as_text, attribute, downsampling

DFT_CONV_REWRITE = "large_kernel_conv_via_dft"
# Outputs per tile side. On a 256→64 9×9 at 176×240 (2 cores): 8 → 166 ms, 16 → 107, 24 → 117, 32 → 127,
# 40 → 105; 16 is as fast as any and keeps the spectrum (memory ∝ (TILE + K - 1)² / 2) small.
# With the channels stacked (2026-12-06), 24 against 16 on the whole server network: 1.01× at 672×960,
# 1.00× at 480×640, 1.30× at 32×128, for 1.8× the spectra's memory.
TILE = 16
# The LKPAN kernels. IntraCL's 7×7 and 5×5 (32→32 channels) gain nothing: 20.5 ms direct vs 21.9 ms,
# and 20.0 vs 28.3 ms, at 176×240 on 2 cores. (A 256→64 7×7 would: 301 → 104 ms; none is in these models.)
MIN_KERNEL = 9
# Only on maps at most this many times smaller per side than the network input (onnx_graph's
# downsampling(), from the graph's strides; a map whose scale it cannot tell is rewritten). LKPAN's two 9×9
# convolutions at 1/32 gain nothing there: PP-OCRv4_server_det's session.run with them direct against through
# the DFT (AMD EPYC Zen 5, 2 threads, best of 8): 871.6 / 874.9 ms at 672×960, 703.5 / 711.1 at 544×960,
# 407.0 / 411.3 at 480×640, 82.1 / 87.0 at 64×960, 16.5 / 19.4 at 32×128; the session opened in 0.56
# instead of 0.70 s with ~140 MiB less peak memory. At 1/16 the DFT still pays on pages (864.9 against
# 891.8 ms direct at 672×960) and loses ~2 ms on crops: kept.
MAX_DOWNSAMPLING = 16


def transform_size(kernel: int, tile: int = TILE) -> int:
    return tile + kernel - 1


def row_dft_kernel(size: int) -> np.ndarray:
    """(2L, 1, 1, T) Conv weight: channel 2l is the real part of frequency l of a T-pixel row, 2l + 1
    the imaginary part (e^{-2πi l n / T})."""
    n = np.arange(size)
    kernel = np.zeros((2 * (size // 2 + 1), 1, 1, size))
    for frequency in range(size // 2 + 1):
        angle = 2 * np.pi * frequency * n / size
        kernel[2 * frequency, 0, 0] = np.cos(angle)
        kernel[2 * frequency + 1, 0, 0] = -np.sin(angle)
    return kernel


def column_dft_kernel(size: int) -> np.ndarray:
    """(2T, 2, T, 1) Conv weight: the complex DFT down a column of complex values (input channels real,
    imaginary); output channel 2k + part is part (0 real, 1 imaginary) of frequency k."""
    n = np.arange(size)
    kernel = np.zeros((2 * size, 2, size, 1))
    for frequency in range(size):
        cos, sin = np.cos(2 * np.pi * frequency * n / size), np.sin(2 * np.pi * frequency * n / size)
        # (re + i·im)(cos - i·sin)
        kernel[2 * frequency, 0, :, 0], kernel[2 * frequency, 1, :, 0] = cos, sin
        kernel[2 * frequency + 1, 0, :, 0], kernel[2 * frequency + 1, 1, :, 0] = -sin, cos
    return kernel


def inverse_column_matrix(size: int, tile: int) -> np.ndarray:
    """(2·TILE, 2T): from frequencies k (columns 2k + part) to rows a < TILE of the inverse DFT
    (rows a: real part, rows TILE + a: imaginary part); unscaled."""
    frequencies = np.arange(size)
    matrix = np.zeros((2 * tile, 2 * size))
    for row in range(tile):
        cos, sin = np.cos(2 * np.pi * frequencies * row / size), np.sin(2 * np.pi * frequencies * row / size)
        # (re + i·im)(cos + i·sin)
        matrix[row, 0::2], matrix[row, 1::2] = cos, -sin
        matrix[tile + row, 0::2], matrix[tile + row, 1::2] = sin, cos
    return matrix


def inverse_column_of_products(size: int, tile: int) -> np.ndarray:
    """(2·TILE, 4T): inverse_column_matrix applied to the four real products Q[q, p] of each frequency k
    (columns 4k + 2p + q): the complex product's real part is Q[0, 0] - Q[1, 1], its imaginary part
    Q[1, 0] + Q[0, 1]."""
    inverse = inverse_column_matrix(size, tile).reshape(2 * tile, size, 2)
    matrix = np.zeros((2 * tile, size, 2, 2))
    for p in (0, 1):
        for q in (0, 1):
            sign = -1.0 if p == q == 1 else 1.0
            matrix[:, :, p, q] = sign * inverse[:, :, p ^ q]
    return matrix.reshape(2 * tile, 4 * size)


def inverse_row_matrix(size: int, tile: int) -> np.ndarray:
    """(TILE, 2L): from the half spectrum of a real row (columns 2l + part) to its pixels b < TILE,
    counting the mirrored frequencies (weight 2 but for l = 0 and T/2) and the 1/T² of both inverses."""
    matrix = np.zeros((tile, 2 * (size // 2 + 1)))
    for column in range(tile):
        for frequency in range(size // 2 + 1):
            weight = (1.0 if frequency in (0, size / 2) else 2.0) / size**2
            angle = 2 * np.pi * frequency * column / size
            matrix[column, 2 * frequency] = weight * np.cos(angle)
            matrix[column, 2 * frequency + 1] = -weight * np.sin(angle)
    return matrix


def kernel_spectrum_basis(kernel: int, size: int) -> np.ndarray:
    """(K·K, L·T·2): kernel.reshape(-1, K·K) @ basis is the conjugate DFT of the kernel on a T×T grid,
    frequency (l, k) (column l, row k) at columns 2(l·T + k) (real part) and 2(l·T + k) + 1 (imaginary).
    Conjugate, because Conv is a correlation: y[n] = Σ w[m] x[n + m]."""
    half = size // 2 + 1
    u, v = np.divmod(np.arange(kernel * kernel), kernel)  # kernel row, column
    l_freq, k = np.divmod(np.arange(half * size), size)  # column frequency l, row frequency k
    angle = 2 * np.pi * (np.outer(u, k) + np.outer(v, l_freq)) / size
    return np.stack([np.cos(angle), np.sin(angle)], axis=2).reshape(kernel * kernel, 2 * half * size)


def is_large_same_conv(graph: Graph, node: Any) -> bool:
    """A square, odd, ≥ MIN_KERNEL, stride-1 'same' convolution with a constant float32 weight."""
    if node.op_type != "Conv" or len(node.input) < 2:
        return False
    kernel = list(attribute(node, "kernel_shape", []))
    if len(kernel) != 2 or kernel[0] != kernel[1] or kernel[0] < MIN_KERNEL or kernel[0] % 2 == 0:
        return False
    weight = graph.constant(node.input[1])
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or list(weight.shape[2:]) != kernel:
        return False
    if len(node.input) == 3 and node.input[2] and graph.constant(node.input[2]) is None:
        return False
    return (
        list(attribute(node, "strides", [1, 1])) == [1, 1]
        and list(attribute(node, "dilations", [1, 1])) == [1, 1]
        and list(attribute(node, "pads", [0, 0, 0, 0])) == [kernel[0] // 2] * 4
        and attribute(node, "group", 1) == 1
        and as_text(attribute(node, "auto_pad", b"NOTSET")) == "NOTSET"
    )


def transform_constants(new: Subgraph, kernel: int, tile: int) -> dict[str, str]:
    """Names of new initializers holding the DFT matrices for one kernel size."""
    size = transform_size(kernel, tile)
    return {
        "row_dft": new.const("row_dft", row_dft_kernel(size)),
        "column_dft": new.const("column_dft", column_dft_kernel(size)),
        "kernel_spectrum_basis": new.const("kernel_spectrum_basis", kernel_spectrum_basis(kernel, size)),
        "inverse_column_dft": new.const("inverse_column_dft", inverse_column_of_products(size, tile)),
        "inverse_row_dft": new.const("inverse_row_dft", inverse_row_matrix(size, tile)),
    }


def whole_tiles(new: Subgraph, length: str, tile: int) -> tuple[str, str]:
    """In the graph: how many tiles cover length (ceil(length / tile)), and the length they cover."""
    size = new.ints("tile", [tile])
    tiles = new.node("Div", [new.node("Add", [length, new.ints("round_up", [tile - 1])], "round_up"), size], "tiles")
    return tiles, new.node("Mul", [tiles, size], "covered")


def rewrite_conv_via_dft(graph: Graph, conv: Any, shared: dict[int, dict[str, str]], tile: int = TILE) -> None:
    """Replace one convolution that is_large_same_conv accepts by its DFT form (module docstring).
    shared maps a kernel size to the DFT matrices an earlier rewrite put in the graph, and gains this one's."""
    weight = graph.constant(conv.input[1])
    assert weight is not None  # is_large_same_conv accepted conv only with a constant weight
    outputs, channels, kernel = weight.shape[0], weight.shape[1], weight.shape[2]
    size = transform_size(kernel, tile)
    half, pad = size // 2 + 1, kernel // 2
    frequencies = half * size
    new = Subgraph(graph, DFT_CONV_REWRITE)
    if kernel not in shared:
        shared[kernel] = transform_constants(new, kernel, tile)
    transforms = shared[kernel]
    x = conv.input[0]

    # Each channel's plane: K//2 zero rows above its H rows and zeros below, to P = tiles_h · TILE rows with
    # P ≥ H + K//2. Stacked, a window reaching past its plane reads the next plane's top zeros, then rows
    # that only outputs below row P - K//2 ≥ H see: the crop drops those. Columns: the row transform's own
    # zero padding (K//2, and TILE - 1 more so the last, partial tile is complete).
    shape = new.node("Shape", [x], "shape")
    batch = new.node("Slice", [shape, new.ints("start", [0]), new.ints("end", [1])], "batch")
    height = new.node("Slice", [shape, new.ints("start", [2]), new.ints("end", [3])], "height")
    width = new.node("Slice", [shape, new.ints("start", [3]), new.ints("end", [4])], "width")
    height_width = new.node("Slice", [shape, new.ints("start", [2]), new.ints("end", [4])], "height_width")
    padded_height = new.node("Add", [height, new.ints("pad", [pad])], "padded_height")
    tiles_h, plane_rows = whole_tiles(new, padded_height, tile)
    tiles_w, covered_width = whole_tiles(new, width, tile)
    below = new.node("Sub", [plane_rows, padded_height], "below")
    plane_pads = new.node(
        "Concat", [new.ints("before", [0, 0, pad, 0, 0, 0]), below, new.ints("right", [0])], "plane_pads", axis=0
    )
    planes = new.node("Pad", [x, plane_pads], "pad_planes")
    stacked = new.node("Reshape", [planes, new.ints("shape", [0, 1, -1, 0])], "stacked")

    # Forward transform: rows (real → L complex), then columns (complex → T complex), one tile at a time.
    rows = new.node(
        "Conv",
        [stacked, transforms["row_dft"]],
        "row_dft",
        kernel_shape=[1, size],
        strides=[1, tile],
        pads=[0, pad, 0, pad + tile - 1],
    )
    complex_rows = new.node("Reshape", [rows, new.ints("shape", [-1, 2, 0, 0])], "complex_rows")
    spectra = new.node(
        "Conv",
        [complex_rows, transforms["column_dft"]],
        "column_dft",
        kernel_shape=[size, 1],
        strides=[tile, 1],
        pads=[0, 0, 2 * pad, 0],
    )
    # (N·L, 2T (k, p), C·tiles_h, tiles_w) → (N, L·T, 2, C, tiles): already frequency-major.
    by_frequency_shape = new.node("Concat", [batch, new.ints("shape", [frequencies, 2, channels, -1])], "shape", axis=0)
    by_frequency = new.node("Reshape", [spectra, by_frequency_shape], "by_frequency")

    # The kernel's conjugate spectrum W, computed from the weight (onnxruntime folds it to a constant),
    # as (L·T, 1, 2·O, C): rows Re W then Im W. One MatMul per frequency and part p of X gives
    # Q[q, p] = part q of W times part p of X, all four products; the inverse DFT below sums them into
    # Re Y = Q[0, 0] - Q[1, 1] and Im Y = Q[1, 0] + Q[0, 1].
    weight_rows = new.node(
        "Reshape", [conv.input[1], new.ints("shape", [outputs * channels, kernel * kernel])], "weight_rows"
    )
    spectrum = new.node("MatMul", [weight_rows, transforms["kernel_spectrum_basis"]], "kernel_spectrum")
    spectrum = new.node("Transpose", [spectrum], "spectrum_by_frequency", perm=[1, 0])
    spectrum = new.node("Reshape", [spectrum, new.ints("shape", [frequencies, 1, 2 * outputs, channels])], "spectrum")
    products = new.node("MatMul", [spectrum, by_frequency], "products")  # (N, L·T, 2 p, 2·O (q, o), tiles)

    # Inverse transform of the valid TILE × TILE corner: columns first (over k, p and q), then rows (over l
    # and the real/imaginary part).
    by_row_frequency = new.node("Reshape", [products, new.ints("shape", [0, half, 4 * size, -1])], "by_row_frequency")
    columns = new.node(
        "MatMul", [transforms["inverse_column_dft"], by_row_frequency], "inverse_column_dft"
    )  # (N, L, 2·TILE (part, a), O·tiles)
    by_column_frequency = new.node("Reshape", [columns, new.ints("shape", [0, 2 * half, -1])], "by_column_frequency")
    pixels = new.node(
        "MatMul", [transforms["inverse_row_dft"], by_column_frequency], "inverse_row_dft"
    )  # (N, TILE b, TILE a · O · tiles)
    # To (N, O, tiles_h, a, tiles_w, b) in two transposes that each move one axis, the second a whole
    # row of pixels at a time (one transpose doing both ran 5-8 times slower); the Reshape between them
    # keeps onnxruntime from merging them.
    tiled_shape = new.node(
        "Concat", [batch, new.ints("shape", [tile, tile, outputs]), tiles_h, tiles_w], "tiled_shape", axis=0
    )
    tiled = new.node("Reshape", [pixels, tiled_shape], "tiled")
    tiled = new.node("Transpose", [tiled], "columns_last", perm=[0, 2, 3, 4, 5, 1])  # (N, a, O, th, tw, b)
    rows_shape = new.node("Concat", [batch, new.ints("shape", [tile, -1]), covered_width], "rows_shape", axis=0)
    pixel_rows = new.node("Reshape", [tiled, rows_shape], "pixel_rows")  # (N, a, O·tiles_h, covered width)
    pixel_rows = new.node("Transpose", [pixel_rows], "to_image", perm=[0, 2, 1, 3])  # (N, O·tiles_h, a, width)
    image_shape = new.node(
        "Concat", [batch, new.ints("shape", [outputs]), plane_rows, covered_width], "image_shape", axis=0
    )
    image = new.node("Reshape", [pixel_rows, image_shape], "image")
    has_bias = len(conv.input) == 3 and bool(conv.input[2])
    cropped = new.node(
        "Slice",
        [image, new.ints("start", [0, 0]), height_width, new.ints("axes", [2, 3])],
        "crop",
        output=None if has_bias else conv.output[0],
    )
    if has_bias:
        bias = new.node("Reshape", [conv.input[2], new.ints("shape", [1, outputs, 1, 1])], "bias")
        new.node("Add", [cropped, bias], "add_bias", output=conv.output[0])
    new.replace([conv])


def rewrite_large_convs(graph: Graph) -> int:
    """Rewrite every convolution is_large_same_conv accepts on a map at most MAX_DOWNSAMPLING times
    smaller than the input; returns how many."""
    candidates = [node for node in graph.graph.node if is_large_same_conv(graph, node)]
    scales = downsampling(graph) if candidates else {}
    convs = [node for node in candidates if scales.get(node.input[0], 1.0) <= MAX_DOWNSAMPLING]
    shared: dict[int, dict[str, str]] = {}
    for conv in convs:
        rewrite_conv_via_dft(graph, conv, shared)
    return len(convs)
