"""The request-head limit of the proxy's HTTP server (serving/http_limits.py), on a real uvicorn
server: heads over the limit get 431 and the connection closed, whatever their size; heads under
it, one or several on a kept-alive connection, are served."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from serving.http_limits import MAX_HEAD_BYTES, LimitedHttpToolsProtocol
from tests.conftest import free_port


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


@pytest.fixture(scope="module")
def server():
    port = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, http=LimitedHttpToolsProtocol, log_level="error",
                            lifespan="off")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    running.should_exit = True
    thread.join(10)


def _exchange(port: int, *requests: bytes, chunk: int = 65_536) -> bytes:
    """Send the raw requests on one connection and read until the server closes it or stops answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for request in requests:
                for i in range(0, len(request), chunk):
                    s.sendall(request[i:i + chunk])
        except (BrokenPipeError, ConnectionResetError):  # refused and closed while we were still sending
            pass
        s.settimeout(2)
        out = b""
        try:
            while data := s.recv(65_536):
                out += data
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def _get(headers: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n"


def test_a_head_over_the_limit_is_refused_with_431_whatever_its_size(server):
    for size in (MAX_HEAD_BYTES, 64 * 2**20):  # just over, and the 64 MB header of the issue
        started = time.monotonic()
        answer = _exchange(server, _get(b"authorization: Bearer " + b"a" * size + b"\r\n"))
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"over 16,384 bytes" in answer
        took = time.monotonic() - started
        assert took < 5  # refused as the bytes arrive, not after reading them all
        print(f"head of {size:,} bytes: 431 in {took * 1e3:.0f} ms")


def test_heads_under_the_limit_are_served_one_after_another_on_one_connection(server):
    body = b'{"k": 1}'
    post = (b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)
    big_but_fine = _get(b"x-note: " + b"n" * (MAX_HEAD_BYTES - 200) + b"\r\n")
    answer = _exchange(server, big_but_fine, post, big_but_fine)
    assert answer.count(b"HTTP/1.1 200 OK") == 3, answer[:500]
    assert b"431" not in answer
