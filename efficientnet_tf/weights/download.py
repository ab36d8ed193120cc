"""Downloads into the weights cache: resumable, verified, atomic, safe across processes.

Cache: ``$EFFICIENTNET_TF_HOME`` (default ``~/.cache/efficientnet_tf``)::

    downloads/<host>/<path>          the file as published (+ <file>.json: url, sha256, size)
    converted/<variant>/<tag>.weights.h5   our native weights, what later loads read (+ .json)
    locks/                           one lock file per cached file (fcntl.flock)

``$EFFICIENTNET_TF_WEIGHTS_MIRROR`` replaces ``https://storage.googleapis.com`` in every URL
(mirrors and buckets keep the same paths); the cache path stays that of the canonical URL.
URLs: ``http(s)://`` (HTTP Range resume where the server supports it), ``gs://`` (tf.io.gfile),
``file://``. Every file is written to ``<file>.part`` and renamed into place once complete and
verified; the sha256 measured then is re-checked whenever the file is read again.

Proxies: ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` (or lowercase) name an ``http://``
proxy (``user:password@`` for Basic auth); https goes through it with CONNECT, http as absolute
URIs; ``NO_PROXY`` hosts (suffixes, ``*``) connect directly -- the rules of Python's urllib and
keras' ``get_file``. Server certificates are checked against the system store, or the bundle
``SSL_CERT_FILE`` names (a company proxy that re-signs TLS needs its CA there).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request
from typing import Dict, Iterator, Optional, Tuple

import tensorflow as tf

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
STALL_TIMEOUT = 60.0  # seconds without a byte before a transfer counts as stalled
RETRIES = 3  # after the first attempt; waits 1, 2, 4 s
BACKOFF = 1.0
CHUNK = 1 << 20
MAX_REDIRECTS = 5
HOME_ENV = "EFFICIENTNET_TF_HOME"
MIRROR_ENV = "EFFICIENTNET_TF_WEIGHTS_MIRROR"
CANONICAL_HOST = "https://storage.googleapis.com"
URL_SCHEMES = ("https://", "http://", "gs://", "file://")


class DownloadError(OSError):
    """A file could not be fetched (network, HTTP status, or mismatching content)."""


class _Transient(Exception):
    """A failure worth retrying (connection, stall, early close, HTTP 5xx)."""


def home() -> str:
    return os.path.abspath(os.path.expanduser(os.environ.get(HOME_ENV) or "~/.cache/efficientnet_tf"))


def is_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def mirrored(url: str) -> str:
    """``url`` with ``https://storage.googleapis.com`` replaced by ``$EFFICIENTNET_TF_WEIGHTS_MIRROR``."""
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    if mirror and url.startswith(CANONICAL_HOST + "/"):
        return mirror + url[len(CANONICAL_HOST):]
    return url


