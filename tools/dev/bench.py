"""Benchmark: our pipeline next to PaddleOCR's TextDetection (Paddle engine and onnxruntime engine), in one run.

    python -m tools.dev.bench --model NAME --onnx OURS.onnx [--source PADDLE_DIR] [--reference-onnx SRC.onnx]
                              [--rounds N] [--set KEY=VALUE ...]

Needs the Paddle environment (.venv-paddle, `make bench`). Renders a mixed image set (scene-like
photos as JPEG, document pages, an A4 page at 300 dpi, a long banner, small crops), then, in
interleaved rounds, times on the whole set, file in -> boxes out, each side at its own defaults:

- ours: TextDetection.predict over the folder at its defaults (on the CPU, detector.prefetch's
  folder workers: images run two at a time, the intra-op threads split between them), and the
  same as a serial loop (folder_workers = 1: one image at a time on every thread);
- PaddleOCR 3.7 TextDetection(engine="onnxruntime") on --reference-onnx (pass the unrewritten ONNX
  source: paddle2onnx's output, or PaddlePaddle's official file; without it, --onnx itself, as `make bench`
  never leaves it), defaults from its inference.yml;
- PaddleOCR 3.7 TextDetection on the Paddle weights (--source), where there are Paddle weights;

and our stages per image (decode, preprocess, session.run, postprocess), plus, with --source,
onnxruntime session.run against Paddle Inference predictor.run on the same tensors. Every figure
is the best of --rounds rounds (shared machines have slow spells); ratios are of those bests.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
# Pause before every timed call. The sides share one process, and their idle threads keep spinning
# after a call: PaddleOCR's onnxruntime session 30-40 ms of CPU in the 200 ms after its predict, its
# Paddle engine (OpenMP) 380 ms of CPU in the 200 ms after (both cores), none after that (measured).
# Without the pause, whichever side ran next lost cores to them (PP-OCRv6_small_det, a 640x480 JPEG:
# 79 ms right after PaddleOCR's onnxruntime call against 50 ms alone; until 2026-12-01 the pause was
# 0.1 s, too short after the Paddle engine, which ours followed image by image). After it, each call
# finds the cores as a process of its own would.
SETTLE_SECONDS = 0.3
# ...and the sides take turns at going first: a round's order is rotated by one each round. With a
# fixed order, ours always ran right after PaddleOCR's Paddle engine, whose threads still took CPU then:
# measured 2026-12-01, our folder run 1.26x the serial loop's time there, 0.85x in a process alone.


def rotated(sides: dict[str, Callable], turn: int) -> list[tuple[str, Callable]]:
    """The sides in their order, starting with the one whose turn it is."""
    names = list(sides)
    first = turn % len(names)
    return [(name, sides[name]) for name in names[first:] + names[:first]]


sys.path.insert(0, str(REPO_ROOT))

from detector.api import TextDetection  # noqa: E402
from detector.inputs import read_image_file  # noqa: E402
from detector.postprocess import boxes_from_probability_map  # noqa: E402
from detector.preprocess import normalize_image, resize_for_detection  # noqa: E402
from detector.settings import METADATA_INFERENCE_YML_KEY  # noqa: E402
from tools.dev.sample_image import render_text_image  # noqa: E402

# ----------------------------------------------------------------------------- the image set


def scene_image(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like render: a text card on a blurred, noisy, coloured background."""
    rng = np.random.default_rng(seed)
    lines = [f"SALE {seed}{i}% off - open daily 9:00-21:00" for i in range(4)]
    card, _ = render_text_image(
        lines,
        width=width // 2,
        font_size=max(14, height // 24),
        line_gap=max(8, height // 30),
        background=235,
        foreground=30,
    )
    background = cv2.resize(
        rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8), (width, height)
    )
    noise = rng.normal(0, 12, (height, width, 3))
    image = np.clip(background.astype(np.float32) * 0.6 + 60 + noise, 0, 255).astype(np.uint8)
    top, left = height // 5, width // 6
    card = card[: height - top, : width - left]
    image[top : top + card.shape[0], left : left + card.shape[1]] = card
    return image


def document_image(width: int, height: int, font: int) -> np.ndarray:
    count = max(1, (height - 80) // (font * 2))
    lines = [f"{i:03d} Invoice line item the quick brown fox 0123456789 EUR" for i in range(count)]
    image, _ = render_text_image(lines, width=width, height=height, font_size=font, line_gap=font)
    return image


def make_image_set(folder: Path) -> list[Path]:
    """The mixed set, written into folder; returns the files in the order PaddleOCR reads a folder."""
    images = {
        "scene_640x480.jpg": scene_image(640, 480, 1),
        "scene_1920x1080.jpg": scene_image(1920, 1080, 2),
        "scene_3000x2000.jpg": scene_image(3000, 2000, 3),
        "doc_1280x720.png": document_image(1280, 720, 22),
        "doc_1240x1754.png": document_image(1240, 1754, 28),
        "a4_300dpi_2480x3508.jpg": document_image(2480, 3508, 50),
        "banner_4000x300.png": document_image(4000, 300, 90),
        "crop_300x80.png": document_image(300, 80, 20),
        "tiny_120x40.png": document_image(120, 40, 14),
        "tiny_30x20.png": document_image(300, 80, 20)[:20, 30:60],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if name.endswith(".jpg") else []
        cv2.imwrite(str(folder / name), image, params)
    return sorted(folder / name for name in images)


# ----------------------------------------------------------------------------- timing


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    """Lowest of repeat timed calls, ms (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        time.sleep(SETTLE_SECONDS)
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def stage_times(detector: TextDetection, path: Path, repeat: int) -> dict[str, object]:
    """Our four stages on one image, ms (best of repeat)."""
    settings, session = detector.settings, detector._session
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    image = read_image_file(path)

    def preprocess():
        resized, info = resize_for_detection(
            image, settings.limit_side_len, settings.limit_type, settings.max_side_limit
        )
        return normalize_image(resized, settings.mean, settings.std, settings.scale)[np.newaxis], info

    batch, info = preprocess()
    prob = session.run([output_name], {input_name: batch})[0][0, 0]
    return {
        "decode": best_ms(lambda: read_image_file(path), repeat),
        "pre": best_ms(preprocess, repeat),
        "run": best_ms(lambda: session.run([output_name], {input_name: batch}), repeat),
        "post": best_ms(
            lambda: boxes_from_probability_map(
                prob,
                info,
                settings.thresh,
                settings.box_thresh,
                settings.unclip_ratio,
                settings.max_candidates,
                settings.use_dilation,
                settings.score_mode,
                settings.box_type,
            ),
            repeat,
        ),
        "batch": batch,
        "net": f"{batch.shape[3]}x{batch.shape[2]}",
    }


def paddleocr_folder(onnx_path: Path, yml_text: str, folder: Path) -> Path:
    """A PaddleOCR-style model folder (inference.onnx + inference.yml) for its onnxruntime engine."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, folder / "inference.onnx")
    (folder / "inference.yml").write_text(yml_text)
    return folder


def inference_yml_of(onnx_path: Path) -> Optional[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    return props.get(METADATA_INFERENCE_YML_KEY)


def cpu_description() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo) and architecture: figures from two machines differ."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or 'unknown CPU'} ({platform.machine()}{vector_units()})"


def vector_units() -> str:
    """What the kernels onnxruntime picks depend on: AVX-512 or only AVX2 (channel block 16 or 8), VNNI for int8."""
    from detector.cpu_features import cpu_flags, nchwc_block

    flags = cpu_flags()
    if flags is None:
        return ""
    units = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    vnni = " with VNNI" if {"avx512_vnni", "avx_vnni"} & flags else ""
    return f", {units}{vnni}, channel block {nchwc_block(flags)}"


def onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def parse_settings(pairs: list[str]) -> dict[str, object]:
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            settings[key] = int(value)
        except ValueError:
            try:
                settings[key] = float(value)
            except ValueError:
                settings[key] = value
    return settings


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="PP-OCRv4_mobile_det")
    parser.add_argument("--onnx", type=Path, help="our model (default: models/<model>/inference.onnx)")
    parser.add_argument("--source", type=Path, help="Paddle inference model dir, if the model has Paddle weights")
    parser.add_argument(
        "--reference-onnx", type=Path, help="the ONNX PaddleOCR's onnxruntime engine runs (default: --onnx)"
    )
    parser.add_argument("--yml", type=Path, help="inference.yml for PaddleOCR (default: the one stored in --onnx)")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for our TextDetection (for files without detector.* metadata)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per stage and image, per round")
    parser.add_argument("--no-paddle", action="store_true", help="skip PaddleOCR's Paddle engine")
    args = parser.parse_args(argv)
    onnx_path = args.onnx or REPO_ROOT / "models" / args.model / "inference.onnx"
    reference_onnx = args.reference_onnx or onnx_path
    source = None if args.no_paddle else args.source
    yml_text = args.yml.read_text() if args.yml else inference_yml_of(onnx_path)
    for path in (onnx_path, reference_onnx) + ((source,) if source else ()):
        if not path.exists():
            print(f"bench: error: {path} does not exist", file=sys.stderr)
            return 1
    if not yml_text:
        print("bench: error: no inference.yml for PaddleOCR: pass --yml", file=sys.stderr)
        return 1

    from tools.export.paddle import paddle_predictor, quiet_offline_environment

    quiet_offline_environment()
    from paddleocr import TextDetection as PaddleOCRTextDetection

    threads = os.cpu_count() or 1
    print(
        f"bench {args.model}: {cpu_description()}, {threads} cores, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime_version()}; ours {onnx_path}; PaddleOCR onnxruntime engine on {reference_onnx}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        images = make_image_set(Path(tmp) / "images")
        folder = str(images[0].parent)
        ours = TextDetection(model_dir=onnx_path, device="cpu", **parse_settings(args.settings))
        pdocr_ort = PaddleOCRTextDetection(
            model_name=args.model,
            device="cpu",
            engine="onnxruntime",
            model_dir=str(paddleocr_folder(reference_onnx, yml_text, Path(tmp) / "ref")),
        )
        pdocr = PaddleOCRTextDetection(model_name=args.model, model_dir=str(source), device="cpu") if source else None
        paddle_run = paddle_predictor(source, threads, mkldnn=True) if source else None

        serial = TextDetection(model_dir=onnx_path, device="cpu", **parse_settings(args.settings))
        serial.folder_workers = 1  # the serial loop: one image at a time on the session with every thread

        whole = {
            "ours": lambda: list(ours.predict(folder)),
            "ours serial": lambda: list(serial.predict(folder)),
            "PaddleOCR ort": lambda: list(pdocr_ort.predict(folder)),
        }
        if pdocr is not None:
            whole["PaddleOCR paddle"] = lambda: list(pdocr.predict(folder))
        single = {"ours": lambda p: ours.predict(p), "PaddleOCR ort": lambda p: list(pdocr_ort.predict(p))}
        if pdocr is not None:
            single["PaddleOCR paddle"] = lambda p: list(pdocr.predict(p))
        per_image: dict[str, dict[str, float]] = {name: {} for name in single}
        best: dict[str, float] = {}
        paired: dict[str, list[float]] = {}  # per round, ours / theirs: neighbours in time share the load
        stages: dict[str, dict[str, object]] = {}
        paddle_runs: dict[str, float] = {}
        for fn in whole.values():
            fn()  # warm-up: first-shape allocations, lazy imports
        for round_index in range(args.rounds):
            # whole-set timings interleaved, each once per round; the best round of each is kept
            for name, fn in rotated(whole, round_index):
                time.sleep(SETTLE_SECONDS)
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                best[name] = min(best.get(name, float("inf")), elapsed)
                paired.setdefault(name, []).append(elapsed)
            # image by image, the sides alternating: neighbours in time share the machine's load
            for path in images:
                for name, fn in rotated(single, round_index):
                    time.sleep(SETTLE_SECONDS)
                    start = time.perf_counter()
                    fn(str(path))
                    elapsed = (time.perf_counter() - start) * 1000
                    per_image[name][path.name] = min(per_image[name].get(path.name, float("inf")), elapsed)
            for path in images:
                times = stage_times(ours, path, args.repeat)
                kept = stages.setdefault(path.name, times)
                for key in ("decode", "pre", "run", "post"):
                    kept[key] = min(kept[key], times[key])
                if paddle_run is not None:
                    batch = kept["batch"]
                    paddle_runs[path.name] = min(
                        paddle_runs.get(path.name, float("inf")),
                        best_ms(lambda batch=batch: paddle_run(batch), args.repeat),
                    )
            print(
                f"round {round_index + 1}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in best.items()),
                file=sys.stderr,
            )

    print(f"\nour stages per image, ms (best of {args.rounds} rounds x {args.repeat})")
    header = ["image", "net in", "decode", "pre", "ort.run", "post"] + (["pd.run", "run ratio"] if paddle_runs else [])
    print(" | ".join(header))
    totals = dict.fromkeys(("decode", "pre", "run", "post", "pd"), 0.0)
    for path in images:
        t = stages[path.name]
        row = [path.name, t["net"]] + [f"{t[k]:.1f}" for k in ("decode", "pre", "run", "post")]
        for key in ("decode", "pre", "run", "post"):
            totals[key] += t[key]
        if paddle_runs:
            row += [f"{paddle_runs[path.name]:.1f}", f"{t['run'] / paddle_runs[path.name]:.2f}"]
            totals["pd"] += paddle_runs[path.name]
        print(" | ".join(row))
    row = ["total", ""] + [f"{totals[k]:.1f}" for k in ("decode", "pre", "run", "post")]
    if paddle_runs:
        row += [f"{totals['pd']:.1f}", f"{totals['run'] / totals['pd']:.2f}"]
    print(" | ".join(row))
    stage_sum = sum(totals[k] for k in ("decode", "pre", "run", "post"))
    print("shares: " + ", ".join(f"{k} {100 * totals[k] / stage_sum:.0f}%" for k in ("decode", "pre", "run", "post")))

    print(f"\nend to end per image, ms (file in -> boxes out, sides alternating image by image, best of {args.rounds})")
    names = list(single)
    print(" | ".join(["image"] + names + [f"ours / {name}" for name in names[1:]]))
    for path in images:
        row = [path.name] + [f"{per_image[name][path.name]:.1f}" for name in names]
        row += [f"{per_image['ours'][path.name] / per_image[name][path.name]:.2f}" for name in names[1:]]
        print(" | ".join(row))
    sums = {name: sum(per_image[name].values()) for name in names}
    print(
        " | ".join(
            ["total"]
            + [f"{sums[name]:.1f}" for name in names]
            + [f"{sums['ours'] / sums[name]:.2f}" for name in names[1:]]
        )
    )

    count = len(images)
    print(f"\nwhole set ({count} images, file in -> boxes out, each side's defaults), best of {args.rounds} rounds:")
    for name, seconds in best.items():
        print(f"  {name:18s} {seconds * 1000:8.0f} ms  {count / seconds:6.2f} images/s")

    def ratios(mine: str, theirs: str) -> str:
        per_round = sorted(a / b for a, b in zip(paired[mine], paired[theirs]))
        return (
            f"{best[mine] / best[theirs]:.2f} (best / best); per round {min(per_round):.2f}-{max(per_round):.2f}, "
            f"median {statistics.median(per_round):.2f}"
        )

    print(f"  ours / PaddleOCR onnxruntime engine = {ratios('ours', 'PaddleOCR ort')}")
    if "PaddleOCR paddle" in best:
        print(f"  ours / PaddleOCR Paddle engine      = {ratios('ours', 'PaddleOCR paddle')}")
    print(f"  ours (default) / ours serial        = {ratios('ours', 'ours serial')}")
    if paddle_runs:
        print(f"  ort session.run / Paddle Inference run (summed over the set) = {totals['run'] / totals['pd']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
