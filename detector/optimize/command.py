"""`detect optimize`: import an ONNX detector (PaddlePaddle's release folder, a file converted elsewhere) as a
file of ours: the exact speed rewrites for this CPU, verified against it, its settings in the metadata.

A release downloaded by name is imported by itself (detector/release_import.py); this is for every other file.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import NoReturn, Optional

import click

from ..cpu_features import EXPORT_CHANNEL_BLOCKS
from ..errors import EXIT_FAILED, EXIT_USAGE, DetectorError
from ..onnxruntime_import import ONNXRUNTIME_MISSING
from ..precision import fp32_output_refusal, how_to_make_variant
from ..settings import INFERENCE_YML, declared_model_name, read_inference_yml
from . import INSTALL_HINT
from .model_file import remove_stale_variants, sha256_of


def _fail(message: str, exc: Optional[BaseException], debug: bool, code: int) -> NoReturn:
    if debug and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(f"detect optimize: error: {message}", err=True)
    sys.exit(code)


def already_imported_from(path: Path) -> Optional[str]:
    """Where a file this package wrote (detector.export in its metadata) was made from; None for any other file."""
    import onnx

    from .onnx_import import made_from

    try:
        metadata = {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # not ONNX: the import says so in its own words
        return None
    return made_from(metadata)


@click.command("optimize", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("source", metavar="SOURCE", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .onnx file to write; load it with --model-dir FILE (model_dir= in Python).",
)
@click.option(
    "--model",
    "--model_name",
    "--model-name",
    "model_name",
    default=None,
    metavar="NAME",
    help="The model's name: its settings come from the catalog when no inference.yml is beside the file "
    "[default: the name its inference.yml declares].",
)
@click.option(
    "--channel-block",
    type=click.Choice([str(block) for block in EXPORT_CHANNEL_BLOCKS]),
    default=None,
    help="Make the file for CPUs that block convolution channels by this: 16 for AVX-512, 8 for other x86-64 CPUs, "
    "1 for ARM (no blocked layout there: nothing padded) (with 8 also wide pointwise convolutions unblocked) "
    "[default: this CPU's].",
)
@click.option("--quiet", "-q", is_flag=True, help="Only errors on stderr, not each step.")
@click.option("--debug", is_flag=True, hidden=True, help="Tracebacks on errors.")
def optimize_command(
    source: Path, output: Path, model_name: Optional[str], channel_block: Optional[str], quiet: bool, debug: bool
) -> None:
    """Rewrite an ONNX text detector for this CPU, exactly, and verify it.

    SOURCE is an .onnx file, or a folder holding inference.onnx and the inference.yml PaddlePaddle ships
    beside it (its thresholds and resize settings go into the written file's metadata). The rewrites are
    exact; the written file's probability map is checked against SOURCE's on onnxruntime at four input
    shapes (within 1e-4) before anything is written.
    """
    from . import optimizer_available  # looked up at call time (tests replace it)

    if not optimizer_available():
        _fail(f"this needs the onnx package: {INSTALL_HINT}", None, debug, EXIT_USAGE)
    from ..onnxruntime_import import onnxruntime_module

    if onnxruntime_module() is None:  # the written file is checked on onnxruntime: said before any work
        _fail(f"this needs onnxruntime to check what it writes: {ONNXRUNTIME_MISSING}", None, debug, EXIT_USAGE)
    from .onnx_import import (
        export_from_onnx,
        file_of_source,
        find_onnx_source,
        import_summary,
        report_to_stderr,
        source_settings,
    )

    try:
        found = find_onnx_source(source)
        name = model_name or (declared_model_name(read_inference_yml(found.config)[0]) if found.config else None)
    except DetectorError as exc:
        _fail(str(exc), exc, debug, EXIT_USAGE)
    made_from = already_imported_from(found.onnx)
    if made_from is not None:
        _fail(
            f"{found.onnx} was written by detector already (its metadata records how); its channels cannot be "
            f"un-padded: run detect optimize on the file it was made from ({made_from})",
            None,
            debug,
            EXIT_USAGE,
        )
    clash = file_of_source(found, output)
    if clash is not None:
        _fail(f"--output is a file of SOURCE ({clash}): write the import to another file", None, debug, EXIT_USAGE)
    refusal = fp32_output_refusal(output, "the export tool (python -m tools.export … --precision int8)")
    if refusal:  # written under a variant's name, then removed as stale by itself; or a name no variant finds
        _fail(f"--output {refusal}", None, debug, EXIT_USAGE)
    if not name:
        _fail(f"no {INFERENCE_YML} beside {found.onnx} names the model: pass --model NAME", None, debug, EXIT_USAGE)
    try:  # a name without settings is a usage error; the name the file will record (the yml's, if it differs)
        recorded_name, _settings, _yml = source_settings(name, found, progress=lambda line: None)
    except DetectorError as exc:
        _fail(str(exc), exc, debug, EXIT_USAGE)
    replaced_sha256 = sha256_of(output) if output.is_file() else None
    try:
        record = export_from_onnx(
            name,
            source,
            output,
            channel_block=int(channel_block) if channel_block else None,
            progress=(lambda line: None) if quiet else report_to_stderr,
        )
    except DetectorError as exc:
        _fail(str(exc), exc, debug, EXIT_FAILED)
    click.echo(f"{output} ({recorded_name}; {import_summary(record)} against {found.onnx})")
    for precision, variant in remove_stale_variants(output, replaced_sha256):
        click.echo(
            f"detect optimize: removed {variant}, made from the file just replaced (precision={precision!r} "
            f"would have loaded it). {how_to_make_variant(output, precision, recorded_name)}",
            err=True,
        )