def cache_path(url: str) -> str:
    """Where the file of (canonical) ``url`` is cached: downloads/<host>/<path>."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc or parts.scheme
    path = urllib.parse.unquote(parts.path).lstrip("/")
    if not path or ".." in path.split("/"):
        raise ValueError(f"Cannot cache {url!r}: it names no file")
    return os.path.join(home(), "downloads", host.replace(":", "_"), *path.split("/"))


# ----------------------------------------------------------------------------- records
def file_digest(path: str, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(path: str) -> Optional[Dict]:
    try:
        with open(path + ".json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_record(path: str, record: Dict) -> None:
    """``<path>.json``, atomically."""
    atomic_write_bytes(path + ".json", (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def atomic_write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = f"{path}.tmp-{os.getpid()}"
    with open(staging, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, path)


def remove(path: str) -> None:
    """Deletes a cached file and its record."""
    for name in (path, path + ".json", path + ".part"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def check_published(path: str, published_hash: Optional[str]) -> Optional[str]:
    """None when ``path`` matches ``published_hash`` ("md5:<hex>" / "sha256:<hex>"), else why not."""
    if not published_hash:
        return None
    algorithm, _, expected = published_hash.partition(":")
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        return f"{algorithm} {actual}, expected {expected}"
    return None


def verify_cached(path: str, published_hash: Optional[str] = None) -> Optional[str]:
    """None when the cached ``path`` still has the sha256 recorded at its first download (and the
    published hash); else what is wrong. A file placed by hand gets its record now."""
    if not os.path.isfile(path):
        return "missing"
    problem = check_published(path, published_hash)
    if problem:
        return problem
    record = read_record(path)
    actual = file_digest(path)
    if record is None:
        write_record(path, {"sha256": actual, "size": os.path.getsize(path), "url": None,
                            "note": "found in the cache without a record (placed by hand?)"})
        return None
    if record.get("sha256") != actual:
        return f"sha256 {actual}, recorded {record.get('sha256')} at the first download"
    return None


@contextlib.contextmanager
def lock(path: str) -> Iterator[None]:
    """An exclusive inter-process lock for ``path`` (the other processes wait)."""
    relative = os.path.relpath(os.path.abspath(path), home()).replace(os.sep, "__")
    lock_path = os.path.join(home(), "locks", relative + ".lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"Waiting for another process preparing {path} ...", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- progress
class Progress:
    """``label: 12.0/48.3 MB, 6.1 MB/s, ETA 6 s`` on stderr (a carriage-return line on a
    terminal, a line every few seconds otherwise)."""

    def __init__(self, label: str, total: Optional[int], done: int = 0, unit: float = 1e6):
        self.label, self.total, self.done, self.unit = label, total, done, unit
        self.start_done, self.started = done, time.monotonic()
        self.tty = sys.stderr.isatty()
        self.shown = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.shown >= (0.25 if self.tty else 5.0):
            self.shown = now
            self._show(end="\r" if self.tty else "\n")

    def _show(self, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        text = f"{self.label}: {self.done / self.unit:.1f}"
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f"/{self.total / self.unit:.1f} MB, {rate / self.unit:.1f} MB/s, ETA {eta:.0f} s"
        else:
            text += f" MB, {rate / self.unit:.1f} MB/s"
        print(text.ljust(78), end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._show(end="\n")


# ----------------------------------------------------------------------------- transfers
PROXY_SCHEMES = ("http",)


def proxy_for(url: str) -> Optional[str]:
    """The proxy URL to reach ``url`` through (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``),
    or None for a direct connection (no proxy set, or the host matches ``NO_PROXY``)."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def _open_connection(url: str, proxy: Optional[str]) -> Tuple[http.client.HTTPConnection, str, Dict[str, str]]:
    """(connection, request target, extra headers) for one request to ``url``, through ``proxy``
    when given: CONNECT for https (TLS end to end with the server), an absolute URI for http."""
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    if proxy is None:
        if https:
            return (http.client.HTTPSConnection(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT,
                                                context=ssl.create_default_context()), target, {})
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT), target, {}
    via = urllib.parse.urlsplit(proxy)
    if via.scheme not in PROXY_SCHEMES or not via.hostname:
        raise DownloadError(f"Unsupported proxy {_safe(proxy)!r} for {url}: expected http://HOST:PORT "
                            f"(valid proxy schemes: {', '.join(PROXY_SCHEMES)})")
    auth = {}
    if via.username is not None:
        pair = f"{urllib.parse.unquote(via.username)}:{urllib.parse.unquote(via.password or '')}"
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    if https:
        connection = http.client.HTTPSConnection(via.hostname, via.port or 80, timeout=CONNECT_TIMEOUT,
                                                 context=ssl.create_default_context())
        connection.set_tunnel(parts.hostname, parts.port or 443, headers=auth)
        return connection, target, {}
    connection = http.client.HTTPConnection(via.hostname, via.port or 80, timeout=CONNECT_TIMEOUT)
    return connection, url, auth


