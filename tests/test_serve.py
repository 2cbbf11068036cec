"""`detect serve` as clients meet it: a real server on a loopback port, real HTTP requests.

The library's results are the contract: every successful answer is compared with
TextDetection.predict on the same bytes and settings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import http.server
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

from detector import TextDetection
from detector.result import to_jsonable
from tests.conftest import REPO_ROOT
from tests.rendered import write_rendered_pages
from tests.serving import parsed_answer, raw_exchange, running_server, serving_in_this_process
from tools.dev.sample_image import render_text_image

pytest.importorskip("fastapi", reason="the [serve] extra is not installed (make test installs it)")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed (make test installs it)")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return write_rendered_pages(tmp_path_factory.mktemp("serve_pages"))


@pytest.fixture(scope="module")
def library(default_onnx):
    return TextDetection(model_dir=default_onnx, device="cpu")


@pytest.fixture(scope="module")
def server(default_onnx, tmp_path_factory):
    with running_server(
        default_onnx,
        tmp_path_factory.mktemp("serve_logs"),
        "--max-concurrency",
        "2",
        "--max-queue",
        "16",
        "--max-body-mb",
        "1",
        "--max-pixels",
        "4000000",
    ) as running:
        yield running


def expected_pages(library, data: bytes, **overrides):
    """What the library returns for these bytes, in the service's page shape."""
    return [
        {
            "page_index": result["page_index"],
            "width": result.input_img.shape[1],
            "height": result.input_img.shape[0],
            "dt_polys": to_jsonable(result["dt_polys"]),
            "dt_scores": to_jsonable(result["dt_scores"]),
        }
        for result in library.predict(data, **overrides)
    ]


def detected_pages(body):
    return [
        {key: page[key] for key in ("page_index", "width", "height", "dt_polys", "dt_scores")}
        for page in body["result"]["pages"]
    ]


def assert_success(status, body):
    assert status == 200, body
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and body["logId"]
    assert body["result"]["model_name"] == "PP-OCRv4_mobile_det"
    assert body["result"]["time_ms"] > 0 and all(page["time_ms"] > 0 for page in body["result"]["pages"])


def assert_refused(answer, status, *words):
    code, headers, body = answer
    assert code == status, body
    assert headers["content-type"].startswith("application/json")
    assert body["errorCode"] == status and body["logId"] and "result" not in body
    assert all(word in body["errorMsg"] for word in words), body["errorMsg"]
    assert "Traceback" not in body["errorMsg"]


def png_bytes(path) -> bytes:
    return path.read_bytes()


# ----------------------------------------------------------------------------- input forms


def test_raw_body_equals_the_library(server, library, pages):
    data = png_bytes(pages["page"][0])
    status, _, body = server.post_raw("/detect", data, "image/png")
    assert_success(status, body)
    assert detected_pages(body) == expected_pages(library, data)
    assert len(body["result"]["pages"][0]["dt_polys"]) == len(pages["page"][1])


def test_multipart_upload_equals_the_library(server, library, pages):
    data = png_bytes(pages["receipt"][0])
    status, _, body = server.post_multipart("/detect", {"file": ("receipt.png", data)})
    assert_success(status, body)
    assert detected_pages(body) == expected_pages(library, data)


def test_json_base64_with_settings_equals_the_library(server, library, pages):
    data = png_bytes(pages["dense"][0])
    settings = dict(thresh=0.35, box_thresh=0.5, unclip_ratio=2.0, limit_side_len=640, limit_type="min")
    status, _, body = server.post_json(
        "/detect", {"image": base64.b64encode(data).decode(), "logId": "abc-1", **settings}
    )
    assert_success(status, body)
    assert body["logId"] == "abc-1"
    assert body["result"]["settings"] == settings
    assert detected_pages(body) == expected_pages(library, data, **settings)
    assert detected_pages(body) != expected_pages(library, data)  # the settings really reached the model


def test_query_settings_and_data_url(server, library, pages):
    data = png_bytes(pages["banner"][0])
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    status, _, body = server.post_json("/detect?box_thresh=0.7&unclip_ratio=1.2", {"image": data_url})
    assert_success(status, body)
    assert detected_pages(body) == expected_pages(library, data, box_thresh=0.7, unclip_ratio=1.2)
    # as MIME encoders wrap it (76 columns, LF or CRLF), spaces around it, an upper-case scheme: 400 before
    for wrapped in (
        base64.encodebytes(data).decode(),
        base64.encodebytes(data).decode().replace("\n", "\r\n"),
        "  " + base64.b64encode(data).decode() + "\n",
        "DATA:image/png;base64," + base64.b64encode(data).decode(),
    ):
        status, _, body = server.post_json("/detect", {"image": wrapped})
        assert_success(status, body)
        assert detected_pages(body) == expected_pages(library, data)
    assert_refused(server.post_json("/detect", {"image": "not*base64"}), 400, "not valid base64")


def test_pdf_and_tiff_give_one_entry_per_page(server, library, pages, tmp_path):
    for fmt in ("PDF", "TIFF"):
        # fresh images for each save: Pillow leaves the PDF writer's settings on them
        first, second = (Image.fromarray(cv2.imread(str(pages[name][0]))[:, :, ::-1]) for name in ("page", "receipt"))
        path = tmp_path / f"two_pages.{fmt.lower()}"  # Pillow's TIFF writer wants a real file
        first.save(
            path, save_all=True, append_images=[second], **({"compression": "tiff_lzw"} if fmt == "TIFF" else {})
        )
        data = path.read_bytes()
        status, _, body = server.post_raw("/detect", data, "application/pdf" if fmt == "PDF" else "image/tiff")
        assert_success(status, body)
        assert [page["page_index"] for page in body["result"]["pages"]] == [0, 1]
        assert detected_pages(body) == expected_pages(library, data)


def test_concurrent_requests_equal_the_library(server, library, pages):
    inputs = [png_bytes(path) for path, _ in pages.values()] * 3
    with ThreadPoolExecutor(len(inputs)) as pool:
        answers = list(pool.map(lambda data: server.post_raw("/detect", data, "image/png"), inputs))
    for data, (status, _, body) in zip(inputs, answers):
        assert_success(status, body)
        assert detected_pages(body) == expected_pages(library, data)


