"""The server's edges: text encodings, Host and Origin checks, request framing, slow and idle
clients, the buffered-bytes budget and 16-bit images."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from smner.data.images import load_image_bytes
from smner.predict.predictor import Predictor
from smner.serve.app import create_app
from smner.serve.middleware import _host_name
from smner.serve.protocol import guarded_protocol
from smner.serve.settings import ServeSettings

POST = "George visited Paris"


@pytest.fixture(scope="module")
def tiny_client(tiny_predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_predictor), raise_server_exceptions=False) as c:
        yield c


def multipart(text: bytes) -> tuple[bytes, dict[str, str]]:
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="text"\r\n\r\n'
        + text
        + b"\r\n--b0undary--\r\n"
    )
    return body, {"content-type": "multipart/form-data; boundary=b0undary"}


# --- one rule for text encodings -------------------------------------------------------------


def test_invalid_utf8_is_422_in_json_multipart_and_urlencoded(tiny_client: TestClient) -> None:
    bad = "Café".encode("latin-1")  # one invalid byte
    body, headers = multipart(bad)
    assert tiny_client.post("/v1/predict", content=body, headers=headers).status_code == 422
    form = {"content-type": "application/x-www-form-urlencoded"}
    for raw in (b"text=Caf%E9", b"text=Caf\xe9"):
        assert tiny_client.post("/v1/predict", content=raw, headers=form).status_code == 422, raw
    as_json = {"content-type": "application/json"}
    latin1_json = b'{"text": "Caf\xe9"}'
    assert tiny_client.post("/v1/predict", content=latin1_json, headers=as_json).status_code == 422


def test_valid_utf8_is_read_alike_in_all_three(tiny_client: TestClient) -> None:
    text = "Café George 😀"
    body, headers = multipart(text.encode("utf-8"))
    answers = [
        tiny_client.post("/v1/predict", content=body, headers=headers),
        tiny_client.post("/v1/predict", data={"text": text}),
        tiny_client.post("/v1/predict", json={"text": text}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({tuple(a.json()["tokens"]) for a in answers}) == 1
    assert answers[0].json()["tokens"][0] == "Café"


def test_lone_surrogate_in_json_is_422(tiny_client: TestClient) -> None:
    body, headers = b'{"text": "\\ud800 George"}', {"content-type": "application/json"}
    response = tiny_client.post("/v1/predict", content=body, headers=headers)
    assert response.status_code == 422


# --- Host header, cross-origin forms, framing ------------------------------------------------


def test_host_header_outside_the_allowed_list_is_refused(tiny_predictor: Predictor) -> None:
    app = create_app(tiny_predictor, ServeSettings(allowed_hosts=("127.0.0.1", "localhost", "::1")))
    for base, status in [
        ("http://127.0.0.1:8000", 200),
        ("http://localhost", 200),
        ("http://[::1]:8000", 200),
        ("http://rebound.attacker.example:8000", 400),
    ]:
        with TestClient(app, base_url=base) as c:
            assert c.get("/health").status_code == status, base
    assert _host_name("[::1]:80") == "::1" and _host_name("Example.org:8") == "example.org"


def test_cross_origin_form_posts_are_refused(tiny_client: TestClient) -> None:
    evil = {"origin": "http://evil.example"}
    assert tiny_client.post("/v1/predict", data={"text": POST}, headers=evil).status_code == 403
    cross = {"sec-fetch-site": "cross-site"}
    assert tiny_client.post("/v1/predict", data={"text": POST}, headers=cross).status_code == 403
    same = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}
    assert tiny_client.post("/v1/predict", data={"text": POST}, headers=same).status_code == 200
    assert tiny_client.post("/v1/predict", data={"text": POST}).status_code == 200  # curl-like


@contextmanager
def serving(app: FastAPI, max_connections: int = 50, header_timeout: float = 0.5) -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="info",
        http=guarded_protocol(max_connections, header_timeout),
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def server(tiny_predictor: Predictor) -> Iterator[int]:
    settings = ServeSettings(
        body_timeout_s=0.5,
        max_request_bytes=4000,
        max_buffered_bytes=6000,
        max_image_pixels=1000,
        max_pending_pixels=1000,
    )
    with serving(create_app(tiny_predictor, settings), max_connections=8) as port:
        yield port


def test_content_length_with_transfer_encoding_is_400(server: int) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_slow_headers_and_idle_connections_are_closed(server: int) -> None:
    started = time.monotonic()
    with connect(server) as idle, connect(server) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHo")
        assert read_all(idle).startswith(b"HTTP/1.1 408")
        assert read_all(slow).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 4


def test_keep_alive_connection_gets_the_header_deadline_again(server: int) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.1)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # then stalls
        assert b"408" in read_all(sock)


def test_slow_body_is_408(server: int) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text"'
        )
        started = time.monotonic()
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 4


def test_connections_beyond_the_cap_are_refused_at_once(server: int) -> None:
    held = [connect(server) for _ in range(8)]
    try:
        time.sleep(0.1)
        with connect(server) as extra:
            assert read_all(extra).startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()


def test_buffered_request_bytes_have_a_global_budget(server: int) -> None:
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 3900\r\n\r\n"
    )
    with connect(server) as first, connect(server) as second:
        first.sendall(head + b"x" * 3500)  # held, body incomplete
        time.sleep(0.15)
        second.sendall(head + b"x" * 3500)  # 7000 > 6000 bytes buffered
        answer = second.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after" in answer.lower()


def test_an_aborted_upload_logs_one_line(server: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"text": '
        )
        time.sleep(0.1)
    time.sleep(0.3)
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert any("disconnected before" in r.getMessage() for r in caplog.records)


# --- images -----------------------------------------------------------------------------------


def test_16_bit_grey_images_are_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG")
    picture, status = load_image_bytes(buffer.getvalue())
    assert status.value == "ok" and picture is not None and picture.mode == "RGB"
    pixels = np.asarray(picture)
    assert pixels.min() == 0 and pixels.max() == 255
    assert 120 < pixels.mean() < 135  # a plain convert("RGB") clips nearly all to 255
