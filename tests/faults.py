"""A fault-injecting HTTP proxy on 127.0.0.1, in front of the moto server (tests/moto_server.py).

Point `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) at `FaultProxy.endpoint`: every request is
forwarded to moto unchanged (SigV4 headers included; moto does not check signatures) unless a
`Rule` matches it, which then answers it with a fault instead:

- `slowdown`: 503 `SlowDown` (S3 throttling), `error`: any status and AWS error code,
- `reset`: the connection is reset (RST) before any answer,
- `truncate`: the real answer's headers, then half its body, then the connection closes
  (Content-Length says more than was sent),
- `short`: half the body with a Content-Length that agrees (only the object's size, in
  Content-Range, tells that bytes are missing),
- `hook`: `action(request)` runs, then the request is forwarded (e.g. an object is deleted
  between the listing and its GET).

A rule applies to its first `times` matching requests (None: all of them, a persistent fault),
skipping the first `after`; with `per_key`, to the first `times` of each object or listing.
Every request is recorded (`seen`), so a test can count, say, the GETs that reached the landing
bucket. Everything is synchronous: a rule's `action` runs while the client waits for its
answer, and nothing waits on time.
"""

import json
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}


@dataclass(frozen=True)
class Request:
    """What the proxy saw: the service, and for S3 the bucket, key and whether it lists."""

    method: str
    service: str
    bucket: str
    key: str
    listing: bool
    query: dict

    @property
    def operation(self) -> str:
        return f"{self.method} {self.bucket}/{self.key}" if self.service == "s3" else self.service


@dataclass
class Rule:
    fault: str
    """slowdown, error, reset, truncate, short or hook."""
    method: str | None = None
    service: str = "s3"
    bucket: str | None = None
    key: str | None = None
    """A regular expression searched in the object key."""
    listing: bool | None = None
    """True: listings only; False: object requests only; None: both."""
    prefix: str | None = None
    """A regular expression searched in a listing's `prefix` parameter."""
    times: int | None = 1
    """How many matching requests get the fault; None for every one (persistent)."""
    after: int = 0
    """Matching requests let through before the fault starts."""
    status: int = 503
    code: str = "SlowDown"
    message: str = "injected by the test proxy"
    """The error's message; `{access_key}` and `{authorization}` echo the request's own (as a
    verbose server might: nothing of them may reach a report or a log)."""
    action: Callable[[Request], None] | None = None
    per_key: bool = False
    """Count `times` and `after` for each distinct object key (or listing prefix) apart."""
    matched: dict = field(default_factory=dict)
    injected_by: dict = field(default_factory=dict)

    @property
    def injected(self) -> int:
        return sum(self.injected_by.values())

    def matches(self, request: Request) -> bool:
        return (
            request.service == self.service
            and (self.method is None or request.method == self.method)
            and (self.bucket is None or request.bucket == self.bucket)
            and (self.key is None or re.search(self.key, request.key) is not None)
            and (self.listing is None or request.listing == self.listing)
            and (
                self.prefix is None
                or re.search(self.prefix, "".join(request.query.get("prefix", []))) is not None
            )
        )

    def take(self, request: Request) -> bool:
        """Counts a matching request; whether it gets the fault."""
        scope = (request.key, str(request.query.get("prefix"))) if self.per_key else None
        self.matched[scope] = matched = self.matched.get(scope, 0) + 1
        if matched <= self.after:
            return False
        if self.times is not None and self.injected_by.get(scope, 0) >= self.times:
            return False
        self.injected_by[scope] = self.injected_by.get(scope, 0) + 1
        return True


@dataclass
class FaultProxy:
    upstream: str
    endpoint: str = ""
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[Request, str]] = field(default_factory=list)
    """Every request and what it got: `forwarded` or the fault's name."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *rules: Rule) -> None:
        with self.lock:
            self.rules.extend(rules)

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.seen.clear()

    def decide(self, request: Request) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(request) and rule.take(request):
                    self.seen.append((request, rule.fault))
                    return rule
            self.seen.append((request, "forwarded"))
            return None

    def count(self, fault: str | None = None, **where) -> int:
        """Requests seen matching `where` (Request attributes) that got `fault` (any if None)."""
        with self.lock:
            return sum(
                1
                for request, outcome in self.seen
                if (fault is None or outcome == fault)
                and all(getattr(request, name) == value for name, value in where.items())
            )

    def injected(self) -> int:
        with self.lock:
            return sum(1 for _, outcome in self.seen if outcome != "forwarded")


def classify(method: str, path: str, headers) -> Request:
    target = headers.get("X-Amz-Target", "")
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    if target.startswith("AWSGlue"):
        return Request(method, "glue", "", target.split(".", 1)[-1], False, query)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    listing = method == "GET" and not key and ("list-type" in query or "prefix" in query)
    return Request(method, "s3", bucket, key, listing, query)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        request = classify(self.command, self.path, self.headers)
        rule = self.proxy.decide(request)
        if rule is not None and rule.fault == "hook":
            if rule.action:
                rule.action(request)
            rule = None
        if rule is not None and rule.fault in ("slowdown", "error"):
            return self._error(rule, request)
        if rule is not None and rule.fault == "reset":
            return self._reset()
        status, reason, headers, payload = self._forward(body)
        if rule is not None and rule.fault in ("truncate", "short") and len(payload) > 1:
            half = payload[: len(payload) // 2]
            length = len(payload) if rule.fault == "truncate" else len(half)
            self._respond(status, reason, headers, half, length)
            if rule.fault == "truncate":
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            return
        self._respond(status, reason, headers, payload, len(payload))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    def _forward(self, body: bytes):
        host, port = urlsplit(self.proxy.upstream).netloc.split(":")
        upstream = HTTPConnection(host, int(port), timeout=60)
        try:
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
            }
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            kept = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
            ]
            if self.command == "HEAD":
                length = response.getheader("Content-Length")
                kept.append(("X-Proxy-Head-Length", length or "0"))
            return response.status, response.reason, kept, payload
        finally:
            upstream.close()

    def _respond(self, status, reason, headers, payload: bytes, length: int) -> None:
        self.send_response(status, reason)
        for name, value in headers:
            if name == "X-Proxy-Head-Length":
                self.send_header("Content-Length", value)
            else:
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, rule: Rule, request: Request) -> None:
        authorization = self.headers.get("Authorization", "")
        access_key = re.search(r"Credential=([^/]*)/", authorization)
        message = rule.message.format(
            access_key=access_key.group(1) if access_key else "",
            authorization=authorization,
        )
        if request.service == "glue":
            data = json.dumps({"__type": rule.code, "message": message})
            content_type = "application/x-amz-json-1.1"
        else:
            data = (
                '<?xml version="1.0" encoding="UTF-8"?><Error>'
                f"<Code>{rule.code}</Code><Message>{escape(message)}</Message></Error>"
            )
            content_type = "application/xml"
        payload = data.encode()
        self.send_response(rule.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self) -> None:
        """Closes the connection with a TCP reset, answering nothing."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def finish(self) -> None:
        with suppress(OSError):
            super().finish()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away, or a reset we caused


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A FaultProxy in front of `upstream` (e.g. the moto server's endpoint), on a free port."""
    proxy = FaultProxy(upstream)
    handler = type("Handler", (_Handler,), {"proxy": proxy})
    server = _Server(("127.0.0.1", 0), handler)
    proxy.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
