#!/usr/bin/env python3
"""Streaming backend for bench/stream.sh, on 127.0.0.1:PORT.

GET  .../download?bytes=N  streams N deterministic bytes (1 MiB blocks), chunked
POST .../upload            reads the whole body in 1 MiB pieces, answers "<bytes> <sha256>"
"""
import hashlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BLOCK = bytes((i * 31) % 251 for i in range(1 << 20))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        total = int(parse_qs(urlparse(self.path).query).get("bytes", ["0"])[0])
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(total))
        self.end_headers()
        sent = 0
        while sent < total:
            piece = BLOCK[: min(len(BLOCK), total - sent)]
            self.wfile.write(piece)
            sent += len(piece)

    def do_POST(self):
        digest, total = hashlib.sha256(), 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                remaining = size
                while remaining:
                    piece = self.rfile.read(min(remaining, 1 << 20))
                    digest.update(piece)
                    remaining -= len(piece)
                total += size
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("content-length", "0"))
            while remaining:
                piece = self.rfile.read(min(remaining, 1 << 20))
                digest.update(piece)
                total += len(piece)
                remaining -= len(piece)
        body = f"{total} {digest.hexdigest()}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
