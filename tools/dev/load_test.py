"""Load figures for `detect serve`: requests/s and p50/p99 latency at 1, 4 and 16 concurrent clients.

Starts its own server on a loopback port (the only place it sends requests), posts the rendered
sample page as a raw body, and stops after --requests per level or --max-seconds, whichever comes
first. Run: ``python -m tools.dev.load_test [--requests 48] [-- extra detect serve options]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.serving import HOST, running_server  # noqa: E402  (the tests' loopback server helper)
from tools.dev.sample_image import SAMPLE_LINES, render_text_image  # noqa: E402

LEVELS = (1, 4, 16)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_level(port: int, body: bytes, clients: int, requests: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=300)
        while True:
            with lock:
                if remaining[0] <= 0 or time.monotonic() > deadline:
                    break
                remaining[0] -= 1
            start = time.perf_counter()
            connection.request("POST", "/detect", body, {"Content-Type": "image/png"})
            response = connection.getresponse()
            payload = json.loads(response.read())
            elapsed = time.perf_counter() - start
            with lock:
                statuses.append(response.status)
                if response.status == 200 and payload["errorCode"] == 0:
                    latencies.append(elapsed)
        connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "ok": len(latencies),
        "refused": sum(s == 503 for s in statuses),
        "other": sum(s not in (200, 503) for s in statuses),
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else float("nan"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO_ROOT / "models" / "PP-OCRv4_mobile_det" / "inference.onnx"))
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=120, help="time limit per level")
    parser.add_argument("serve_options", nargs="*", help="after --: options for detect serve")
    args = parser.parse_args(argv)
    image, _ = render_text_image(list(SAMPLE_LINES), width=1000)
    body = cv2.imencode(".png", image)[1].tobytes()
    options = args.serve_options or ["--max-concurrency", "2", "--max-queue", "32"]
    log_dir = REPO_ROOT / "output" / "load_test"
    log_dir.mkdir(parents=True, exist_ok=True)
    with running_server(Path(args.model), log_dir, *options) as server:
        run_level(server.port, body, 1, 3, args.max_seconds)  # warm-up
        print(f"detect serve {' '.join(options)}; {image.shape[1]}x{image.shape[0]} PNG, raw body")
        print("| clients | requests ok | 503 | requests/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|")
        for clients in LEVELS:
            level = run_level(server.port, body, clients, args.requests, args.max_seconds)
            print(
                f"| {clients} | {level['ok']} | {level['refused']} | {level['rps']:.2f} | "
                f"{level['p50_ms']:.0f} | {level['p99_ms']:.0f} |",
                flush=True,
            )
            if level["other"]:
                print(f"  ({level['other']} answers other than 200/503)")


if __name__ == "__main__":
    main()
