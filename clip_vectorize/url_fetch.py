"""Fetching an image from a URL the API user gives, without letting them use us to reach our own network (SSRF).

A URL in a request makes *this server* send an HTTP request. Unchecked, that request can reach localhost admin
ports, private services, or the cloud metadata endpoint (169.254.169.254), which hands out credentials. So every
hop, the first URL and each redirect, goes through the same checks:

- http or https only, no `user:pass@` part;
- the host is resolved ONCE, and refused if any of its addresses is not globally routable (unless the host is in
  `UrlPolicy.allowed_hosts`, which the operator fills from CLIP_URL_ALLOWED_HOSTS);
- the connection goes to the address we just checked, never to the name again: a second lookup could return a
  different, internal address (DNS rebinding). TLS is still verified against the host name.

The body is streamed under a byte cap, and every socket read is bounded both on its own and by a total deadline,
so a huge or slow-drip response cannot hold a worker.
"""

from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from clip_vectorize.errors import UrlFetchError, UrlRefusedError

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
ALLOWED_HOSTS_SETTING = "CLIP_URL_ALLOWED_HOSTS"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
# Characters left as they are in the request path: the URL's own delimiters, and escapes already made.
_PATH_SAFE = "/%:@!$&'()*+,;=?[]~"

_METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_SHARED_NAT = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not `is_private`, so named explicitly
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UrlPolicy:
    """What an image URL may point at, and how long and how much we read from it."""

    allowed_hosts: frozenset[str] = frozenset()  # trusted names or IP literals, exempt from the address check
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0  # per socket read; the whole fetch also has total_timeout_s
    max_redirects: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        """The policy CLIP_URL_* set: the service's image URLs and the indexer's URL manifests follow the same."""
        return cls(frozenset(host.lower() for host in settings.url_allowed_hosts), settings.url_max_bytes,
                   connect_timeout_s=settings.url_timeout_s, read_timeout_s=settings.url_timeout_s)

    @property
    def total_timeout_s(self) -> float:
        """Deadline for the whole fetch, redirects included: stops servers that drip a byte per read timeout."""
        return self.connect_timeout_s + 2 * self.read_timeout_s


@dataclass(frozen=True)
class _Target:
    """One hop's URL, parsed and checked for syntax."""

    scheme: str
    host: str  # lower-case ASCII (IDNA), IPv6 without brackets
    port: int
    path: str  # path and query, percent-encoded

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def fetch_image_bytes(url: object, policy: UrlPolicy) -> bytes:
    """GET `url` and return its body, following redirects; every hop is checked before anything connects to it.

    Raises UrlRefusedError when policy forbids a URL, UrlFetchError when an allowed one cannot be fetched.
    """
    deadline = time.monotonic() + policy.total_timeout_s
    what = "image URL"
    for _ in range(policy.max_redirects + 1):
        target = _parse_url(url, what)
        addresses = _resolve_checked(target, policy, what)
        logger.debug("fetching %s %s from %s", what, url, addresses)
        result = _fetch_hop(target, addresses, policy, deadline)
        if isinstance(result, bytes):
            return result
        url, what = urljoin(str(url), result), "image URL redirect"  # str: _parse_url accepted it
    raise UrlFetchError(f"image URL redirected more than {policy.max_redirects} times; give the final URL instead")


# --- URL syntax -------------------------------------------------------------------------------------------------


