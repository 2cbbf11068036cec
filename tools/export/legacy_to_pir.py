"""Rewrite a legacy Paddle inference model (inference.pdmodel) as a PIR one (inference.json), same weights.

    python -m tools.export.legacy_to_pir SRC_DIR DST_DIR

PaddleX's Paddle 3 models ship in the PIR layout; this gives the export's PIR path a model with real
weights to prove itself on. Paddle 3.0's ``paddle.jit.load`` reads only PIR programs while PIR is on,
and a legacy TranslatedLayer cannot be saved as PIR, so the route is static: load the program under
the old IR, translate it to PIR, save it with the PIR saver (the weights are read from the same scope).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

LEGACY_MODEL = "inference.pdmodel"
PARAMS = "inference.pdiparams"
CONFIG = "inference.yml"


def convert_legacy_to_pir(src_dir: Path, dst_dir: Path) -> Path:
    """Write dst_dir/inference.{json,pdiparams} (+ the yml) from src_dir's legacy model; returns dst_dir."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # before paddle loads glog: no executor chatter
    import paddle

    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    for name in (LEGACY_MODEL, PARAMS):
        if not (src_dir / name).is_file():
            raise FileNotFoundError(f"{src_dir} has no {name}: not a legacy Paddle inference model")
    dst_dir.mkdir(parents=True, exist_ok=True)
    paddle.enable_static()
    executor = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        with paddle.pir_utils.OldIrGuard():
            legacy_program, _, _ = paddle.static.load_inference_model(str(src_dir / "inference"), executor)
        program = paddle.pir.translate_to_pir(legacy_program.desc)
        ops = program.global_block().ops
        # The translated program keeps the feed/fetch ops; their values are the model's inputs and outputs.
        inputs = [op.result(0) for op in ops if op.name() == "pd_op.feed"]
        outputs = [op.operand_source(0) for op in ops if op.name() == "pd_op.fetch"]
        if not inputs or not outputs:
            raise RuntimeError(f"{src_dir / LEGACY_MODEL}: no feed/fetch ops after translation to PIR")
        with paddle.pir_utils.IrGuard():
            paddle.static.save_inference_model(str(dst_dir / "inference"), inputs, outputs, executor, program=program)
    if (src_dir / CONFIG).is_file():
        shutil.copyfile(src_dir / CONFIG, dst_dir / CONFIG)
    return dst_dir


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tools.export.legacy_to_pir SRC_DIR DST_DIR", file=sys.stderr)
        return 2
    try:
        print(convert_legacy_to_pir(Path(args[0]), Path(args[1])))
    except FileNotFoundError as exc:
        print(f"legacy_to_pir: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
