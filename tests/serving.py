"""A real `detect serve` on a loopback port (a subprocess) and a small stdlib HTTP client for the tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from tests.conftest import REPO_ROOT

HOST = "127.0.0.1"
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.port, self.log = process, port, log

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def request(
        self, method: str, path: str, body: Any = None, headers: Optional[dict[str, str]] = None, timeout: float = 120
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, parsed JSON or text) of one request on a fresh connection."""
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
            answer_headers = {key.lower(): value for key, value in response.getheaders()}
        finally:
            connection.close()
        if method != "HEAD" and answer_headers.get("content-type", "").startswith("application/json"):
            return response.status, answer_headers, json.loads(raw)
        return response.status, answer_headers, raw.decode("utf-8", "replace")

    def post_raw(self, path: str, data: bytes, content_type: str = "application/octet-stream", **kwargs):
        return self.request("POST", path, data, {"Content-Type": content_type}, **kwargs)

    def post_json(self, path: str, payload: Any, **kwargs):
        return self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}, **kwargs)

    def post_multipart(self, path: str, fields: dict[str, tuple[Optional[str], bytes]], **kwargs):
        """fields: name -> (filename or None for a plain field, content)."""
        boundary = uuid.uuid4().hex
        parts = []
        for name, (filename, content) in fields.items():
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            if filename:
                head += "Content-Type: application/octet-stream\r\n"
            parts.append(head.encode() + b"\r\n" + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, **kwargs)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


def raw_exchange(port: int, request: bytes, half_close: bool = False, timeout: float = 60) -> bytes:
    """Every byte the server sends on one connection after ``request``, until it closes the connection; with
    ``half_close`` the client shuts its write side once the request is sent. A server that never closes the
    connection fails the test with socket.timeout after ``timeout`` seconds."""
    with socket.create_connection((HOST, port), timeout=timeout) as connection:
        connection.sendall(request)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return received
            received += chunk


def parsed_answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or None) of one HTTP/1.1 answer with a Content-Length, as raw_exchange read it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
    body = body[: int(headers.get("content-length", len(body)))]
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


@contextmanager
def running_server(model_path: Path, log_dir: Path, *options: str) -> Iterator[Server]:
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "detector.cli",
        "serve",
        "--model",
        str(model_path),
        "--device",
        "cpu",
        "--host",
        HOST,
        "--port",
        str(port),
        *options,
    ]
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1")
        )
    server = Server(process, port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"detect serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if server.request("GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"detect serve did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def serving_in_this_process(app: Any, **options: Any) -> Iterator[Any]:
    """``app`` on a loopback port by uvicorn (given these Config options) on a thread of the test process, so that a
    test can patch what the app calls; the uvicorn.Server (its port: .config.port)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=free_port(), log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start on its thread")
            time.sleep(0.05)
        yield server
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