def _parse_url(url: object, what: str) -> _Target:
    """Refuse anything but a plain http(s) URL with a host and no credentials."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRefusedError(f"{what} must be a non-empty string")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise UrlRefusedError(f"{what} is longer than {MAX_URL_CHARS} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise UrlRefusedError(f"{what} contains control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefusedError(f"{what} is not a valid URL (check the host and port)") from None
    if parts.scheme not in _DEFAULT_PORTS:
        got = f"'{parts.scheme}:'" if parts.scheme else "no scheme"
        raise UrlRefusedError(f"{what} must start with http:// or https:// (got {got})")
    if "@" in parts.netloc:  # credentials in URLs leak into logs, and `user@host` is a classic way to hide the host
        raise UrlRefusedError(f"{what} must not contain a user name or password (user:pass@host)")
    host = _ascii_host(parts.hostname, what)
    return _Target(parts.scheme, host, port or _DEFAULT_PORTS[parts.scheme], _request_path(parts))


def _ascii_host(hostname: str | None, what: str) -> str:
    """The host as we resolve it, verify TLS against and send in Host: lower-case ASCII, IPv6 without brackets."""
    if not hostname:
        raise UrlRefusedError(f"{what} has no host")
    if _ip_literal(hostname) is not None:
        return hostname
    try:
        host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlRefusedError(f"{what} host {hostname!r} is not a valid host name") from None
    if not _HOST_NAME.fullmatch(host):
        raise UrlRefusedError(f"{what} host {hostname!r} is not a valid host name")
    return host


def _request_path(parts: SplitResult) -> str:
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return quote(path, safe=_PATH_SAFE)  # spaces and non-ASCII as %XX: http.client sends ASCII only


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# --- Addresses --------------------------------------------------------------------------------------------------


def _resolve_checked(target: _Target, policy: UrlPolicy, what: str) -> list[str]:
    """The host's addresses, looked up once; refused if any is not public, unless the host is trusted."""
    addresses = _resolve(target)
    if _normal_host(target.host) in {_normal_host(host) for host in policy.allowed_hosts}:
        return addresses
    for address in addresses:
        kind = _non_public_kind(ipaddress.ip_address(address))
        if kind is not None:
            logger.info("refused %s host %r: %s address", what, target.host, kind)
            where = "is" if _normal_host(target.host) == _normal_host(address) else f"resolves to {address}, which is"
            raise UrlRefusedError(
                f"{what} host '{target.host}' {where} not a public address ({kind}); "
                f"add it to {ALLOWED_HOSTS_SETTING} if it is trusted"
            )
    return addresses


def _resolve(target: _Target) -> list[str]:
    if _ip_literal(target.host) is not None:
        return [target.host]  # nothing to look up: no DNS traffic for literals
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UrlFetchError(f"could not resolve image URL host '{target.host}'") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # unique, in the resolver's order


def _normal_host(host: str) -> str:
    """Compare hosts case-blind, IPv6 with or without brackets, and IP literals in any spelling."""
    host = host.strip().strip("[]").lower()
    literal = _ip_literal(host)
    return str(literal) if literal is not None else host.rstrip(".")


def _non_public_kind(ip: IPAddress) -> str | None:
    """Why nothing should be fetched from `ip` ("loopback", "private"...), or None for a globally routable address."""
    ip = _embedded_ipv4(ip) or ip
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata"
    for kind, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT", ip in _SHARED_NAT),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-global", not ip.is_global),  # documentation, benchmarking and other special-purpose ranges
    ):
        if flag:
            return kind
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (::ffff:a.b.c.d, NAT64, 6to4): it is checked as that address."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


# --- One request ------------------------------------------------------------------------------------------------


def _fetch_hop(target: _Target, addresses: list[str], policy: UrlPolicy, deadline: float) -> bytes | str:
    """One GET over a connection pinned to `addresses`: the body, or a redirect's Location (a str)."""
    connection = _PinnedConnection(target, addresses, policy, deadline)
    try:
        connection.request("GET", target.path, headers=_request_headers(target))
        response = connection.getresponse()
        if response.status in _REDIRECT_STATUSES:
            return _redirect_location(response, target)
        if not 200 <= response.status < 300:
            raise UrlFetchError(f"image URL host '{target.host}' returned HTTP {_status_text(response.status)}")
        return _read_capped(response, target, policy.max_bytes)
    except (OSError, http.client.HTTPException) as exc:
        logger.debug("fetching from %r failed: %r", target.host, exc)
        raise _transport_error(exc, target, policy) from None
    finally:
        connection.close()


def _request_headers(target: _Target) -> dict[str, str]:
    # Host is the name the user gave, although we connect to an address; http.client then adds no Host of its own.
    return {"Host": target.host_header, "User-Agent": "clip-vectorize", "Accept": "image/*", "Connection": "close"}


def _redirect_location(response: http.client.HTTPResponse, target: _Target) -> str:
    location = response.getheader("Location")
    if not location:
        raise UrlFetchError(f"image URL host '{target.host}' answered HTTP {response.status} without a Location")
    return location


def _status_text(status: int) -> str:
    try:
        return f"{status} ({HTTPStatus(status).phrase})"  # the standard phrase, not the server's own text
    except ValueError:
        return str(status)


