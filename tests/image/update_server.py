#!/usr/bin/env python3
"""HTTPS update server for the QEMU update tests (issue 7): serves the files of one directory
(latest.json and bundles) on 127.0.0.1 with TLS, GET and HEAD, and single byte ranges
(`Range: bytes=N-` or `bytes=N-M`, answered with 206) so a download can resume.

The guest reaches it as https://10.0.2.100/ through image/qemu --update-server PORT (QEMU
guestfwd). Usage:

    update_server.py --dir DIR --cert CERT.pem --key KEY.pem --port-file FILE [--log FILE]

Binds an ephemeral port on 127.0.0.1 and writes it to --port-file once listening. Each request
is logged as one line (method, path, range, status, bytes sent) to --log (default stderr).
Runs until killed; every connection has a 60 s socket timeout.
"""

import argparse
import http.server
import os
import re
import ssl
import sys
import threading

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
CHUNK = 1 << 16


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "relaybox-test-update-server"
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, fmt, *args):  # noqa: A003 - the base class's name
        pass

    def note(self, status, sent, rng):
        line = f"{self.command} {self.path} range={rng or '-'} status={status} sent={sent}\n"
        with self.server.log_lock:
            self.server.log.write(line)
            self.server.log.flush()

    def do_HEAD(self):
        self.serve(body=False)

    def do_GET(self):
        self.serve(body=True)

    def serve(self, body):
        name = self.path.split("?", 1)[0].lstrip("/")
        path = os.path.join(self.server.dir, name)
        if not name or "/" in name or name.startswith(".") or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.note(404, 0, None)
            return
        size = os.path.getsize(path)
        rng = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        if rng:
            m = RANGE.match(rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.note(416, 0, rng)
                return
            start = int(m.group(1))
            if m.group(2):
                end = min(int(m.group(2)), size - 1)
            status = 206
        length = end - start + 1
        self.send_response(status)
        ctype = "application/json" if name.endswith(".json") else "application/octet-stream"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        sent = 0
        if body:
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    while sent < length:
                        chunk = f.read(min(CHUNK, length - sent))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError):
                self.close_connection = True
        self.note(status, sent, rng)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    a = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.dir = os.path.abspath(a.dir)
    srv.log = open(a.log, "a", encoding="utf-8") if a.log else sys.stderr
    srv.log_lock = threading.Lock()
    # The handshake runs in the request thread (a stalled client blocks no one else).
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{srv.server_address[1]}\n")
    os.replace(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