def _safe(url: str) -> str:
    """``url`` without its password (for messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _http(url: str, part: str, label: str) -> None:
    """One attempt over HTTP(S), resuming ``part`` with a Range request when it exists."""
    for _ in range(MAX_REDIRECTS + 1):
        proxy = proxy_for(url)
        connection, target, headers = _open_connection(url, proxy)
        via = f" (through the proxy {_safe(proxy)})" if proxy else ""
        have = os.path.getsize(part) if os.path.exists(part) else 0
        headers.update({"User-Agent": "efficientnet_tf", "Accept-Encoding": "identity"})
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            connection.request("GET", target, headers=headers)
            connection.sock.settimeout(STALL_TIMEOUT)
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                url = urllib.parse.urljoin(url, response.getheader("Location", ""))
                continue
            if response.status == 416 and have:  # our partial file is no prefix of theirs
                os.remove(part)
                raise _Transient("HTTP 416 for a resumed download; starting over")
            if response.status >= 500 or response.status == 429:
                raise _Transient(f"HTTP {response.status} {response.reason}{via}")
            if response.status not in (200, 206):
                raise DownloadError(f"HTTP {response.status} {response.reason} for {url}{via}")
            if response.status == 200:
                have = 0  # the server ignored the Range header: start over
            length = response.getheader("Content-Length")
            total = have + int(length) if length is not None else None
            progress = Progress(label, total, have)
            with open(part, "ab" if have else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    progress.update(len(block))
            progress.close()
            if total is not None and os.path.getsize(part) != total:
                raise _Transient(f"connection closed after {os.path.getsize(part)} of {total} bytes")
            return
        except ssl.SSLCertVerificationError as err:  # retrying cannot help
            raise DownloadError(f"{url}: the server's certificate is not trusted ({err.verify_message}){via}; "
                                "a proxy that re-signs TLS needs its CA in the file $SSL_CERT_FILE names") from None
        except (http.client.HTTPException, socket.timeout, ConnectionError, OSError) as err:
            if isinstance(err, DownloadError):
                raise
            refused = str(err).startswith("Tunnel connection failed: 4")  # CONNECT answered 403, 407, ...
            if refused:
                raise DownloadError(f"{url}: the proxy {_safe(proxy)} refused the tunnel: {err}") from None
            raise _Transient(f"{type(err).__name__}: {err}{via}") from None
        finally:
            connection.close()
    raise DownloadError(f"More than {MAX_REDIRECTS} redirects for {url}")


def _gfile(url: str, part: str, label: str) -> None:
    """One attempt through tf.io.gfile (gs://), resuming by seeking."""
    try:
        total = tf.io.gfile.stat(url).length
        have = os.path.getsize(part) if os.path.exists(part) else 0
        progress = Progress(label, total, have)
        with tf.io.gfile.GFile(url, "rb") as source, open(part, "ab" if have else "wb") as f:
            source.seek(have)
            for block in iter(lambda: source.read(CHUNK), b""):
                f.write(block)
                progress.update(len(block))
        progress.close()
    except tf.errors.NotFoundError as err:
        raise DownloadError(f"{url} does not exist: {err.message}") from None
    except tf.errors.OpError as err:
        raise _Transient(err.message) from None


def _local(url: str, part: str, label: str) -> None:
    path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    if not os.path.isfile(path):
        raise DownloadError(f"{url}: no file {path!r}")
    progress = Progress(label, os.path.getsize(path))
    with open(path, "rb") as source, open(part, "wb") as f:
        for block in iter(lambda: source.read(CHUNK), b""):
            f.write(block)
            progress.update(len(block))
    progress.close()


def _transfer(url: str, part: str, label: str) -> None:
    """Fetches ``url`` into ``part`` with retries and backoff; resumes where possible."""
    scheme = url.split(":", 1)[0].lower()
    attempt_fn = {"http": _http, "https": _http, "gs": _gfile, "file": _local}.get(scheme)
    if attempt_fn is None:
        raise ValueError(f"Unsupported URL {url!r}; valid schemes: {', '.join(URL_SCHEMES)}")
    attempt, last_size = 0, -1
    while True:
        try:
            return attempt_fn(url, part, label)
        except _Transient as err:
            size = os.path.getsize(part) if os.path.exists(part) else 0
            if size > last_size > -1:
                attempt = 0  # progress was made: the retry budget starts again
            last_size = size
            if attempt >= RETRIES:
                raise DownloadError(str(err)) from None
            wait = BACKOFF * 2 ** attempt
            print(f"{label}: {err}; retrying in {wait:.0f} s", file=sys.stderr, flush=True)
            time.sleep(wait)
            attempt += 1


def fetch(url: str, published_hash: Optional[str] = None, label: Optional[str] = None) -> str:
    """The cached file of ``url`` (canonical; the mirror applies), downloaded when missing.

    Raises DownloadError naming the URL tried, the cache path to put the file in by hand and the
    expected hash when the file cannot be fetched or does not match.
    """
    dest = cache_path(url)
    source = mirrored(url)
    label = label or os.path.basename(dest)
    with lock(dest):
        if os.path.exists(dest):
            problem = verify_cached(dest, published_hash)
            if problem is None:
                return dest
            print(f"{dest}: {problem}; downloading it again", file=sys.stderr, flush=True)
            remove(dest)
        part = dest + ".part"
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            _transfer(source, part, f"Downloading {label}")
        except DownloadError as err:
            raise DownloadError(unavailable_message(source, dest, published_hash, str(err))) from None
        problem = check_published(part, published_hash)
        if problem:
            remove(dest)
            raise DownloadError(f"{source}: the downloaded file has {problem}; it was deleted, nothing was "
                                f"cached. If the mirror is stale, put the right file at {dest}")
        record = {"url": source, "canonical_url": url, "sha256": file_digest(part),
                  "size": os.path.getsize(part), "published_hash": published_hash,
                  "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.replace(part, dest)
        write_record(dest, record)
    return dest


def unavailable_message(url: str, dest: str, published_hash: Optional[str], reason: str) -> str:
    expected = f"expected {published_hash}" if published_hash else (
        "no size or hash is published for it; it is checked by unpacking it completely")
    proxy = proxy_for(url) if url.lower().startswith(("http://", "https://")) else None
    route = f"through the proxy {_safe(proxy)}" if proxy else "directly (no HTTPS_PROXY/HTTP_PROXY applies)"
    return (f"Cannot download {url} ({route}): {reason}. Offline or unreachable? Put the file there by hand: "
            f"{dest} ({expected}), or set ${MIRROR_ENV} to a mirror with the same paths "
            f"(now {os.environ.get(MIRROR_ENV) or 'unset'}).")


__all__ = ["DownloadError", "Progress", "cache_path", "fetch", "file_digest", "home", "is_url", "lock",
           "mirrored", "proxy_for", "read_record", "remove", "verify_cached", "write_record"]
