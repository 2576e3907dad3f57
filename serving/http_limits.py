"""A limit on the size of a request's head (request line and headers) for the HTTP server of Ray
Serve's proxy: 431 past MAX_HEAD_BYTES, before the bytes are kept.

Serve's proxy runs uvicorn with httptools, which has no such limit: four requests with a 64 MB
`Authorization` header took 12 s each to be refused and grew the proxy from 224 MB to 1 GB, which
it kept (issue 19). Serve offers no option for it; it calls an import path of ours when its proxy
starts (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, meant for middlewares), and `install` makes
uvicorn's default protocol there this one, which counts the head's bytes as they arrive. HAProxy,
the other ingress, refuses a head larger than its buffer itself (16 KB; a 400).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16_384  # what HAProxy's and nginx's default buffers hold
CALLBACK = "serving.http_limits:install"  # RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a head over MAX_HEAD_BYTES with 431."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # what comes next on the connection is a new head

    def data_received(self, data: bytes) -> None:
        while data and self._in_head:
            room = MAX_HEAD_BYTES - self._head_bytes
            if room <= 0:
                self._refuse()
                return
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            super().data_received(part)  # may end the head, and start the body
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def _refuse(self) -> None:
        body = json.dumps({"detail": f"request line and headers over {MAX_HEAD_BYTES:,} bytes"}).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-type: application/json\r\nconnection: close\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


def install() -> list:
    """Serve's proxy callback: uvicorn's default HTTP protocol in this process becomes the limited
    one. Returns the middlewares Serve asks for: none."""
    import uvicorn.config

    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:LimitedHttpToolsProtocol"
    return []
