"""Fetching image URLs: the SSRF checks on every hop, pinning to the checked address, and the size/time limits.

Everything runs against servers on 127.0.0.1. The `net` fixture resolves made-up names (`*.test`) to chosen
addresses and fails the test on any connection attempt to an address other than loopback.
"""

import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image

from clip_vectorize import url_fetch
from clip_vectorize.errors import UrlFetchError, UrlRefusedError
from clip_vectorize.url_fetch import UrlPolicy, fetch_image_bytes


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png_bytes()
MAX_BYTES = 1000
FAST = dict(max_bytes=MAX_BYTES, connect_timeout_s=0.5, read_timeout_s=0.5)  # total deadline: 1.5 s
LOCAL = UrlPolicy(allowed_hosts=frozenset({"127.0.0.1"}), **FAST)
LOOPBACK = {"127.0.0.1", "::1"}


# --- The local servers --------------------------------------------------------------------------------------------


class ImageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep the test output clean
        pass

    def do_GET(self):
        self.server.seen.append({"path": self.path, **{key.lower(): value for key, value in self.headers.items()}})
        route, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
        name = "route_" + route.strip("/").split("/")[0].replace("-", "_").replace(".", "_")
        try:
            getattr(self, name, self.route_not_found)(route, {key: values[0] for key, values in query.items()})
        except OSError:  # the client gave up, as it should on timeouts and size limits
            self.close_connection = True

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_image_png(self, route, query):
        self.reply(200, PNG, [("Content-Type", "image/png")])

    def route_nested(self, route, query):  # /nested/deeper/relative -> ../../image.png, that is /image.png
        self.reply(302, headers=[("Location", "../../image.png")])

    def route_redirect(self, route, query):  # /redirect?code=301&to=URL
        self.reply(int(query.get("code", 302)), headers=[("Location", query.get("to", "/image.png"))])

    def route_redirect_no_location(self, route, query):
        self.reply(302)

    def route_chain(self, route, query):  # /chain/N takes N redirects to reach the image
        left = int(route.rsplit("/", 1)[1])
        self.reply(302, headers=[("Location", f"/chain/{left - 1}" if left > 1 else "/image.png")])

    def route_status(self, route, query):
        self.reply(int(route.rsplit("/", 1)[1]), b"no image here")

    def route_large(self, route, query):  # /large?size=N&mode=length|close|chunked
        body, mode = b"x" * int(query["size"]), query["mode"]
        if mode == "length":
            return self.reply(200, body)
        self.send_response(200)
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:  # no length at all: the body ends when the connection does
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for start in range(0, len(body), 300):
            piece = body[start : start + 300]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if mode == "chunked" else piece)
        if mode == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    def route_truncated(self, route, query):
        self.send_response(200)
        self.send_header("Content-Length", "500")
        self.end_headers()
        self.wfile.write(PNG[:10])
        self.close_connection = True

    def route_slow(self, route, query):  # silent for longer than a read may wait
        time.sleep(2)
        self.reply(200, PNG)

    def route_drip(self, route, query):  # a byte every 0.2 s: no single read times out, the whole would take 20 s
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.drip(b"x" * 100)

    def route_drip_headers(self, route, query):
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self.drip(b"X-Padding: " + b"x" * 100 + b"\r\n\r\n")

    def drip(self, data):
        for byte in data:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.2)

    def route_not_found(self, route, query):
        self.reply(404)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # slow handlers must not hold up the end of the tests

    def handle_error(self, request, client_address):  # clients hanging up on purpose are not errors here
        pass


def _serve(server):
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture(scope="module")
def server():
    with _serve(QuietServer(("127.0.0.1", 0), ImageHandler)) as running:
        yield running
        running.shutdown()


@pytest.fixture
def base(server):
    server.seen.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", folder / "key.pem", "-out", folder / "cert.pem", "-days", "1", "-subj", "/CN=trusted.test",
         "-addext", "subjectAltName=DNS:trusted.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture(scope="module")
