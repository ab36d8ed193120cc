"""A real HTTP server on 127.0.0.1 in a thread, serving weight files from memory the way
storage.googleapis.com lays them out (tests point $EFFICIENTNET_TF_WEIGHTS_MIRROR at it).

Knobs for the failure cases: ``range_support`` (honour ``Range: bytes=N-`` with 206, or ignore it
like servers without Range support), ``drop_after[path] = n`` (announce the full length, send n
bytes, close the connection; once), ``truncate[path] = n`` (serve only the first n bytes, with a
matching Content-Length: a complete-looking transfer of a cut file). Every request is logged,
and the peer address of each in ``peers``. ``tls=(certfile, keyfile)`` serves https;
``only_from=ADDRESS`` answers 403 to every peer but that one (a proxy's outgoing address).
"""

import http.server
import socket
import ssl
import threading


class WeightsServer:
    def __init__(self, range_support=True, tls=None, only_from=None):
        self.files = {}
        self.range_support = range_support
        self.only_from = only_from
        self.peers = []  # (path, client address)
        self.drop_after = {}
        self.truncate = {}
        self.log = []  # (path, Range header or None, status)
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 (http.server's name)
                owner._serve(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def requests(self, path):
        return [entry for entry in self.log if entry[0] == path]

    def _serve(self, handler):
        path = handler.path.split("?")[0]
        requested = handler.headers.get("Range")
        self.peers.append((path, handler.client_address[0]))
        if self.only_from is not None and handler.client_address[0] != self.only_from:
            self.log.append((path, requested, 403))
            handler.send_response(403, "Direct connections refused")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        with self.lock:
            data = self.files.get(path)
            if data is not None and path in self.truncate:
                data = data[: self.truncate[path]]
            drop = self.drop_after.pop(path, None) if data is not None else None
        if data is None:
            self.log.append((path, requested, 404))
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start = 0
        if requested and self.range_support and requested.startswith("bytes=") and requested.endswith("-"):
            start = int(requested[len("bytes="):-1])
        body = data[start:]
        status = 206 if start else 200
        self.log.append((path, requested, status))
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if self.range_support:
            handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        if drop is not None:
            handler.wfile.write(body[:drop])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(body)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port():
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
