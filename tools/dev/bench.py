"""Benchmark: time per stage of our pipeline next to Paddle Inference and PaddleOCR, in one run.

    python -m tools.dev.bench [--model NAME] [--source PADDLE_MODEL_DIR] [--onnx PATH] [--repeat N]

Needs the Paddle environment (.venv-paddle, `make bench`). Prints milliseconds (median of
--repeat runs per image, best of --rounds alternations) and the ratios that matter: ORT session.run / Paddle predictor.run on the
same tensor, our end-to-end / PaddleOCR's TextDetection end-to-end, and (pre + post) / session.run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from detector.inputs import read_image_file  # noqa: E402
from detector.postprocess import boxes_from_probability_map  # noqa: E402
from detector.preprocess import normalize_image, resize_for_detection  # noqa: E402
from detector.api import TextDetection  # noqa: E402
from tools.export.paddle import paddle_predictor, quiet_offline_environment  # noqa: E402
from tools.dev.sample_image import render_text_image  # noqa: E402

# (name, width, height): a phone photo crop, a screen, an A4 scan at 150 dpi, a wide receipt strip.
BENCH_SIZES = (("640x480", 640, 480), ("1280x960", 1280, 960), ("1240x1754", 1240, 1754), ("2000x400", 2000, 400))


def blocked_medians(candidates: Dict[str, Callable[[], object]], repeat: int, warmup: int = 3) -> Dict[str, float]:
    """Median ms of each candidate, timed in a block of its own after a few warm-up runs.

    Blocks, not interleaving: Paddle's OpenMP threads and onnxruntime's pool both spin for a while
    after each call, and alternating the engines would have each one pay for the other's spinning.
    """
    medians = {}
    for name, fn in candidates.items():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        medians[name] = statistics.median(times)
    return medians


def make_images(folder: Path) -> Dict[str, Path]:
    paths = {}
    for name, width, height in BENCH_SIZES:
        font = max(14, height // 30)
        count = max(1, (height - 80) // (font * 2))
        lines = [f"{name} line {i}: the quick brown fox jumps over the lazy dog 0123456789" for i in range(count)]
        image, _ = render_text_image(lines, width=width, height=height, font_size=font, line_gap=font)
        paths[name] = folder / f"{name}.png"
        cv2.imwrite(str(paths[name]), image)
    return paths


def paddleocr_detector(source: Path, model_name: str, threads: int):
    quiet_offline_environment()
    from paddleocr import TextDetection as PaddleTextDetection

    return PaddleTextDetection(model_name=model_name, model_dir=str(source), device="cpu", cpu_threads=threads)


def time_ours(path: Path, detector: TextDetection, repeat: int) -> Dict[str, float]:
    """Our stages one by one on this image, and the whole TextDetection.predict."""
    settings, session = detector.settings, detector._session
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    image = read_image_file(path)
    resized, info = resize_for_detection(image, settings.limit_side_len, settings.limit_type, settings.max_side_limit)
    batch = normalize_image(resized, settings.mean, settings.std, settings.scale)[np.newaxis]
    prob = session.run([output_name], {input_name: batch})[0][0, 0]

    def preprocess():
        r, _ = resize_for_detection(image, settings.limit_side_len, settings.limit_type, settings.max_side_limit)
        return normalize_image(r, settings.mean, settings.std, settings.scale)

    def postprocess():
        return boxes_from_probability_map(prob, info, settings.thresh, settings.box_thresh, settings.unclip_ratio,
                                          settings.max_candidates, settings.use_dilation, settings.score_mode,
                                          settings.box_type)

    times = blocked_medians(
        {
            "load": lambda: read_image_file(path),
            "pre": preprocess,
            "run": lambda: session.run([output_name], {input_name: batch}),
            "post": postprocess,
            "ours": lambda: detector.predict(path),
        },
        repeat,
    )
    times["shape"] = f"{batch.shape[3]}x{batch.shape[2]}"
    times["batch"] = batch
    return times


def keep_best(best: Dict[str, dict], name: str, times: dict) -> None:
    """Merge one round's figures for an image into best, keeping each figure's lowest value."""
    kept = best.setdefault(name, dict(times))
    for key, value in times.items():
        if isinstance(value, float):
            kept[key] = min(kept[key], value)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="PP-OCRv4_mobile_det")
    parser.add_argument("--source", type=Path, help="Paddle inference model dir (default: .cache/sources/<model>)")
    parser.add_argument("--onnx", type=Path, help="exported model (default: models/<model>/inference.onnx)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of ours and Paddle; best round kept")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    source = args.source or REPO_ROOT / ".cache" / "sources" / args.model
    onnx_path = args.onnx or REPO_ROOT / "models" / args.model / "inference.onnx"
    for path, hint in ((source, "--source"), (onnx_path, f"--onnx, or `make export MODEL={args.model}` first")):
        if not path.exists():
            print(f"bench: error: {path} does not exist ({hint})", file=sys.stderr)
            return 1

    print(f"model {args.model}  onnx {onnx_path}  threads {args.threads}  repeat {args.repeat}  (median ms)")
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp))
        # Phase 1, ours alone; phase 2, Paddle: neither engine's idle-spinning threads slow the other.
        detector = TextDetection(model_dir=onnx_path, device="cpu", cpu_threads=args.threads)
        paddle_run = reference = None
        ours: Dict[str, dict] = {}
        theirs: Dict[str, dict] = {}
        # Shared machines have slow spells: each round times ours, then Paddle, and each figure keeps
        # its best round, so a spell that hits one phase does not decide the ratio.
        for _ in range(args.rounds):
            for name, path in images.items():
                keep_best(ours, name, time_ours(path, detector, args.repeat))
            if paddle_run is None:
                # oneDNN on: PaddleOCR's CPU default and Paddle's fastest setting, the fair anchor
                paddle_run = paddle_predictor(source, args.threads, mkldnn=True)
                reference = paddleocr_detector(source, args.model, args.threads)
            for name, path in images.items():
                keep_best(theirs, name, blocked_medians(
                    {"pd": lambda: paddle_run(ours[name]["batch"]),
                     "pdocr": lambda: list(reference.predict(str(path)))},
                    args.repeat,
                ))

    header = ("image", "net in", "load", "pre", "ort.run", "post", "ours e2e", "pd.run", "pdocr e2e",
              "run ratio", "e2e ratio", "pre+post")
    print("{:>10} {:>9} {:>6} {:>6} {:>8} {:>6} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8}".format(*header))
    totals = dict.fromkeys(("run", "pd", "ours", "pdocr", "prepost"), 0.0)
    for name in images:
        t, p = ours[name], theirs[name]
        print("{:>10} {:>9} {:6.1f} {:6.1f} {:8.1f} {:6.1f} {:9.1f} {:8.1f} {:9.1f} {:9.2f} {:9.2f} {:7.0f}%".format(
            name, t["shape"], t["load"], t["pre"], t["run"], t["post"], t["ours"], p["pd"], p["pdocr"],
            t["run"] / p["pd"], t["ours"] / p["pdocr"], 100 * (t["pre"] + t["post"]) / t["run"]))
        for key, value in (("run", t["run"]), ("pd", p["pd"]), ("ours", t["ours"]), ("pdocr", p["pdocr"]),
                           ("prepost", t["pre"] + t["post"])):
            totals[key] += value
    print(f"overall: ort.run / paddle.run = {totals['run'] / totals['pd']:.2f}; "
          f"ours e2e / PaddleOCR e2e = {totals['ours'] / totals['pdocr']:.2f}; "
          f"(pre + post) / ort.run = {100 * totals['prepost'] / totals['run']:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