def test_an_idle_connection_outlives_a_load_balancers_idle_timeout(server):
    """uvicorn's 5 s keep-alive closed connections a load balancer (AWS ALB: 60 s) was about to reuse: 502s."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for idle_s in (0, 6):
            time.sleep(idle_s)
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        connection.close()


def test_health_models_openapi_and_page(server):
    status, _, body = server.request("GET", "/health")
    assert status == 200 and body["errorMsg"] == "Healthy"
    health = body["result"]
    assert health["model_name"] == "PP-OCRv4_mobile_det" and health["device"] == "cpu"
    assert health["precision"] == "fp32"  # an int8 server is told apart
    assert health["provider"] == "CPUExecutionProvider"
    assert health["inference"] == {"running": 0, "waiting": 0, "max_concurrency": 2, "max_queue": 16}
    assert health["limits"]["max_body_bytes"] == 1024 * 1024 and health["limits"]["allow_urls"] is False

    status, _, body = server.request("GET", "/models")
    assert status == 200 and body["result"]["loaded"] == "PP-OCRv4_mobile_det"
    assert [m["name"] for m in body["result"]["models"] if m["loaded"]] == ["PP-OCRv4_mobile_det"]

    status, _, schema = server.request("GET", "/openapi.json")
    assert status == 200 and {"/detect", "/health", "/models"} <= set(schema["paths"])
    detect_doc = schema["paths"]["/detect"]["post"]
    assert {"multipart/form-data", "application/json", "image/*", "application/pdf"} <= set(
        detect_doc["requestBody"]["content"]
    )
    body_settings = detect_doc["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert body_settings["unclip_ratio"] == {"type": "number", "maximum": 10.0}
    # every setting a request may override is both a query parameter and a JSON key (a key added to
    # REQUEST_SETTINGS alone would pass the unknown-parameter check, then be dropped unbound)
    from detector.serve.detect_request import REQUEST_SETTINGS

    assert {p["name"] for p in detect_doc["parameters"] if p["in"] == "query"} == set(REQUEST_SETTINGS)
    assert set(REQUEST_SETTINGS) <= set(body_settings)
    # answers are described as the envelopes they are, refusals included (not FastAPI's {"detail": …})
    for status in ("400", "413", "422", "503"):
        refusal = detect_doc["responses"][status]["content"]["application/json"]["schema"]
        assert set(refusal["required"]) == {"logId", "errorCode", "errorMsg"}
    success = detect_doc["responses"]["200"]["content"]["application/json"]["schema"]
    assert "dt_polys" in success["properties"]["result"]["properties"]["pages"]["items"]["properties"]

    status, headers, html = server.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and 'id="box_thresh"' in html
    # HEAD where there is a GET (uptime monitors, curl -I): the GET's status and type, no body
    for path, content_type in (("/health", "application/json"), ("/models", "application/json"), ("/", "text/html")):
        status, headers, text = server.request("HEAD", path)
        assert status == 200 and headers["content-type"].startswith(content_type) and text == "", path
    assert "http://" not in html and "https://" not in html  # no CDN: the page works offline


# ----------------------------------------------------------------------------- bad requests


def test_every_bad_request_gets_a_4xx_envelope(server, pages):
    image = png_bytes(pages["receipt"][0])
    b64 = base64.b64encode(image).decode()
    assert_refused(server.request("POST", "/detect", image, {}), 415, "Content-Type")
    assert_refused(server.post_raw("/detect", image, "text/plain"), 415, "text/plain")
    assert_refused(server.post_raw("/detect", b"", "image/png"), 400, "empty")
    assert_refused(server.post_raw("/detect", b"{not json", "application/json"), 400, "not valid JSON")
    assert_refused(server.post_json("/detect", [b64]), 400, "object")
    assert_refused(server.post_json("/detect", {}), 400, "exactly one")
    assert_refused(server.post_json("/detect", {"image": b64, "url": "http://x/a.png"}), 400, "exactly one")
    assert_refused(server.post_json("/detect", {"image": "not base64!"}), 400, "base64")
    assert_refused(server.post_json("/detect", {"image": 12}), 400, "base64 string")
    nested = b"[" * 100_000 + b"]" * 100_000
    assert_refused(server.post_raw("/detect", nested, "application/json"), 400, "nested too deeply")
    assert_refused(server.post_json("/detect", {"image": b64, "colour": 1}), 400, "colour")
    # a setting given twice ran with the last one, silently
    assert_refused(server.post_json("/detect?thresh=0.3&thresh=0.99", {"image": b64}), 400, "thresh more than once")
    twice = b'{"image": "' + b64.encode() + b'", "thresh": 0.3, "thresh": 0.99}'
    assert_refused(server.post_raw("/detect", twice, "application/json"), 400, "gives thresh more than once")
    assert_refused(server.post_json("/detect", {"url": "http://127.0.0.1:9/a.png"}), 403, "--allow-urls")
    # a URL in "image" (as PaddleX's services take one) was "not valid base64"
    assert_refused(server.post_json("/detect", {"image": "https://x/a.png"}), 403, '"image" holds one', "--allow-urls")
    assert_refused(server.post_multipart("/detect", {"image": ("a.png", image)}), 400, "'file'")
    assert_refused(
        server.post_multipart("/detect", {"file": ("a.png", image), "thresh": (None, b"0.3")}), 400, "thresh"
    )
    assert_refused(server.post_multipart("/detect", {"file": ("a.png", b"")}), 400, "empty")
    # a part without filename= is a text field to the multipart parser: said so, not "no file field"
    assert_refused(server.post_multipart("/detect", {"file": (None, image)}), 400, "not a file upload", "filename=")
    assert_refused(server.post_raw("/detect", b"GIF89a but not really", "image/gif"), 422, "not an image")
    assert_refused(server.post_multipart("/detect", {"file": ("notes.png", b"plain text")}), 422, "notes.png")
    assert_refused(server.post_raw("/detect?thresh=2", image, "image/png"), 422, "thresh")
    assert_refused(server.post_raw("/detect?thresh=abc", image, "image/png"), 422, "thresh")
    assert_refused(server.post_raw("/detect?limit_type=diagonal", image, "image/png"), 422, "limit_type")
    assert_refused(server.post_raw("/detect?limit_side_len=0", image, "image/png"), 422, "limit_side_len")
    assert_refused(server.post_raw("/detect?unclip_ratio=inf", image, "image/png"), 422, "finite")
    assert_refused(server.post_raw("/detect?unclip_ratio=1e9", image, "image/png"), 422, "at most 10")
    assert_refused(server.post_json("/detect", {"image": b64, "unclip_ratio": 11}), 422, "at most 10")
    assert_refused(server.post_raw("/detect?boxthresh=0.9", image, "image/png"), 400, "boxthresh")
    assert_refused(server.post_json("/detect", {"image": b64, "limit_side_len": float("nan")}), 422, "finite")
    assert_refused(server.post_json("/detect", {"image": b64, "box_thresh": "high"}), 422, "box_thresh")
    assert_refused(server.post_json("/detect?box_thresh=0.5", {"image": b64, "box_thresh": 0.6}), 400, "box_thresh")
    assert_refused(server.request("GET", "/detect"), 405)
    assert_refused(server.request("GET", "/no-such-page"), 404)
    # numbers no float holds are refused as any bad number is, not answered with a 500
    assert_refused(server.post_raw("/detect?thresh=" + "9" * 400, image, "image/png"), 422, "thresh")
    assert_refused(server.post_raw("/detect?limit_side_len=" + "9" * 310, image, "image/png"), 422, "limit_side_len")
    huge = b'{"image": "' + b64.encode() + b'", "unclip_ratio": ' + b"9" * 400 + b"}"
    assert_refused(server.post_raw("/detect", huge, "application/json"), 422, "unclip_ratio")
    assert_refused(server.post_json("/detect", {"image": b64, "limit_side_len": 1.7e308}), 422, "limit_side_len")
    digits = b'{"image": "' + b64.encode() + b'", "thresh": ' + b"1" * 5000 + b"}"
    assert_refused(server.post_raw("/detect", digits, "application/json"), 400, "not valid JSON")
    # a logId is echoed and logged: one that is not printable ASCII (a lone surrogate, a newline) is refused
    for bad_id in ("\ud800", "a\nINFO: forged line", "x" * 129, 7):
        assert_refused(server.post_json("/detect", {"image": b64, "logId": bad_id}), 400, "logId")
    # the client's logId comes back on refusals found while its body is read, too
    code, _, body = server.post_json("/detect", {"image": b64, "colour": 1, "logId": "client-7"})
    assert code == 400 and body["logId"] == "client-7"
    # a client's text reaches the log escaped: no forged line
    server.post_raw("/detect?%0AINFO:%20forged%20line=1", image, "image/png")
    assert "\nINFO: forged line" not in server.log.read_text() and "\\nINFO: forged line" in server.log.read_text()
    # and so does its path (a terminal escape in an unknown path's 404 line)
    assert server.post_raw("/de%1Btect", image, "image/png")[0] == 404
    assert "/de\x1btect" not in server.log.read_text() and "/de\\x1btect" in server.log.read_text()
    # a malformed multipart body: python-multipart's own warning in the log's format, not a bare line
    malformed = server.post_raw("/detect", b"xxxxxxxx", "multipart/form-data; boundary=zz")
    assert malformed[0] == 400
    said = [line for line in server.log.read_text().splitlines() if "Expected boundary character" in line]
    assert said and all(line.startswith(("WARNING:", "ERROR:")) for line in said), said
    # the server is still healthy and idle after all of that
    assert server.request("GET", "/health")[2]["result"]["inference"]["running"] == 0
    assert "unexpected error" not in server.log.read_text()


def test_a_request_http_cannot_parse_gets_an_envelope(server):
    """A malformed request line or header, or a head past h11's 16 KiB, was answered by uvicorn in plain text
    ("Invalid HTTP request received."): the one refusal that was no envelope, with no logId and no log line."""
    head_too_long = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"x" * 20_000  # still unfinished
    for request, status, words in (
        (b"NOT A REQUEST\r\n\r\n", 400, "illegal request line"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400, "illegal header line"),
        (head_too_long, 431, "malformed HTTP request"),
    ):
        code, headers, body = parsed_answer(raw_exchange(server.port, request))
        assert code == status and headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert body["errorCode"] == status and body["logId"] and words in body["errorMsg"], body
        assert f"-> {status} ({body['logId']}): malformed HTTP request" in server.log.read_text()


def test_a_clients_long_values_are_quoted_back_cut_short_in_the_answer_and_the_log(server, pages):
    """A refusal quotes what the client sent: a 600-kB string or 20,000 unknown keys came back whole, and
    became one log line of that size."""
    b64 = base64.b64encode(png_bytes(pages["receipt"][0])).decode()
    long_value = {"image": b64, "limit_type": "diagonal" * 75_000, "logId": "long-value"}
    many_keys = {"image": b64, "logId": "many-keys", **{f"key{index}": 1 for index in range(20_000)}}
    for body, status, said in ((long_value, 422, "limit_type must be one of"), (many_keys, 400, "unknown JSON key")):
        code, _, answer = server.post_json("/detect", body)
        assert code == status and said in answer["errorMsg"], answer["errorMsg"][:200]
        assert len(answer["errorMsg"]) < 1100, len(answer["errorMsg"])
        lines = [line for line in server.log.read_text().splitlines() if f"({body['logId']})" in line]
        assert len(lines) == 1 and len(lines[0]) < 1200, [len(line) for line in lines]
    # the end of a long message (what to send instead) survives the cut
    assert "accepted: image, url, logId" in answer["errorMsg"] and "characters left out" in answer["errorMsg"]


def test_a_client_that_hangs_up_during_its_upload_is_a_499_line_not_an_error(server):
    for content_type in ("application/octet-stream", "application/json"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            head = (
                f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 1000000\r\n\r\n"
            )
            client.sendall(head.encode() + b"0" * 100_000)
    deadline = time.monotonic() + 10
    while server.log.read_text().count("left during its upload") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log.read_text()
    assert log.count("the client left during its upload -> 499") == 2, log
    assert "unexpected error" not in log and "Traceback" not in log
    assert server.request("GET", "/health")[0] == 200


def test_a_warning_is_logged_once(server):
    # the command line's echo of the package's warnings gives way to the service's log format
    wide = cv2.imencode(".png", np.full((100, 6000, 3), 255, np.uint8))[1].tobytes()
    assert server.post_raw("/detect?limit_type=min&limit_side_len=100", wide, "image/png")[0] == 200
    assert [line for line in server.log.read_text().splitlines() if "exceeds max_side_limit" in line] == [
        "WARNING:  <request body>: resized image 6000x100 exceeds max_side_limit 4000; shrinking to fit"
    ]


def test_body_size_and_pixel_limits(server):
    too_big = b"\x89PNG" + bytes(1024 * 1024 + 100)
    refused = server.post_raw("/detect", too_big, "image/png")
    assert_refused(refused, 413, "--max-body-mb")
    # refused by its Content-Length, before any of it is read: logged like every refusal, with the logId sent
    assert f"POST /detect -> 413 ({refused[2]['logId']}): " in server.log.read_text()
    # without Content-Length (chunked), the limit holds while the body is read
    chunks = (too_big[i : i + 65536] for i in range(0, len(too_big), 65536))
    assert_refused(server.request("POST", "/detect", chunks, {"Content-Type": "image/png"}), 413, "limit")
    # a client that asks first (Expect: 100-continue, as curl does above 1 MiB) gets the 413 in place of the
    # "100 Continue" that invited the whole body before (25 MB uploaded, then refused)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(
            b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 25000000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = raw.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413 "), answer[:40]
    # 2100 x 2000 = 4.2 megapixels, above --max-pixels 4000000, while the PNG itself is small
    _ok, png = cv2.imencode(".png", np.full((2000, 2100, 3), 255, np.uint8))
    assert_refused(server.post_raw("/detect", png.tobytes(), "image/png"), 413, "4,200,000 pixels")


def detect_answered_with_health_asked_meanwhile(app, request, reached, health_answered, health_timeout_s):
    """``request`` (raw bytes) sent to ``app``; once ``reached`` is set (the step under test has begun and waits for
    ``health_answered``), /health must answer 200 within ``health_timeout_s``; then the detect answer must be a
    success. A step held on the event loop keeps /health from answering: the health request times out."""
    with serving_in_this_process(app) as server, ThreadPoolExecutor(1) as pool:
        detecting = pool.submit(raw_exchange, server.config.port, request)
        try:
            assert reached.wait(60)
            health = http.client.HTTPConnection("127.0.0.1", server.config.port, timeout=health_timeout_s)
            health.request("GET", "/health")
            assert health.getresponse().status == 200
            health.close()
        finally:
            health_answered.set()
        status, _, body = parsed_answer(detecting.result(timeout=60))
    assert_success(status, body)


def test_an_answer_is_made_off_the_event_loop(default_onnx, pages, monkeypatch):
    """The JSON of an answer was made on the event loop: an 80-page TIFF of 1,000 boxes a page (5 MB of JSON) held
    every other request, /health included, for a quarter of a second. Here the answer's JSON waits for a /health
    answer, which an event loop busy making it could never give."""
    import json

    from detector.serve.app import create_app
    from detector.serve.config import ServeConfig

    answering, health_answered = threading.Event(), threading.Event()
    dumps = json.dumps

    def dumps_once_health_is_answered(value, **options):
        if isinstance(value, dict) and ("dt_polys" in value or "pages" in (value.get("result") or {})):
            answering.set()
            assert health_answered.wait(60), "no /health answer while a /detect answer was being made"
        return dumps(value, **options)

    monkeypatch.setattr(json, "dumps", dumps_once_health_is_answered)
    data = png_bytes(pages["receipt"][0])
    head = f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(data)}\r\n"
    request = (head + "Connection: close\r\n\r\n").encode() + data
    app = create_app(ServeConfig(model_dir=str(default_onnx), device="cpu"))
    detect_answered_with_health_asked_meanwhile(app, request, answering, health_answered, health_timeout_s=30)


def test_a_json_body_is_read_off_the_event_loop(library, pages, monkeypatch):
    """A JSON body was parsed and its base64 decoded on the event loop: a 19.6-MB body held every other request,
    /health included, 0.16 s. Here the decoding waits for a /health answer, which a busy event loop never gives."""
    from detector.serve import detect_request
    from detector.serve.app import create_app
    from detector.serve.config import ServeConfig

    decoding, health_answered = threading.Event(), threading.Event()
    decode = detect_request.decode_base64_image

    def decode_once_health_is_answered(value):
        decoding.set()
        assert health_answered.wait(10), "no /health answer while a JSON body was being decoded"
        return decode(value)

    monkeypatch.setattr(detect_request, "decode_base64_image", decode_once_health_is_answered)
    data = b'{"image": "%s"}' % base64.b64encode(png_bytes(pages["receipt"][0]))
    head = f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    request = (head + "Connection: close\r\n\r\n").encode() + data
    app = create_app(ServeConfig(), library)
    detect_answered_with_health_asked_meanwhile(app, request, decoding, health_answered, health_timeout_s=5)


def test_base64_decoded_in_pieces_is_decoded_as_a_whole(monkeypatch):
    """JSON base64 is decoded a piece at a time (one binascii call holds the GIL throughout: one for a 19.6-MB body
    stood the event loop still 0.09 s): with pieces of 8 characters, every text gives the bytes, or the error, that
    decoding it whole gave, line breaks across a piece's end and padding before the end included."""
    import binascii

    from detector.serve import detect_request

    monkeypatch.setattr(detect_request, "BASE64_PIECE_CHARS", 8)
    data = bytes(range(256)) * 3
    encoded = base64.b64encode(data).decode()
    texts = [encoded, base64.encodebytes(data).decode(), " ".join(encoded[i : i + 3] for i in range(0, 60, 3))]
    texts += [
        encoded[:-1],
        encoded[:20] + "==" + encoded[20:],
        encoded[:30] + "*" + encoded[30:],
        "QUFBQQ==QUFB",
        "é" * 9,
    ]

    def decoded(decode, text):
        try:
            return decode(text)
        except (binascii.Error, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"

    for text in texts:
        whole = decoded(lambda text: base64.b64decode("".join(text.split()), validate=True), text)
        assert decoded(detect_request.decoded_in_pieces, text) == whole, text
    assert detect_request.decoded_in_pieces(texts[1]) == data


def test_an_answer_made_a_page_at_a_time_is_the_json_of_the_whole():
    """detect_answer encodes each page apart (json.dumps holds the GIL throughout: one call for a 5-MB answer stood
    the event loop still); its bytes are JSONResponse's for the whole envelope."""
    from starlette.responses import JSONResponse

    from detector.serve.envelope import detect_answer, envelope

    result = {"model_name": "m", "settings": {"thresh": 0.3, "limit_type": "max"}, "time_ms": 1.5}
    page = {"page_index": None, "width": 3, "height": 2, "dt_polys": [[[0, 1], [2, 1], [2, 2], [0, 2]]]}
    for pages in ([], [{**page, "dt_scores": [0.25]}], [{**page, "page_index": index} for index in range(3)]):
        whole = JSONResponse(envelope("ü-1", 200, "Success", {**result, "pages": pages})).body
        assert detect_answer("ü-1", result, pages) == whole


# ----------------------------------------------------------------------------- connections: stalls, half-closes


@pytest.fixture(scope="module")
def impatient_server(default_onnx, tmp_path_factory):
    # 2 s: short for the tests, long beside any pause of a loaded machine's event loop
    options = ("--timeout-stall", "2", "--timeout-keep-alive", "2", "--timeout-body", "45")
    with running_server(default_onnx, tmp_path_factory.mktemp("serve_logs"), *options) as running:
        yield running


def multipart_head(boundary: str, length: int) -> bytes:
    return (
        f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_that_stops_arriving_is_a_408_that_closes_the_connection(impatient_server, pages):
    """uvicorn has no read timeout: a body sent short of its Content-Length (a client's bug, a stalled upload)
    held its connection, and the handler waiting on the rest, for good."""
    data = png_bytes(pages["receipt"][0])
    declared = len(data) + 1000
    raw_head = f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {declared}\r\n\r\n"
    part = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + data[:1000]
    asked_first = raw_head.replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n")  # then sends nothing
    for request in (raw_head.encode() + data, multipart_head("zz", 50_000) + part, asked_first.encode()):
        raw = raw_exchange(impatient_server.port, request)  # socket.timeout before: the server never answered
        status, headers, body = parsed_answer(raw.split(b"HTTP/1.1 100 Continue\r\n\r\n")[-1])
        assert status == 408 and headers["connection"] == "close", raw[:200]
        assert body["errorCode"] == 408 and "--timeout-stall" in body["errorMsg"] and body["logId"]
        assert f"POST /detect -> 408 ({body['logId']}): " in impatient_server.log.read_text()
    # a whole body is answered as ever
    status, _, body = impatient_server.post_raw("/detect", data, "image/png")
    assert_success(status, body)
    limits = impatient_server.request("GET", "/health")[2]["result"]["limits"]
    assert (limits["stall_timeout_s"], limits["body_timeout_s"]) == (2, 45)
    assert "unexpected error" not in impatient_server.log.read_text()


def test_a_body_still_arriving_at_its_deadline_is_a_408(library):
    """--timeout-stall lets go of a body that stops, not of one that keeps coming a byte now and then: a 15-MB upload
    at a byte a second held its connection and what it had sent for days. A body must be whole within --timeout-body
    of its request's head; here 0.3 s, with a byte every 0.05 s."""
    from detector.serve.app import create_app
    from detector.serve.config import ServeConfig

    app = create_app(ServeConfig(stall_timeout_s=30, body_timeout_s=0.3), library)
    head = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    with serving_in_this_process(app) as server, socket.create_connection(("127.0.0.1", server.config.port)) as client:
        client.sendall(head)
        answer = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(1000):  # 50 s: the body was read to its end before, and answered
                client.sendall(b"x")
                if select.select([client], [], [], 0.05)[0]:
                    chunk = client.recv(65536)
                    answer += chunk
                    if not chunk:
                        break
        assert answer, "no answer while the body kept coming"
        status, headers, body = parsed_answer(answer)
    assert status == 408 and headers["connection"] == "close", answer
    assert body["errorCode"] == 408 and "--timeout-body" in body["errorMsg"] and body["logId"]


def closed_after_sending(client: socket.socket, data: bytes, pause_s: float = 0.2) -> bool:
    """Whether the server has closed ``client``'s connection, once ``data`` is sent and ``pause_s`` has passed."""
    try:
        client.sendall(data)
        time.sleep(pause_s)
        return client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # open, nothing to read
        return False
    except (BrokenPipeError, ConnectionResetError):
        return True


def test_a_connection_that_never_completes_a_request_head_is_closed(impatient_server):
    """uvicorn starts no timer before a connection's first answer, and stops its keep-alive timer at a request's
    first byte: a connection that sent nothing, or part of a request head (slowloris), was held for good."""
    for request in (b"", b"POST /detect HTTP/1.1\r\nHost: x\r\n"):
        assert raw_exchange(impatient_server.port, request) == b""  # closed; socket.timeout before
    # a byte now and then does not put off the head's deadline
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=60) as client:
        trickled = b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"x" * 200  # 48 s at a byte per 0.2 s
        assert any(closed_after_sending(client, trickled[index : index + 1]) for index in range(len(trickled)))
    # a whole request is answered as ever, and its connection kept alive for the next
    connection = http.client.HTTPConnection("127.0.0.1", impatient_server.port, timeout=30)
    try:
        for _ in range(2):
            connection.request("GET", "/health")
            assert connection.getresponse().read() and connection.sock is not None
    finally:
        connection.close()


def test_a_client_that_takes_none_of_its_answer_is_let_go(default_onnx, monkeypatch):
    """uvicorn has no send timeout: a client that stopped reading held its connection, and the part of a 5-MB answer
    the kernel would not take, for good (past keep-alive; a graceful stop waited for it all of --timeout). Here a
    made-up answer of 300 pages of 1,000 boxes (~14 MB, no inference) is asked for by a client that reads none of it:
    its connection is aborted once it has taken nothing for the stall timeout. A client that reads gets it all."""
    from detector.serve import app as serve_app
    from detector.serve.config import ServeConfig
    from detector.serve.connection import serve_protocol

    box = [[1000, 2000], [3000, 2000], [3000, 2100], [1000, 2100]]
    page = {"page_index": 0, "width": 4000, "height": 4000, "dt_polys": [box] * 1000, "dt_scores": [0.75] * 1000}
    monkeypatch.setattr(serve_app, "detect_pages", lambda *args: [{**page, "time_ms": 1.0}] * 300)
    app = serve_app.create_app(ServeConfig(model_dir=str(default_onnx), device="cpu"))
    request = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 4\r\n\r\nnone"
    with serving_in_this_process(app, http=serve_protocol(stall_timeout_s=1)) as server:
        whole = raw_exchange(server.config.port, request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        status, _, body = parsed_answer(whole)
        assert status == 200 and len(body["result"]["pages"]) == 300
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", server.config.port))
            client.sendall(request)
            deadline = time.monotonic() + 30
            while not server.server_state.connections and time.monotonic() < deadline:  # the request arrives
                time.sleep(0.05)
            while server.server_state.connections and time.monotonic() < deadline:  # held for good before
                time.sleep(0.1)
            assert not server.server_state.connections, "the connection of a client that reads nothing is still open"
            client.settimeout(30)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := client.recv(1 << 20):
                    received += chunk
        assert len(received) < len(whole) // 2  # the kernel's buffers at most: the rest was never sent


def test_a_client_that_half_closes_after_its_last_request_gets_the_answer(impatient_server, library, pages, large_page):
    """A client whose request says it sends no more (Connection: close, HTTP/1.0) may shut its write side then and
    read the answer (Jetty's HttpClient does; RFC 9112 9.6: that does not mean it lost interest). uvicorn closed
    the connection at that end of input: the answer, a fast one too, was lost without a log line."""
    for data, version in ((png_bytes(pages["receipt"][0]), "HTTP/1.0"), (large_page, "HTTP/1.1")):
        head = f"POST /detect {version}\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(data)}\r\n"
        if version == "HTTP/1.1":
            head += "Connection: close\r\n"
        raw = raw_exchange(impatient_server.port, (head + "\r\n").encode() + data, half_close=True)
        assert raw, f"{version}: the connection was closed without an answer"
        status, _, body = parsed_answer(raw)
        assert_success(status, body)
        assert detected_pages(body) == expected_pages(library, data)
    # a keep-alive request's end of input is a client that left, as before: its queued inference is dropped
    # (test_requests_whose_clients_left_are_dropped_from_the_queue)


# ----------------------------------------------------------------------------- overload, URLs, timeout, shutdown


@pytest.fixture(scope="module")
def large_page():
    image, _ = render_text_image(
        [f"row {i}: a long line of text to find and box" for i in range(30)], width=2000, font_size=40, line_gap=24
    )
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.fixture(scope="module")
def single_slot_server(default_onnx, tmp_path_factory):
    with running_server(
        default_onnx,
        tmp_path_factory.mktemp("serve_logs"),
        "--max-concurrency",
        "1",
        "--max-queue",
        "0",
        "--allow-urls",
    ) as running:
        yield running


def test_overload_answers_503_with_retry_after_and_serves_the_rest(single_slot_server, library, large_page):
    clients = 6
    barrier = threading.Barrier(clients)

    def send(_):
        barrier.wait()
        return single_slot_server.post_raw("/detect?limit_side_len=1600", large_page, "image/png")

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(send, range(clients)))
    refused = [answer for answer in answers if answer[0] == 503]
    served = [answer for answer in answers if answer[0] != 503]
    assert refused and served
    for _status, headers, body in refused:
        assert int(headers["retry-after"]) >= 1 and "busy" in body["errorMsg"] and body["errorCode"] == 503
    expected = expected_pages(library, large_page, limit_side_len=1600)
    for status, _, body in served:
        assert_success(status, body)
        assert detected_pages(body) == expected
    assert single_slot_server.request("GET", "/health")[2]["result"]["inference"]["waiting"] == 0


def test_a_full_server_refuses_before_reading_the_body(single_slot_server, library, large_page):
    """Room in the queue was looked at once the body was read: with the one place busy, twenty 15-MB uploads, all
    answered 503, took the worker from 355 to 793 MB resident. It is looked at first now: a client that asks
    before sending (Expect: 100-continue, as curl does above 1 MiB) is told 503 where it was invited to send."""

    def running() -> int:
        return single_slot_server.request("GET", "/health")[2]["result"]["inference"]["running"]

    with ThreadPoolExecutor(1) as pool:
        slow = "/detect?limit_type=min&limit_side_len=4000"  # seconds of inference: the one place is taken
        busy = pool.submit(single_slot_server.post_raw, slow, large_page, "image/png")
        while running() == 0:
            time.sleep(0.02)
        head = "POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 15000000\r\n"
        with socket.create_connection(("127.0.0.1", single_slot_server.port), timeout=30) as client:
            client.sendall((head + "Expect: 100-continue\r\n\r\n").encode())
            answer = client.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:40]  # "HTTP/1.1 100 Continue" before
            while not answer.endswith(b"}"):  # the rest of the envelope
                answer += client.recv(65536)
        _, headers, refusal = parsed_answer(answer)
        assert int(headers["retry-after"]) >= 1 and "--max-queue" in refusal["errorMsg"]
        status, _, body = busy.result(timeout=120)
    assert_success(status, body)
    assert detected_pages(body) == expected_pages(library, large_page, limit_type="min", limit_side_len=4000)


