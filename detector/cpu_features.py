"""What this CPU makes of onnxruntime's convolutions: its channel block (NCHWc layout) and whether its int8
sums saturate; and what to tell the user whose file was made for another CPU."""

from __future__ import annotations

import importlib
import json
import platform
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Optional

from .settings import METADATA_EXPORT_KEY

# onnxruntime's CPU convolutions run channels in blocks (its NCHWc layout) on x86-64 only: 16 with AVX-512F,
# else 8 (its MLAS library's default there). The export pads channel counts to the block of the CPU it runs on
# (detector/optimize) and records it; elsewhere (ARM: Apple silicon, Graviton) there is no block to fill.
CHANNEL_BLOCK = 16  # AVX-512's block, and the block where an x86-64 CPU's features cannot be read
AVX2_CHANNEL_BLOCK = 8
CHANNEL_BLOCKS = (AVX2_CHANNEL_BLOCK, CHANNEL_BLOCK)
NO_CHANNEL_BLOCK = 1  # a CPU where onnxruntime has no blocked layout: nothing padded, nothing moved
EXPORT_CHANNEL_BLOCKS = (NO_CHANNEL_BLOCK, *CHANNEL_BLOCKS)  # what a file can be made for (--channel-block)
BLOCKED_LAYOUT_MACHINES = frozenset({"x86_64", "amd64"})  # platform.machine(), lower-cased
CPUINFO = Path("/proc/cpuinfo")
# onnxruntime's x86-64 int8 convolutions multiply uint8 activations by int8 weights with a dot-product
# instruction that sums in 32 bits where the CPU has one (these /proc/cpuinfo flags); without it (AVX2, AVX-512
# before VNNI) with VPMADDUBSW, which adds each pair of products into a saturating 16-bit sum (255 * 127 * 2 is
# above 32767). Measured on an AVX2-only AMD EPYC, 2026-12-07 (README, "Evaluation and precision variants"):
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
INT8_WITHOUT_VNNI_MEASURED = "0.82-0.96x fp32's session.run time and lost up to 0.013 Hmean (up to 0.008 with VNNI)"


def nchwc_block(flags: Collection[str]) -> int:
    """onnxruntime's channel block on an x86-64 CPU with these flags (as /proc/cpuinfo lists them): 16 where
    it has AVX-512F, else 8. Padding to 16 on an AVX2 CPU pads channel counts it already blocks (24 to 32):
    PP-OCRv6_small_det ran 0.91-0.95x as long padded to 8 there (AMD EPYC Zen 3, 2026-12-02)."""
    return CHANNEL_BLOCK if "avx512f" in flags else AVX2_CHANNEL_BLOCK


def numpy_cpu_flags() -> Optional[frozenset]:
    """The CPU's features as numpy's dispatcher found them (any OS: macOS and Windows have no /proc/cpuinfo),
    lower-cased as /proc/cpuinfo spells them ("avx2", "avx512f"); None where numpy does not say."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return frozenset(name.lower() for name, present in features.items() if present)
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> Optional[frozenset]:
    """The first CPU's flags as /proc/cpuinfo lists them on x86 Linux; None where there are none to read."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return None if flags is None else frozenset(flags)


def int8_sums_saturate(flags: Optional[Collection[str]]) -> bool:
    """Whether onnxruntime's int8 convolutions add pairs of products in saturating 16-bit sums on an x86-64 CPU
    with these flags (as /proc/cpuinfo lists them): AVX2 or AVX-512 without a VNNI dot product. False where the
    flags are unknown (None) or not an x86 CPU's. (A kernel older than the CPU may not list avx_vnni: such an
    AVX2 CPU with AVX-VNNI is then taken for one without.)"""
    return flags is not None and "avx2" in flags and INT8_DOT_PRODUCT_FLAGS.isdisjoint(flags)


def int8_without_vnni(flags: Optional[Collection[str]]) -> Optional[str]:
    """What to tell the user who runs an int8 variant on a CPU whose int8 sums saturate; None elsewhere."""
    if not int8_sums_saturate(flags):
        return None
    return (
        "this CPU has no VNNI int8 dot product (avx512_vnni, avx_vnni or amx_int8), so onnxruntime's int8 "
        "convolutions add pairs of products in saturating 16-bit sums here: on an AVX2-only AMD EPYC the int8 "
        f"variants took {INT8_WITHOUT_VNNI_MEASURED}; the fp32 model is likely the better choice on this CPU"
    )


def this_cpu_block(cpuinfo: Path = CPUINFO, machine: Optional[str] = None) -> int:
    """onnxruntime's channel block on the CPU this runs on: NO_CHANNEL_BLOCK off x86-64 (no blocked layout
    there: padding only adds work, 1.08-1.12x on PP-OCRv6_small_det with the layout turned off), else from its flags
    (/proc/cpuinfo, or numpy's where there is none), 16 where they cannot be read."""
    if (machine if machine is not None else platform.machine()).lower() not in BLOCKED_LAYOUT_MACHINES:
        return NO_CHANNEL_BLOCK
    flags = cpu_flags(cpuinfo)
    if flags is None:
        flags = numpy_cpu_flags()
    return CHANNEL_BLOCK if flags is None else nchwc_block(flags)


def block_made_for(metadata: Mapping[str, str]) -> Optional[int]:
    """The channel block a file was made for (its export record's channel_block: its convolutions padded
    to it, or, for 8, wide pointwise ones left out of the blocked layout), if any."""
    try:
        record = json.loads(metadata.get(METADATA_EXPORT_KEY) or "{}")
    except ValueError:
        return None
    block = record.get("channel_block") if isinstance(record, dict) else None
    return block if isinstance(block, int) else None


def made_for_another_cpu(metadata: Mapping[str, str], cpu_block: int) -> Optional[str]:
    """What to tell the user when a file was made for another channel block than this CPU's
    (exported on an AVX2-only CPU and run on AVX-512, or the other way round); None when they match."""
    block = block_made_for(metadata)
    if block is None or block == cpu_block:
        return None
    made_for = (
        "CPUs without onnxruntime's blocked channel layout (exported on ARM)"
        if block == NO_CHANNEL_BLOCK
        else f"CPUs that block convolution channels by {block} (exported on "
        + ("an AVX2-only CPU)" if block == AVX2_CHANNEL_BLOCK else "a CPU with AVX-512)")
    )
    here = (
        "onnxruntime has no blocked layout on this CPU"
        if cpu_block == NO_CHANNEL_BLOCK
        else f"onnxruntime blocks them by {cpu_block} on this CPU"
    )
    return (
        f"it was made for {made_for} and {here}: the same boxes, more slowly than a file made for this CPU "
        f"(`detect optimize <the ONNX source> -o FILE` here, or `--channel-block {cpu_block}` at export)"
    )
