"""A small forward proxy for the download tests, run as its own process on 127.0.0.1:

    python tests/weights_proxy.py --log FILE [--source 127.0.0.2] [--auth USER:PASSWORD]

prints its port on the first line of stdout, then serves until killed. ``CONNECT host:port``
opens a tunnel (https), ``GET http://host:port/path`` is forwarded as an origin-form request
with a ``Via`` header (http). Only loopback targets are served. ``--source`` binds the outgoing
connections to that loopback address, so a server that accepts only that peer refuses direct
clients. Every request line is appended to the log file (one line each, flushed).
"""

import argparse
import base64
import select
import socket
import socketserver
import sys
import threading
import urllib.parse

LOOPBACK = ("127.0.0.1", "localhost")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--source", default=None)
    parser.add_argument("--auth", default=None)
    args = parser.parse_args(argv)
    log_lock = threading.Lock()

    def log(line):
        with log_lock, open(args.log, "a") as f:
            f.write(line + "\n")

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            request_line = self.rfile.readline(65537).decode("latin-1").rstrip("\r\n")
            headers = []
            while True:
                line = self.rfile.readline(65537).decode("latin-1")
                if line in ("\r\n", "\n", ""):
                    break
                headers.append(line.rstrip("\r\n"))
            log(request_line)
            try:
                method, target, _ = request_line.split(" ", 2)
            except ValueError:
                return self.reply(400, "Bad Request")
            if args.auth and not self.authorized(headers):
                return self.reply(407, "Proxy Authentication Required",
                                  ["Proxy-Authenticate: Basic realm=\"test\""])
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                return self.tunnel(host, int(port))
            parts = urllib.parse.urlsplit(target)
            if method != "GET" or parts.scheme != "http":
                return self.reply(405, "Method Not Allowed")
            origin = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            kept = [h for h in headers if h.split(":", 1)[0].strip().lower()
                    not in ("proxy-authorization", "proxy-connection", "connection", "host")]
            head = [f"GET {origin} HTTP/1.1", f"Host: {parts.netloc}", *kept, "Via: 1.1 weights-proxy",
                    "Connection: close"]
            upstream = self.open(parts.hostname, parts.port or 80)
            if upstream is None:
                return None
            with upstream:
                upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                while True:
                    block = upstream.recv(65536)
                    if not block:
                        break
                    self.wfile.write(block)
            return None

        def authorized(self, headers):
            expected = "Basic " + base64.b64encode(args.auth.encode()).decode()
            return any(h.split(":", 1)[0].lower() == "proxy-authorization" and h.split(":", 1)[1].strip() == expected
                       for h in headers)

        def reply(self, status, reason, extra=()):
            self.wfile.write("\r\n".join([f"HTTP/1.1 {status} {reason}", *extra, "Content-Length: 0",
                                          "Connection: close", "", ""]).encode())

        def open(self, host, port):
            if host not in LOOPBACK:
                self.reply(403, "Forbidden (loopback targets only)")
                return None
            try:
                return socket.create_connection((host, port), timeout=30,
                                                source_address=(args.source, 0) if args.source else None)
            except OSError:
                self.reply(502, "Bad Gateway")
                return None

        def tunnel(self, host, port):
            upstream = self.open(host, port)
            if upstream is None:
                return
            with upstream:
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                ends = [self.connection, upstream]
                while True:
                    readable, _, _ = select.select(ends, [], [], 30)
                    if not readable:
                        return
                    for end in readable:
                        try:
                            block = end.recv(65536)
                            if block:
                                (upstream if end is self.connection else self.connection).sendall(block)
                        except OSError:  # one side reset: the tunnel ends
                            block = b""
                        if not block:
                            return

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", 0), Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