def tls_server(tls_cert):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    server = QuietServer(("127.0.0.1", 0), ImageHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with _serve(server) as running:
        yield running
        running.shutdown()


# --- The network, watched -----------------------------------------------------------------------------------------


class WatchedNetwork:
    """Made-up names for getaddrinfo, a log of lookups and connections, and no connection beyond loopback."""

    def __init__(self, monkeypatch):
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self.connections: list[str] = []
        self._getaddrinfo, self._create_connection = socket.getaddrinfo, socket.create_connection
        # Both live in the socket module, which is what url_fetch calls (and create_connection itself).
        monkeypatch.setattr(url_fetch.socket, "getaddrinfo", self.getaddrinfo)
        monkeypatch.setattr(url_fetch.socket, "create_connection", self.create_connection)

    def getaddrinfo(self, host, port, *args, **kwargs):
        self.lookups.append(host)
        if host in self.names:
            family = {4: socket.AF_INET, 6: socket.AF_INET6}
            return [(family[4 if "." in ip else 6], socket.SOCK_STREAM, 6, "", (ip, port)) for ip in self.names[host]]
        if host.endswith((".test", ".invalid")):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self._getaddrinfo(host, port, *args, **kwargs)

    def create_connection(self, address, *args, **kwargs):
        self.connections.append(address[0])
        assert address[0] in LOOPBACK, f"the code under test tried to connect to {address[0]}"
        return self._create_connection(address, *args, **kwargs)

    def name_lookups(self):
        """Lookups of names, leaving out create_connection's own no-traffic lookups of IP literals."""
        return [host for host in self.lookups if host not in LOOPBACK]


@pytest.fixture
def net(monkeypatch):
    return WatchedNetwork(monkeypatch)


# --- Successful fetches -------------------------------------------------------------------------------------------


def test_a_fetch_from_an_allowed_host_returns_the_exact_bytes(base, server, net):
    assert fetch_image_bytes(f"{base}/image.png", LOCAL) == PNG
    request = server.seen[-1]
    assert request["user-agent"] == "clip-vectorize" and request["accept"] == "image/*"
    assert request["host"] == base.removeprefix("http://")


def test_allowed_hosts_are_compared_without_regard_to_case(base, net):
    net.names["images.test"] = ["127.0.0.1"]
    policy = UrlPolicy(allowed_hosts=frozenset({"Images.TEST"}), **FAST)
    assert fetch_image_bytes(base.replace("127.0.0.1", "IMAGES.test") + "/image.png", policy) == PNG


def test_spaces_and_non_ascii_in_the_path_are_sent_percent_encoded(base, server, net):
    with pytest.raises(UrlFetchError, match="404"):
        fetch_image_bytes(f"{base}/a photo/été.png?q=1", LOCAL)
    assert server.seen[-1]["path"] == "/a%20photo/%C3%A9t%C3%A9.png?q=1"


# --- Refusals before any traffic --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, kind",
    [
        ("http://127.0.0.1/cat.png", "loopback"),
        ("http://[::1]:8080/cat.png", "loopback"),
        ("https://127.0.0.1:8443/cat.png", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://[64:ff9b::a9fe:a9fe]/", "cloud metadata"),  # NAT64 form of the metadata address
        ("http://[2002:a00:1::]/", "private"),  # 6to4 form of 10.0.0.1
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://240.0.0.1/", "reserved"),
    ],
)
def test_ip_literals_that_are_not_public_are_refused_without_any_traffic(net, url, kind):
    with pytest.raises(UrlRefusedError, match="not a public address") as refused:
        fetch_image_bytes(url, UrlPolicy())
    assert f"({kind})" in str(refused.value) and "CLIP_URL_ALLOWED_HOSTS" in str(refused.value)
    assert net.lookups == [] and net.connections == []


@pytest.mark.parametrize("host", ["localhost", "LocalHost", "2130706433", "127.1", "0x7f.0.0.1"])
def test_names_and_odd_spellings_that_resolve_to_loopback_are_refused(net, host):
    with pytest.raises(UrlRefusedError, match=r"resolves to 127\.0\.0\.1, which is not a public address \(loopback\)"):
        fetch_image_bytes(f"http://{host}/cat.png", UrlPolicy())
    assert net.connections == []


@pytest.mark.parametrize(
    "url, message",
    [
        ("file:///etc/passwd", "got 'file:'"),
        ("ftp://example.com/cat.png", "got 'ftp:'"),
        ("gopher://example.com/", "got 'gopher:'"),
        ("data:image/png;base64,iVBORw0KGgo=", "got 'data:'"),
        ("javascript:alert(1)", "got 'javascript:'"),
        ("example.com/cat.png", "got no scheme"),
        ("//example.com/cat.png", "got no scheme"),
        ("http://user:secret@example.com/cat.png", "user name or password"),
        ("http://user@example.com/cat.png", "user name or password"),
        ("http://example.com@127.0.0.1/cat.png", "user name or password"),
        ("http://example.com/" + "a" * 2048, "longer than 2048"),
        ("http:///cat.png", "has no host"),
        ("http://example.com:99999/cat.png", "not a valid URL"),
        ("http://[::1/cat.png", "not a valid URL"),
        ("http://exa mple.com/cat.png", "not a valid host name"),
        ("http://example.com/cat.png\r\nX-Injected: 1", "control characters"),
        ("", "non-empty string"),
        ("   ", "non-empty string"),
        (None, "non-empty string"),
        (b"http://example.com/cat.png", "non-empty string"),
    ],
)
def test_urls_that_are_not_plain_http_or_https_are_refused_before_any_lookup(net, url, message):
    with pytest.raises(UrlRefusedError, match=message):
        fetch_image_bytes(url, UrlPolicy())
    assert net.lookups == [] and net.connections == []


# --- DNS: one lookup per hop, and the connection goes to the checked address -----------------------------------


@pytest.mark.parametrize("addresses", [["127.0.0.1"], ["8.8.8.8", "10.1.2.3"], ["2606:4700::1111", "::1"]])
def test_a_name_is_refused_when_any_of_its_addresses_is_not_public(net, addresses):
    net.names["rebind.test"] = addresses
    with pytest.raises(UrlRefusedError, match="host 'rebind.test' resolves to"):
        fetch_image_bytes("http://rebind.test/cat.png", UrlPolicy())
    assert net.connections == []


def test_a_trusted_name_is_resolved_once_and_the_connection_goes_to_that_address(server, net):
    port = server.server_address[1]
    net.names["trusted.test"] = ["127.0.0.1"]  # no real resolver knows this name: reaching the server proves pinning
    policy = UrlPolicy(allowed_hosts=frozenset({"trusted.test"}), **FAST)
    assert fetch_image_bytes(f"http://trusted.test:{port}/image.png", policy) == PNG
    assert server.seen[-1]["host"] == f"trusted.test:{port}"
    assert net.name_lookups() == ["trusted.test"] and net.connections == ["127.0.0.1"]


def test_the_next_checked_address_is_tried_when_the_first_does_not_accept(server, net):
    net.names["dual.test"] = ["::1", "127.0.0.1"]  # nothing listens on ::1 at this port
    policy = UrlPolicy(allowed_hosts=frozenset({"dual.test"}), **FAST)
    assert fetch_image_bytes(f"http://dual.test:{server.server_address[1]}/image.png", policy) == PNG
    assert net.connections == ["::1", "127.0.0.1"]


def test_a_name_that_does_not_resolve_is_a_fetch_error(net):
    with pytest.raises(UrlFetchError, match="could not resolve image URL host 'nowhere.invalid'"):
        fetch_image_bytes("http://nowhere.invalid/cat.png", UrlPolicy())


def test_a_closed_port_is_a_fetch_error(net):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UrlFetchError, match="connection to image URL host '127.0.0.1' failed"):
        fetch_image_bytes(f"http://127.0.0.1:{port}/cat.png", LOCAL)


