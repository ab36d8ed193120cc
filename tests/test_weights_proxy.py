"""Downloads through a real proxy process on 127.0.0.1 (tests/weights_proxy.py): http as
absolute-URI requests, https through a CONNECT tunnel to a loopback TLS server with a
self-signed certificate (trusted through $SSL_CERT_FILE), each with a dropped transfer that
resumes with a Range request through the proxy. The origin servers accept only the proxy's
outgoing address (127.0.0.2), so a direct connection is refused; NO_PROXY bypasses the proxy.
"""

import datetime
import ipaddress
import os
import subprocess
import sys
import time

import pytest

from efficientnet_tf.weights import download, published
from weights_server import WeightsServer, closed_port

pytestmark = pytest.mark.integration  # a proxy process and loopback servers

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY_SOURCE = "127.0.0.2"  # the proxy's outgoing address; the origins refuse every other peer
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
DATA = os.urandom(3 * download.CHUNK + 12345)
URL = published.weight_set("efficientnet-b3", "baseline").url  # canonical; the mirror applies
PATH = URL[len(published.GCS):]


def self_signed(folder):
    """A key and a certificate for IP 127.0.0.1, valid for a day (the test's own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "efficientnet_tf test origin")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class Proxy:
    """tests/weights_proxy.py in its own process; ``lines()`` = the request lines it served."""

    def __init__(self, folder, auth=None):
        self.log = os.path.join(folder, f"proxy-{len(os.listdir(folder))}.log")
        command = [sys.executable, os.path.join(HERE, "weights_proxy.py"), "--log", self.log,
                   "--source", PROXY_SOURCE] + (["--auth", auth] if auth else [])
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def lines(self):
        return open(self.log).read().splitlines() if os.path.exists(self.log) else []

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("proxy"))
    cert, key = self_signed(folder)
    servers = {"http": WeightsServer(only_from=PROXY_SOURCE), "https": WeightsServer(tls=(cert, key), only_from=PROXY_SOURCE),
               "open": WeightsServer()}
    for server in servers.values():
        server.files[PATH] = DATA
    proxy, locked = Proxy(folder), Proxy(folder, auth="reader:s3cret:x")
    yield {"cert": cert, "proxy": proxy, "locked": locked, **servers}
    for item in (proxy, locked, *servers.values()):
        item.close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh cache and no proxy settings from the environment the tests run in."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "home"))
    return monkeypatch


def fetch_dropped(server, monkeypatch):
    """A download whose first transfer breaks off halfway; returns the origin's new log entries."""
    monkeypatch.setenv(download.MIRROR_ENV, server.url)
    server.drop_after[PATH] = len(DATA) // 2
    before = len(server.log)
    path = download.fetch(URL)
    assert open(path, "rb").read() == DATA
    return server.log[before:], server.peers[before:]


def test_http_through_the_proxy_with_resume(world, env):
    server, proxy = world["http"], world["proxy"]
    env.setenv(download.MIRROR_ENV, server.url)
    with pytest.raises(download.DownloadError, match="HTTP 403") as err:  # the direct route is refused
        download.fetch(URL)
    assert "directly (no HTTPS_PROXY/HTTP_PROXY applies)" in str(err.value)
    env.setenv("HTTP_PROXY", proxy.url)
    before = len(proxy.lines())
    log, peers = fetch_dropped(server, env)
    half = len(DATA) // 2
    assert log == [(PATH, None, 200), (PATH, f"bytes={half}-", 206)]  # resumed through the proxy
    assert {peer for _, peer in peers} == {PROXY_SOURCE}
    assert proxy.lines()[before:] == [f"GET {server.url}{PATH} HTTP/1.1"] * 2


def test_https_through_a_connect_tunnel_with_resume(world, env):
    server, proxy = world["https"], world["proxy"]
    env.setenv("HTTPS_PROXY", proxy.url)
    env.setenv(download.MIRROR_ENV, server.url)
    # TLS runs end to end through the tunnel: the self-signed origin is not trusted ...
    with pytest.raises(download.DownloadError, match="certificate is not trusted"):
        download.fetch(URL)
    env.setenv("SSL_CERT_FILE", world["cert"])  # ... until its certificate is in the bundle
    before = len(proxy.lines())
    log, peers = fetch_dropped(server, env)
    assert log == [(PATH, None, 200), (PATH, f"bytes={len(DATA) // 2}-", 206)]
    assert {peer for _, peer in peers} == {PROXY_SOURCE}
    host = server.url[len("https://"):]
    lines = proxy.lines()[before:]  # http.client asks with HTTP/1.0
    assert len(lines) == 2 and all(line.startswith(f"CONNECT {host} HTTP/1.") for line in lines)


def test_no_proxy_bypasses_the_proxy(world, env):
    server, proxy = world["open"], world["proxy"]
    env.setenv("HTTP_PROXY", proxy.url)
    env.setenv("NO_PROXY", "example.org, 127.0.0.1")
    env.setenv(download.MIRROR_ENV, server.url)
    before, served = len(proxy.lines()), len(server.peers)
    assert open(download.fetch(URL), "rb").read() == DATA
    assert proxy.lines()[before:] == [] and server.peers[served:] == [(PATH, "127.0.0.1")]


def test_proxy_rules_and_credentials(world, env):
    env.setenv("HTTPS_PROXY", "proxy.corp:3128")
    env.setenv("NO_PROXY", ".internal.example")
    assert download.proxy_for("https://storage.googleapis.com/x") == "http://proxy.corp:3128"
    assert download.proxy_for("https://weights.internal.example/x") is None
    assert download.proxy_for("http://storage.googleapis.com/x") is None  # no HTTP_PROXY
    env.setenv("ALL_PROXY", "http://any:8080")
    assert download.proxy_for("http://storage.googleapis.com/x") == "http://any:8080"
    env.setenv("NO_PROXY", "*")
    assert download.proxy_for("https://storage.googleapis.com/x") is None

    env.delenv("ALL_PROXY")
    env.delenv("NO_PROXY")
    server, locked = world["https"], world["locked"]
    env.setenv("SSL_CERT_FILE", world["cert"])
    env.setenv(download.MIRROR_ENV, server.url)
    env.setenv("HTTPS_PROXY", locked.url.replace("://", "://reader:wrong@"))
    with pytest.raises(download.DownloadError, match="refused the tunnel: .*407") as err:
        download.fetch(URL)
    assert "wrong" not in str(err.value)  # the password is not repeated
    env.setenv("HTTPS_PROXY", locked.url.replace("://", "://reader:s3cret%3Ax@"))  # "s3cret:x", quoted
    assert open(download.fetch(URL), "rb").read() == DATA
    assert locked.lines()[-1].startswith("CONNECT 127.0.0.1:")


def test_unreachable_proxy_fails_after_the_retries(world, env):
    env.setattr(download, "BACKOFF", 0.05)
    env.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    env.setenv(download.MIRROR_ENV, world["open"].url)
    started = time.monotonic()
    with pytest.raises(download.DownloadError) as err:
        download.fetch(URL)
    assert time.monotonic() - started < 10
    assert "through the proxy http://127.0.0.1:" in str(err.value) and "ConnectionRefusedError" in str(err.value)