def test_retry_after_counts_the_time_an_inference_has_been_running():
    from detector.serve.limits import InferenceGate, Overloaded

    gate = InferenceGate(max_concurrency=1, max_queue=0)
    release = threading.Event()

    async def refuse_while_one_runs() -> Overloaded:
        running = asyncio.ensure_future(gate.run(lambda cancelled: release.wait(30), 60))
        while gate.snapshot()["running"] == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.2)  # no inference has ended yet: the mean of finished ones is still 0
        try:
            await gate.run(lambda cancelled: None, 60)
        except Overloaded as refused:
            return refused
        finally:
            release.set()
            await running
        raise AssertionError("a second inference was admitted past max_concurrency=1, max_queue=0")

    try:
        assert asyncio.run(refuse_while_one_runs()).retry_after_s >= 2
    finally:
        gate.shutdown()


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):  # http.server names its handlers so
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


class _TricklingImageHandler(_ImageHandler):
    """A slow origin: announces 1000 bytes, sends one every 0.2 s for 2 s, then hangs up."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(10):
            self.wfile.write(b"\0")
            self.wfile.flush()
            time.sleep(0.2)


def test_a_slow_url_origin_holds_no_inference_slot(single_slot_server, pages):
    """The fetch ran inside the inference slot: with one slot (and no queue), every image sent while a slow
    origin trickled its body was refused (503); the fetch runs before the queue now."""
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TricklingImageHandler)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{origin.server_address[1]}/slow.png"
        with ThreadPoolExecutor(1) as pool:
            fetching = pool.submit(single_slot_server.post_json, "/detect", {"url": url})
            time.sleep(0.8)  # the origin is mid-body
            status, _, body = single_slot_server.post_raw("/detect", png_bytes(pages["receipt"][0]), "image/png")
            assert_success(status, body)
            assert fetching.result(timeout=60)[0] == 502  # the body cut short: the origin failed, not the client
    finally:
        origin.shutdown()
        origin.server_close()


class _HeldOriginHandler(_ImageHandler):
    """An origin that answers nothing until the test lets it (``release``), then 404."""

    release = threading.Event()

    def do_GET(self):
        self.release.wait(timeout=30)
        self.send_error(404)


def test_slow_url_origins_hold_up_no_other_url_and_past_the_most_fetches_a_503(single_slot_server, pages):
    """URL fetches ran on the event loop's shared pool (6 threads on 2 cores): a few slow origins made every
    other URL wait for a thread, then fetch for its whole timeout on top. Now each fetch has a thread of its
    own up to max_url_fetches (16), and one past that is refused at once."""
    held = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HeldOriginHandler)
    fast = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Handler", (_ImageHandler,), {"payload": png_bytes(pages["receipt"][0])})
    )
    for origin in (held, fast):
        threading.Thread(target=origin.serve_forever, daemon=True).start()
    slow_url = f"http://127.0.0.1:{held.server_address[1]}/held.png"

    def fetching_now() -> int:
        return single_slot_server.request("GET", "/health")[2]["result"]["url_fetches"]["running"]

    def wait_for_fetches(count: int) -> None:
        deadline = time.monotonic() + 20
        while fetching_now() != count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fetching_now() == count

    try:
        with ThreadPoolExecutor(16) as pool:
            slow = [pool.submit(single_slot_server.post_json, "/detect", {"url": slow_url}) for _ in range(8)]
            wait_for_fetches(8)
            answer = single_slot_server.post_json(
                "/detect", {"url": f"http://127.0.0.1:{fast.server_address[1]}/a.png"}
            )
            assert_success(*answer[::2])
            assert not any(request.done() for request in slow)  # answered while eight slow fetches go on
            slow += [pool.submit(single_slot_server.post_json, "/detect", {"url": slow_url}) for _ in range(8)]
            wait_for_fetches(16)
            refused = single_slot_server.post_json("/detect", {"url": slow_url})
            assert_refused(refused, 503, "16 image URLs are being fetched")
            assert refused[1]["retry-after"] == "2"
            _HeldOriginHandler.release.set()
            assert [request.result(timeout=60)[0] for request in slow] == [422] * 16  # the origin's 404
        wait_for_fetches(0)
    finally:
        _HeldOriginHandler.release.set()
        for origin in (held, fast):
            origin.shutdown()
            origin.server_close()


def test_url_input_when_allowed(single_slot_server, library, pages):
    data = png_bytes(pages["receipt"][0])
    handler = type("Handler", (_ImageHandler,), {"payload": data})
    image_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=image_server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{image_server.server_address[1]}/receipt.png"
        status, _, body = single_slot_server.post_json("/detect", {"url": url})
        assert_success(status, body)
        assert detected_pages(body) == expected_pages(library, data)
        # in "image", as PaddleX's services take it, and with its scheme in capitals (RFC 3986: any case)
        for image in (url, "HTTP" + url[4:]):
            status, _, body = single_slot_server.post_json("/detect", {"image": image})
            assert_success(status, body)
            assert detected_pages(body) == expected_pages(library, data)
        assert_refused(single_slot_server.post_json("/detect", {"url": "ftp://example/a.png"}), 400, "http(s)")
        closed = f"http://127.0.0.1:{image_server.server_address[1]}/gone.png"
        image_server.shutdown()
        image_server.server_close()
        # the image's server down: 502, which a client or balancer retries, where a 4xx says "do not"
        assert_refused(single_slot_server.post_json("/detect", {"url": closed}), 502, "cannot fetch")
    finally:
        image_server.shutdown()
        image_server.server_close()


def test_request_timeout_is_a_503_and_the_server_recovers(default_onnx, tmp_path, large_page):
    # 1 ms is far below any inference of a 2000-pixel page (decoding alone takes longer)
    with running_server(default_onnx, tmp_path, "--timeout", "0.001") as server:
        status, headers, body = server.post_raw("/detect", large_page, "image/png")
        assert status == 503 and "--timeout" in body["errorMsg"] and int(headers["retry-after"]) >= 1
        assert server.request("GET", "/health")[0] == 200
    # one worker, one inference at a time on every core: the threads spin within a run
    assert "sleep between operators" not in server.log.read_text()


def test_sigterm_finishes_the_request_in_flight_and_exits_0(default_onnx, tmp_path, library, large_page):
    with running_server(default_onnx, tmp_path) as server:
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(server.post_raw, "/detect", large_page, "image/png")
            while not in_flight.done() and server.request("GET", "/health")[2]["result"]["inference"]["running"] == 0:
                pass
            assert server.stop() == 0
            status, _, body = in_flight.result()
        assert_success(status, body)
        assert detected_pages(body) == expected_pages(library, large_page)
        assert "Traceback" not in server.log.read_text()


def test_sigterm_does_not_wait_for_an_inference_past_the_timeout(default_onnx, tmp_path, large_page):
    # the page enlarged to a 4000-pixel network input takes the network ~3 s on one thread: past a 1 s --timeout
    with running_server(default_onnx, tmp_path, "--timeout", "1", "--cpu-threads", "1") as server:
        status, _, body = server.post_raw("/detect?limit_type=min&limit_side_len=4000", large_page, "image/png")
        assert status == 503 and "--timeout" in body["errorMsg"]
        assert server.request("GET", "/health")[2]["result"]["inference"]["running"] == 1  # still at it
        assert server.stop() == 0
    assert "exiting with 1 inference(s) still running past --timeout" in server.log.read_text()


def test_requests_whose_clients_left_are_dropped_from_the_queue(default_onnx, tmp_path, large_page):
    slow = "/detect?limit_type=min&limit_side_len=4000"  # ~3 s on one thread
    options = ("--max-concurrency", "1", "--max-queue", "4", "--cpu-threads", "1", "--timeout", "60")
    with running_server(default_onnx, tmp_path, *options) as server:

        def inference() -> dict:
            return server.request("GET", "/health")[2]["result"]["inference"]

        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(server.post_raw, slow, large_page, "image/png")
            while inference()["running"] == 0:
                time.sleep(0.02)
            head = f"POST {slow} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            request = (head + f"Content-Length: {len(large_page)}\r\n\r\n").encode() + large_page
            leaving = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
            for connection in leaving:
                connection.sendall(request)
            while inference()["waiting"] < 3:  # queued behind the running one
                time.sleep(0.02)
            for connection in leaving:
                connection.close()
            deadline = time.monotonic() + 2.0
            while inference()["waiting"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (inference()["running"], inference()["waiting"]) == (1, 0)  # the slow one runs on
            status, _, body = in_flight.result()
            assert_success(status, body)
        assert inference()["running"] == 0  # none of the three ran after it
        assert server.log.read_text().count("the client left before its answer") == 3


def test_serve_command_errors_are_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "detector.cli", "serve", "--model", str(tmp_path / "none.onnx")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("detect serve: error:") and "Traceback" not in proc.stderr


def test_two_workers_each_load_the_model_and_stop_on_sigterm(default_onnx, tmp_path, library, pages):
    data = png_bytes(pages["receipt"][0])
    with running_server(default_onnx, tmp_path, "--workers", "2") as server:
        for _ in range(3):
            status, _, body = server.post_raw("/detect", data, "image/png")
            assert_success(status, body)
            assert detected_pages(body) == expected_pages(library, data)
        assert server.stop() == 0
    log = server.log.read_text()
    assert log.count("Application startup complete") == 2
    # two workers each on every core ask for more threads than there are cores
    assert "onnxruntime's threads sleep between operators instead of spinning" in log


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_ends_detect_serve_with_130(default_onnx, monkeypatch, capsys, workers):
    """Ctrl-C stops uvicorn as SIGTERM does, and uvicorn then returns as from a requested stop: its --workers
    supervisor keeps the signal; a single server raises it again, with the handler it found, once stopped, and
    uvicorn.run (0.39, 0.55) swallows the KeyboardInterrupt. `detect serve` exited 0, where the command line's Ctrl-C
    is 130. uvicorn is played here by a function that takes two SIGINTs (a forced stop) in each of its two ways, the
    single server's on an event loop that has the signal wakeup file to itself meanwhile, as uvloop's has."""
    import uvicorn

    from detector.cli import main
    from detector.serve import app as serve_app  # imported before load_detector is replaced: it binds the name
    from detector.serve.config import CONFIG_ENV_VAR

    def stopped_by_two_ctrl_cs(app, **options):
        supervisor = options.get("workers", 1) > 1
        wakeup_file = None if supervisor else signal.set_wakeup_fd(-1)
        taken = []
        found = signal.signal(signal.SIGINT, lambda signum, frame: taken.append(signum))
        for _ in range(2):
            signal.raise_signal(signal.SIGINT)
        assert taken == [signal.SIGINT] * 2
        if supervisor:  # its handler stays, the signals are spent
            return
        signal.signal(signal.SIGINT, found)
        with contextlib.suppress(KeyboardInterrupt):
            for signum in reversed(taken):
                signal.raise_signal(signum)
        signal.set_wakeup_fd(wakeup_file)

    monkeypatch.setattr(uvicorn, "run", stopped_by_two_ctrl_cs)
    monkeypatch.setattr("detector.serve.inference.load_detector", lambda config: "a detector")
    monkeypatch.setattr(serve_app, "create_app", lambda config, detector: "an app")
    monkeypatch.setattr("detector.serve.worker.log_beside_uvicorn", lambda level: None)
    monkeypatch.setenv(CONFIG_ENV_VAR, "")  # the command sets it for its workers: put back after the test
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as ended:
            main(["serve", "--model", str(default_onnx), "--device", "cpu", "--workers", str(workers)])
    finally:
        for signum, handler in handlers.items():  # main's and the command's: not this process's
            signal.signal(signum, handler)
    assert ended.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "detect serve: interrupted"


@pytest.mark.parametrize("older_uvicorn", [False, True])
def test_a_worker_that_cannot_load_the_model_stops_the_server_with_its_reason(
    default_onnx, tmp_path, monkeypatch, caplog, older_uvicorn
):
    """--workers N: each worker loads the model anew. One that could not (here: the file removed after the command
    loaded it) ended in a traceback, and uvicorn's supervisor started another, and another, for good (the port
    open, nothing answering). Now it says why in one line and exits with uvicorn's startup-failure status, on
    which the supervisor stops the server, and the command exits 2 with that line (uvicorn returned as from a
    requested stop: exit 0). uvicorn's supervisor is played here by a function that starts one worker in this
    process, once the model is gone."""
    import logging
    import shutil

    import uvicorn
    from click.testing import CliRunner
    from uvicorn.config import STARTUP_FAILURE

    from detector.cli import cli
    from detector.serve import worker as serve_worker
    from detector.serve.config import CONFIG_ENV_VAR

    model = tmp_path / "inference.onnx"
    shutil.copy(default_onnx, model)
    worker_exits = []

    def supervise(app, **options):
        assert options["workers"] == 2 and options["factory"]
        model.unlink()
        try:
            serve_worker.app_from_environment()
        except SystemExit as ended:
            worker_exits.append(ended.code)

    if older_uvicorn:  # before 0.50 (Python 3.9 gets 0.39): no such constant; importing it failed every worker
        monkeypatch.delattr(uvicorn.config, "STARTUP_FAILURE")
    monkeypatch.setenv(CONFIG_ENV_VAR, "")  # the command sets it for its workers: put back after the test
    monkeypatch.setattr(uvicorn, "run", supervise)
    monkeypatch.setattr(serve_worker, "log_beside_uvicorn", lambda level=logging.INFO: None)
    monkeypatch.setattr("signal.signal", lambda *args: None)  # the command's SIGTERM handler: not this process's
    caplog.set_level(logging.INFO, logger="detector.serve")
    result = CliRunner().invoke(cli, ["serve", "--model", str(model), "--workers", "2"])
    assert worker_exits == [STARTUP_FAILURE]
    said = [record for record in caplog.records if "a worker could not load the model" in record.getMessage()]
    assert len(said) == 1 and not said[0].exc_info and "does not exist" in said[0].getMessage()  # no traceback
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("detect serve: error: a worker could not load the model")


def test_serve_loads_the_precision_variant_asked_for(default_onnx, tmp_path, monkeypatch):
    """`detect serve --precision int8`: /health reports the precision, but only a variant's file path served it."""
    import shutil

    import uvicorn
    from click.testing import CliRunner

    from detector.cli import cli

    shutil.copy(default_onnx, tmp_path / "inference.onnx")
    shutil.copy(default_onnx, tmp_path / "inference.int8.onnx")  # the name alone says int8: enough here
    served = []
    monkeypatch.setattr("detector.serve.app.create_app", lambda config, detector: detector)
    monkeypatch.setattr("detector.serve.worker.log_beside_uvicorn", lambda level: None)
    monkeypatch.setattr("signal.signal", lambda *args: None)  # the command's SIGTERM handler: not this process's
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(app))
    result = CliRunner().invoke(cli, ["serve", "--model-dir", str(tmp_path), "--precision", "int8"])
    assert result.exit_code == 0, result.output
    (detector,) = served
    assert detector.precision == "int8" and detector.model_path == tmp_path / "inference.int8.onnx"
    missing = CliRunner().invoke(cli, ["serve", "--model-dir", str(tmp_path), "--precision", "fp16"])
    assert missing.exit_code == 2 and "no fp16 variant" in missing.output