# --- Redirects ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_to_an_allowed_target_is_followed(base, net, code):
    assert fetch_image_bytes(f"{base}/redirect?code={code}", LOCAL) == PNG


def test_a_relative_location_is_resolved_against_the_current_url(base, server, net):
    assert fetch_image_bytes(f"{base}/nested/deeper/relative", LOCAL) == PNG
    assert [request["path"] for request in server.seen] == ["/nested/deeper/relative", "/image.png"]


@pytest.mark.parametrize(
    "target, error",
    [
        ("http://169.254.169.254/latest/meta-data/", r"redirect host '169\.254\.169\.254' is not a public address"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", "not a public address"),
        ("http://localhost:{port}/image.png", r"resolves to 127\.0\.0\.1"),
        ("http://10.0.0.1/", r"not a public address \(private\)"),
        ("file:///etc/passwd", "got 'file:'"),
        ("http://user:pass@127.0.0.1:{port}/image.png", "user name or password"),
    ],
)
def test_every_redirect_hop_is_checked_again_even_when_the_first_host_is_allowed(server, base, net, target, error):
    location = quote(target.format(port=server.server_address[1]), safe="")
    with pytest.raises(UrlRefusedError, match=error):
        fetch_image_bytes(f"{base}/redirect?to={location}", LOCAL)
    assert set(net.connections) == {"127.0.0.1"}  # only the first hop connected
    assert len(server.seen) == 1


def test_a_chain_as_long_as_the_redirect_limit_is_followed(base, net):
    assert fetch_image_bytes(f"{base}/chain/3", LOCAL) == PNG


def test_a_chain_longer_than_the_redirect_limit_is_a_fetch_error(base, server, net):
    with pytest.raises(UrlFetchError, match="redirected more than 3 times"):
        fetch_image_bytes(f"{base}/chain/4", LOCAL)
    assert len(server.seen) == 4


def test_a_redirect_without_location_is_a_fetch_error(base, net):
    with pytest.raises(UrlFetchError, match="HTTP 302 without a Location"):
        fetch_image_bytes(f"{base}/redirect-no-location", LOCAL)


# --- Status, size and time limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status, text", [(404, "Not Found"), (403, "Forbidden"), (500, "Internal Server Error")])
def test_a_status_other_than_2xx_is_a_fetch_error_naming_it(base, net, status, text):
    with pytest.raises(UrlFetchError, match=rf"returned HTTP {status} \({text}\)"):
        fetch_image_bytes(f"{base}/status/{status}", LOCAL)


@pytest.mark.parametrize("mode", ["length", "close", "chunked"])
def test_a_body_over_max_bytes_is_a_fetch_error_with_or_without_content_length(base, net, mode):
    with pytest.raises(UrlFetchError, match="larger than the limit of 1,000 bytes"):
        fetch_image_bytes(f"{base}/large?size={MAX_BYTES + 1}&mode={mode}", LOCAL)


@pytest.mark.parametrize("mode", ["length", "close", "chunked"])
def test_a_body_of_exactly_max_bytes_is_accepted(base, net, mode):
    assert fetch_image_bytes(f"{base}/large?size={MAX_BYTES}&mode={mode}", LOCAL) == b"x" * MAX_BYTES


def test_a_body_cut_short_of_its_content_length_is_a_fetch_error(base, net):
    with pytest.raises(UrlFetchError, match="closed the connection before sending the whole image"):
        fetch_image_bytes(f"{base}/truncated", LOCAL)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("route", ["slow", "drip", "drip-headers"])
def test_a_slow_or_dripping_server_is_a_fetch_error_once_the_time_limits_pass(base, net, route):
    started = time.monotonic()
    with pytest.raises(UrlFetchError, match="did not answer in time"):
        fetch_image_bytes(f"{base}/{route}", LOCAL)
    assert time.monotonic() - started < 5  # limits: 0.5 s per read, 1.5 s in all; generous for loaded machines


# --- TLS ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def tls_base(tls_server, net):
    net.names["trusted.test"] = net.names["other.test"] = ["127.0.0.1"]
    return tls_server.server_address[1]


TLS_POLICY = UrlPolicy(allowed_hosts=frozenset({"trusted.test", "other.test"}), **FAST)


def test_https_verifies_the_certificate_against_the_host_name_while_connecting_to_the_checked_address(
    tls_base, tls_cert, monkeypatch
):
    monkeypatch.setattr(url_fetch, "_tls_context", lambda: ssl.create_default_context(cafile=str(tls_cert[0])))
    assert fetch_image_bytes(f"https://trusted.test:{tls_base}/image.png", TLS_POLICY) == PNG
    with pytest.raises(UrlFetchError, match="TLS certificate we cannot trust: Hostname mismatch"):
        fetch_image_bytes(f"https://other.test:{tls_base}/image.png", TLS_POLICY)


def test_https_with_a_certificate_nobody_vouches_for_is_a_fetch_error(tls_base):
    with pytest.raises(UrlFetchError, match="TLS certificate we cannot trust"):
        fetch_image_bytes(f"https://trusted.test:{tls_base}/image.png", TLS_POLICY)