def _read_capped(response: http.client.HTTPResponse, target: _Target, max_bytes: int) -> bytes:
    """The body, read in chunks and abandoned as soon as it passes `max_bytes`."""
    too_large = f"image at host '{target.host}' is larger than the limit of {max_bytes:,} bytes"
    if response.length is not None and response.length > max_bytes:
        raise UrlFetchError(too_large)  # Content-Length says so: no need to read any of it
    body = bytearray()
    while chunk := response.read(min(_CHUNK_BYTES, max_bytes + 1 - len(body))):
        body += chunk
        if len(body) > max_bytes:
            raise UrlFetchError(too_large)
    if response.length:  # http.client returns a short body quietly when the server closes early
        raise UrlFetchError(f"image URL host '{target.host}' closed the connection before sending the whole image")
    return bytes(body)


def _transport_error(exc: Exception, target: _Target, policy: UrlPolicy) -> UrlFetchError:
    """A short message for the API user: no stack trace, no address beyond the host they gave."""
    host = target.host
    if isinstance(exc, TimeoutError):
        return UrlFetchError(
            f"image URL host '{host}' did not answer in time (limits: {policy.connect_timeout_s:g} s to connect, "
            f"{policy.read_timeout_s:g} s per read, {policy.total_timeout_s:g} s in all)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UrlFetchError(f"image URL host '{host}' has a TLS certificate we cannot trust: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return UrlFetchError(f"TLS connection to image URL host '{host}' failed ({exc.reason or 'handshake error'})")
    if isinstance(exc, http.client.HTTPException):
        return UrlFetchError(f"image URL host '{host}' sent an invalid HTTP response ({type(exc).__name__})")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return UrlFetchError(f"connection to image URL host '{host}' failed: {reason}")


# --- Connections pinned to checked addresses ----------------------------------------------------------------------


def _time_left(deadline: float, limit_s: float) -> float:
    """The timeout for the next socket operation: its own limit, cut to what is left of the total deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("total deadline passed")
    return min(limit_s, left)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # verifies the chain and the host name; built once, it loads the CA store


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP, or HTTPS with `scheme="https"`, to addresses already checked: the host name is never resolved again."""

    def __init__(self, target: _Target, addresses: list[str], policy: UrlPolicy, deadline: float) -> None:
        super().__init__(target.host, target.port, timeout=policy.connect_timeout_s)
        self._target, self._addresses, self._policy, self._deadline = target, addresses, policy, deadline
        self.response_class = functools.partial(  # type: ignore[assignment]
            _DeadlineResponse, read_timeout_s=policy.read_timeout_s, deadline=deadline
        )

    def connect(self) -> None:
        sock = self._connect_any()
        sock.settimeout(_time_left(self._deadline, self._policy.read_timeout_s))  # bounds the TLS handshake too
        if self._target.scheme == "https":
            sock = _tls_context().wrap_socket(sock, server_hostname=self._target.host)
        self.sock = sock

    def _connect_any(self) -> socket.socket:
        """The first of the checked addresses that accepts, as `socket.create_connection` does with a name."""
        error: OSError = ConnectionError("no address to connect to")
        for address in self._addresses:
            try:
                timeout = _time_left(self._deadline, self._policy.connect_timeout_s)
                return socket.create_connection((address, self._target.port), timeout)
            except OSError as exc:  # the deadline's TimeoutError too: it fails every later try as well
                error = exc
        raise error


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTPResponse whose every socket read, headers included, stops at the fetch's total deadline."""

    def __init__(self, sock: socket.socket, *args: object, read_timeout_s: float, deadline: float, **kwargs: object):
        super().__init__(sock, *args, **kwargs)  # type: ignore[arg-type]
        # Keep http.client's socket file (it keeps the socket open after the connection lets go of it), but read
        # through our deadline.
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, read_timeout_s, deadline))


class _DeadlineReader(io.RawIOBase):
    """Socket reads with a timeout of min(read timeout, time left): a server sending a byte per read cannot stall us."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, read_timeout_s: float, deadline: float) -> None:
        super().__init__()
        self._raw, self._sock, self._read_timeout_s, self._deadline = raw, sock, read_timeout_s, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:  # type: ignore[override]
        self._sock.settimeout(_time_left(self._deadline, self._read_timeout_s))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
