"""The HTTP boundary: one ``requests.Session``, Orkes token auth, and error translation.

This module and :mod:`._http_session` (how the session, its pools and its urllib3 retries are
built) are the only ones that import ``requests``/``urllib3`` or see their exceptions. Everything
they raise is a :class:`~conductor_workers.errors.ConductorError`.

Environment settings are resolved once, never per request: ``REQUESTS_CA_BUNDLE`` and the server's
proxy (``HTTP(S)_PROXY``, ``NO_PROXY``) when the session is built, the proxy of another host (an
external storage URL) the first time that host is contacted, then kept. The session itself has
``trust_env=False`` so that requests does not look them up again on every call (about a third of its
per-request cost).

Downloads from external storage (:meth:`HttpTransport.download`) are streamed: never read past the
caller's size limit, and ended at an overall deadline however slowly their bytes arrive (a timer
shuts the connection down; each read alone is only bounded by the read timeout).
"""
from __future__ import annotations

import email.utils
import http.client
import json
import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlencode, urlsplit

import cachetools
import requests
import requests.adapters
import urllib3.exceptions
from urllib3.exceptions import ReadTimeoutError

from ._http_session import RETRY_AFTER_CAP, _adapter, _build_session, _connect_only_retry, resolve_proxies
from .config import Configuration
from .errors import (
    APIError,
    AuthenticationError,
    ConductorError,
    ConflictError,
    EndpointNotSupportedError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    ResponseTooLargeError,
    TransportError,
)

log = logging.getLogger(__name__)

#: ``around(method, url, send) -> response``: calls ``send()`` and returns its response
RequestWrapper = Callable[[str, str, Callable[[], requests.Response]], requests.Response]

_TOKEN_ERRORS = ("EXPIRED_TOKEN", "INVALID_TOKEN")
_STATUS_ERRORS = {
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    405: EndpointNotSupportedError,
    409: ConflictError,
}
# What a send or a download can raise that is not ours yet (RequestException is an OSError).
_FOREIGN_ERRORS = (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException, ValueError)
_DOWNLOAD_CHUNK = 256 * 1024  # bytes per read of a streamed download
_HOST_PROXIES_KEPT = 64  # hosts whose proxies are kept (external storage hosts, besides the server)


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` (delta-seconds or an HTTP date) in seconds, capped; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def _error_body(resp: requests.Response) -> Tuple[str, Mapping[str, Any]]:
    text = resp.text[:4000] if resp.content else ""
    try:
        payload = json.loads(text) if text else {}
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        payload = {}
    return text, payload if isinstance(payload, dict) else {}


def api_error(method: str, url: str, resp: requests.Response) -> APIError:
    """Translate a non-2xx answer into the matching :class:`APIError` subclass."""
    status = resp.status_code
    text, payload = _error_body(resp)
    message = payload.get("message")
    server_message = str(message) if message is not None else None
    raw_validation = payload.get("validationErrors")
    validation = [v for v in raw_validation if isinstance(v, dict)] if isinstance(raw_validation, list) else []
    detail = server_message or resp.reason or "no message"
    if validation:
        detail += " (" + "; ".join(f"{v.get('path')}: {v.get('message')}" for v in validation) + ")"
    if status == 404 and not payload:
        cls: type = EndpointNotSupportedError  # not an ErrorResponse: the route itself is missing
        detail += "; the server has no such endpoint - check server_url and the server version"
    else:
        cls = _STATUS_ERRORS.get(status, APIError)
    return cls(
        f"{method} {url} -> HTTP {status}: {detail}",
        status_code=status,
        method=method,
        url=url,
        server_message=server_message,
        validation_errors=validation,
        retryable=status >= 500 or status == 429 or bool(payload.get("retryable")),
        body=text,
        error_code=str(payload["error"]) if payload.get("error") is not None else None,
        retry_after=parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None,
    )


def _read_timed_out(exc: Exception) -> bool:
    """requests reports a read timeout as a ConnectionError: wrapped in MaxRetryError, or bare mid-body."""
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, ReadTimeoutError) or isinstance(getattr(cause, "reason", None), ReadTimeoutError)


def _is_token_error(resp: requests.Response) -> bool:
    if resp.status_code not in (401, 403):
        return False
    _, payload = _error_body(resp)
    if not payload:
        return resp.status_code == 401  # an unreadable 401 is treated as a token problem
    return payload.get("error") in _TOKEN_ERRORS


def _origin(url: str) -> Tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def shown_url(url: str) -> str:
    """``url`` without its query: a pre-signed storage URL's query is a credential, not for logs."""
    return url.split("?", 1)[0]


class _Cutoff:
    """Ends a streamed download at its deadline, however slowly its bytes arrive.

    A read of the body is bounded by the read timeout only while nothing arrives; a body that
    trickles a byte now and then never hits it. At the deadline this timer shuts the connection's
    socket down, which ends the read waiting on it. :meth:`finish` and the cut take the same lock,
    so a connection already handed back to the pool is never touched.
    """

    def __init__(self, resp: requests.Response, seconds: float) -> None:
        connection = getattr(resp.raw, "connection", None)  # urllib3's HTTPResponse (1.26 and 2.x)
        self._sock: Optional[socket.socket] = getattr(connection, "sock", None)
        self._lock = threading.Lock()  # guards fired and _finished
        self.fired = False
        self._finished = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.name = "conductor-download-deadline"
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        with self._lock:
            if self._finished or self._sock is None:
                return
            self.fired = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed already: the read has ended anyway
                log.debug("download deadline: the connection was closed already")

    def finish(self) -> bool:
        """Stop the timer; False when it has cut the connection already."""
        with self._lock:
            self._finished = True
            fired = self.fired
        self._timer.cancel()
        self._timer.join()
        return not fired


class _TokenAuth:
    """Fetches, caches and refreshes an Orkes token; one fetch at a time however many threads ask."""

    def __init__(self, transport: "HttpTransport", config: Configuration) -> None:
        self._transport = transport
        self._key_id = config.key_id
        self._key_secret = config.key_secret
        self._lock = threading.Lock()  # guards _cache, _oss and the failure fields; held during a fetch
        self._cache: cachetools.TTLCache = cachetools.TTLCache(maxsize=1, ttl=config.token_ttl_seconds)
        self._oss = False  # /api/token answered 404: an OSS server, no auth needed
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: Optional[AuthenticationError] = None

    def token(self) -> Optional[str]:
        with self._lock:
            if self._oss:
                return None
            token = self._cache.get("token")
            if token is None:
                # Holding the lock while fetching is the point: the other threads wait for this
                # token instead of each fetching one.
                token = self._fetch()
                if token is not None:
                    self._cache["token"] = token
            return token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._cache.get("token") == token:
                self._cache.clear()

    def _fetch(self) -> Optional[str]:
        now = time.monotonic()
        if self._last_error is not None and now < self._retry_at:
            raise self._last_error.with_traceback(None)  # re-raised often: do not let its traceback grow
        resp = self._transport.send("POST", "token", json_body={"keyId": self._key_id, "keySecret": self._key_secret})
        if resp.status_code == 404:
            log.info("%s/token answered 404: no authentication on this server", self._transport.base_url)
            self._oss = True
            return None
        if resp.status_code in (401, 403):
            self._failures += 1
            delay = min(2.0 ** self._failures, 60.0)
            self._retry_at = now + delay
            error = api_error("POST", self._transport.base_url + "/token", resp)
            self._last_error = AuthenticationError(
                f"the server refused key id {self._key_id!r}: {error.server_message or 'no message'}"
                f" (new attempts are refused for {delay:.0f}s)",
                status_code=resp.status_code,
                method="POST",
                url=error.url,
                server_message=error.server_message,
                body=error.body,
                error_code=error.error_code,
            )
            raise self._last_error
        if resp.status_code >= 400:
            raise api_error("POST", self._transport.base_url + "/token", resp)
        self._failures, self._last_error = 0, None
        try:
            payload = json.loads(resp.content) if resp.content else None
        except (ValueError, RecursionError):
            payload = None
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            # The body is left out of the error on purpose: whatever it is, it may hold a credential.
            raise InvalidResponseError(
                f"POST {self._transport.base_url}/token answered HTTP {resp.status_code} without a token "
                f"(expected a JSON object with a 'token' string; got {len(resp.content)} bytes, not shown)",
                status_code=resp.status_code,
            )
        log.debug("fetched a new auth token for key id %r", self._key_id)
        return token


class HttpTransport:
    """One session for one server: builds URLs, sends, authenticates, translates errors."""

    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.base_url = config.server_url
        self.root_url = config.server_url[: -len("/api")]  # the server_url always ends with /api
        self._session = _build_session(config)
        # Requests go straight to the session's adapter (see _send_prepared); these are what
        # Session.request would otherwise work out again for every call.
        self._adapter: requests.adapters.HTTPAdapter = self._session.get_adapter(self.base_url)  # type: ignore[assignment]
        # Polls go through a pool of their own whose urllib3 retries stop at connection errors.
        self._once_adapter = _adapter(config, _connect_only_retry(config))
        self._verify: Any = self._session.verify
        self._cert: Any = self._session.cert
        self._proxies: Dict[str, str] = dict(self._session.proxies)  # the server's
        self._server_origin = _origin(self.base_url)
        self._host_proxies_lock = threading.Lock()  # guards _host_proxies
        self._host_proxies: cachetools.LRUCache = cachetools.LRUCache(maxsize=_HOST_PROXIES_KEPT)
        self._headers: Dict[str, Any] = dict(self._session.headers)
        self._timeout = (config.connect_timeout, config.read_timeout)
        self._auth = _TokenAuth(self, config) if config.has_auth else None
        #: wraps every request: ``around(method, url, send) -> response`` (see ConductorClient.wrap_requests)
        self.around: Optional[RequestWrapper] = None

    def close(self) -> None:
        self._session.close()
        self._once_adapter.close()

    def proxies_for(self, url: str) -> Dict[str, str]:
        """The proxies for ``url``, decided per host as requests decides them (see ``resolve_proxies``).

        The server's were resolved when the transport was built; another host's (an external
        storage) are resolved the first time it is contacted, then kept.
        """
        origin = _origin(url)
        if origin == self._server_origin:
            return self._proxies
        with self._host_proxies_lock:
            proxies: Optional[Dict[str, str]] = self._host_proxies.get(origin)
            if proxies is None:
                proxies = resolve_proxies(self.config, url)
                self._host_proxies[origin] = proxies
                log.debug("proxies for %s://%s: %s", origin[0], origin[1], ", ".join(sorted(proxies)) or "none")
        return proxies

    def _url(self, path: str) -> str:
        if path.startswith("/"):
            return self.root_url + path
        if path.startswith(("http://", "https://")):  # a full URL, e.g. an external payload's
            return path
        return f"{self.base_url}/{path}"

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        text_body: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
        extra_read_timeout: float = 0.0,
        send_once: bool = False,
    ) -> requests.Response:
        """Send one request and return the fully read response, whatever its status (no auth header).

        ``path`` is relative to ``server_url`` (``.../api``), or to the server's root if it starts with ``/``.
        ``send_once``: never re-send once the request may have reached the server (connect errors
        only are retried, and no ``Retry-After`` is slept on); for requests with side effects on
        the server that a retry would repeat, such as polls.
        Everything that can go wrong, reading the body included, raises a ConductorError.
        """
        url = self._url(path)
        data: Optional[bytes] = None
        all_headers = dict(headers or {})
        if json_body is not None:
            try:
                data = json.dumps(json_body, separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                raise InvalidRequestError(f"{method} {path}: the body is not JSON-serialisable: {exc}") from exc
            all_headers["Content-Type"] = "application/json"
        elif text_body is not None:
            data = text_body.encode()
            all_headers["Content-Type"] = "text/plain"
        target = url
        if params:
            query = urlencode([(key, value) for key, value in params.items() if value is not None], doseq=True)
            if query:
                target = f"{url}?{query}"
        timeout = (self._timeout[0], self._timeout[1] + extra_read_timeout)
        adapter = self._once_adapter if send_once else self._adapter
        # A full URL (an external storage's) may need other proxies than the server's.
        proxies = self.proxies_for(url) if url is path else self._proxies  # _url hands a full URL back as is
        try:
            if self.around is not None:
                return self.around(
                    method, url, lambda: self._send_prepared(adapter, method, target, data, all_headers, timeout, proxies)
                )
            return self._send_prepared(adapter, method, target, data, all_headers, timeout, proxies)
        except ConductorError:
            raise
        except _FOREIGN_ERRORS as exc:
            raise self._translated(exc, method, url, timeout) from exc

    def _translated(self, exc: Exception, method: str, url: str, timeout: Tuple[float, float]) -> ConductorError:
        """The ConductorError for what requests, urllib3 or the socket raised while sending ``method url``."""
        if isinstance(exc, requests.exceptions.SSLError):
            return TransportError(f"{method} {url}: TLS error: {exc}", method=method, url=url)
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return TransportError(
                f"{method} {url}: could not connect within {timeout[0]:.1f}s ({exc})", method=method, url=url
            )
        if isinstance(exc, (requests.exceptions.Timeout, ReadTimeoutError)) or (
            isinstance(exc, requests.exceptions.RequestException) and _read_timed_out(exc)
        ):
            return TransportError(f"{method} {url}: no answer within {timeout[1]:.1f}s ({exc})", method=method, url=url)
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
            return InvalidRequestError(f"{method} {url}: invalid URL: {exc}")
        if isinstance(exc, requests.exceptions.RequestException):
            hint = (
                f"; is it running, and is server_url {self.base_url!r} right?" if url.startswith(self.root_url) else ""
            )
            return TransportError(
                f"{method} {url}: could not talk to the server ({type(exc).__name__}: {exc}){hint}",
                method=method,
                url=url,
            )
        if isinstance(exc, urllib3.exceptions.LocationValueError):  # e.g. a host label IDNA cannot encode
            return InvalidRequestError(f"{method} {url}: invalid URL: {exc}")
        if isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException)):  # a body read not wrapped
            return TransportError(
                f"{method} {url}: the connection broke during the answer ({type(exc).__name__}: {exc})",
                method=method,
                url=url,
            )
        if isinstance(exc, OSError):  # requests raises a bare OSError for a missing CA bundle or client cert
            return TransportError(f"{method} {url}: {exc}", method=method, url=url)
        # e.g. urllib3's LocationParseError for a host IDNA cannot encode
        return InvalidRequestError(f"{method} {url}: invalid request: {exc}")

    def download(self, url: str, *, max_bytes: int, timeout: float) -> Tuple[int, bytearray]:
        """GET a full URL (an external storage's), streamed, without credentials: its status and body.

        The body is never read past ``max_bytes``: :class:`ResponseTooLargeError`, before any of it
        is read when its ``Content-Length`` says so. The whole download must end within ``timeout``
        seconds (the wait for the answer's head included), or it fails with a TransportError; each
        read is also bounded by the read timeout. The body of a non-2xx answer is not read. Errors
        and logs show the URL without its query (a pre-signed URL's signature).
        """
        shown = shown_url(url)
        deadline = time.monotonic() + timeout
        read_timeout = (self._timeout[0], min(self._timeout[1], timeout))
        proxies = self.proxies_for(url)
        prepared = self._prepare("GET", url, None, {})

        def open_stream() -> requests.Response:
            return self._adapter.send(
                prepared, stream=True, timeout=read_timeout, verify=self._verify, cert=self._cert, proxies=proxies
            )

        try:
            resp = self.around("GET", shown, open_stream) if self.around is not None else open_stream()
        except ConductorError:
            raise
        except _FOREIGN_ERRORS as exc:
            raise self._translated(exc, "GET", shown, read_timeout) from exc
        if resp.status_code >= 300:
            resp.close()  # the body of an error is not wanted; the connection goes with it
            return resp.status_code, bytearray()
        cutoff = _Cutoff(resp, max(0.0, deadline - time.monotonic()))
        try:
            body = self._read_capped(resp, shown, max_bytes, deadline, timeout)
        except ConductorError:
            cutoff.finish()
            resp.close()
            raise
        except _FOREIGN_ERRORS as exc:
            cut = not cutoff.finish()
            resp.close()
            if cut:
                raise self._late("GET", shown, timeout) from exc
            raise self._translated(exc, "GET", shown, read_timeout) from exc
        if not cutoff.finish():  # cut just as the last byte came: the connection is not reusable
            resp.close()
            raise self._late("GET", shown, timeout)
        resp.close()  # read to the end: the connection goes back to the pool
        return resp.status_code, body

    @staticmethod
    def _late(method: str, url: str, timeout: float) -> TransportError:
        return TransportError(f"{method} {url}: the download did not finish within {timeout:.1f}s", method=method, url=url)

    def _read_capped(
        self, resp: requests.Response, shown: str, max_bytes: int, deadline: float, timeout: float
    ) -> bytearray:
        """The body, read in chunks: never past ``max_bytes``, and not on past ``deadline``."""
        length = resp.headers.get("Content-Length")
        size = int(length) if length is not None and length.isdigit() else None
        encoded = "Content-Encoding" in resp.headers  # then the length is not the size we would hold
        if size is not None and not encoded and size > max_bytes:
            raise ResponseTooLargeError(
                f"GET {shown}: the answer is {size} bytes, more than the {max_bytes} allowed", limit=max_bytes,
                size=size, url=shown,
            )
        body = bytearray()
        for chunk in resp.iter_content(_DOWNLOAD_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise ResponseTooLargeError(
                    f"GET {shown}: the answer is more than the {max_bytes} bytes allowed (the reading stopped there)",
                    limit=max_bytes, url=shown,
                )
            if time.monotonic() >= deadline:
                raise self._late("GET", shown, timeout)
        if size is not None and not encoded and len(body) != size:
            # urllib3 2 raises on a short body itself; 1.26 hands it over short unless told otherwise
            raise http.client.IncompleteRead(bytes(body[-64:]), size - len(body))
        return body

    def _prepare(self, method: str, url: str, body: Optional[bytes], headers: Dict[str, str]) -> requests.PreparedRequest:
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        # A plain dict is all HTTPAdapter.send needs (the keys here are spelled canonically).
        all_headers = {**self._headers, **headers}
        if body is not None:
            all_headers["Content-Length"] = str(len(body))
        elif method not in ("GET", "HEAD"):
            all_headers["Content-Length"] = "0"
        prepared.headers = all_headers  # type: ignore[assignment]
        prepared.body = body
        prepared.hooks = {"response": []}
        return prepared

    def _send_prepared(
        self,
        adapter: requests.adapters.HTTPAdapter,
        method: str,
        url: str,
        body: Optional[bytes],
        headers: Dict[str, str],
        timeout: Tuple[float, float],
        proxies: Dict[str, str],
    ) -> requests.Response:
        """Hand one request to the session's HTTPAdapter (urllib3 pool + Retry, TLS, proxies).

        ``Session.request`` would also merge settings, handle cookies and follow redirects on every
        call; a Conductor client needs none of that, and skipping it takes about 40 % off the client
        CPU of each request (see benchmarks/). URLs are built from the validated ``server_url`` and
        quoted path segments, so they need no re-preparation either.

        The body is read here, as ``Session.send`` would: a broken or stalled answer fails inside
        the caller's error translation, and the connection always goes back to the pool.
        """
        prepared = self._prepare(method, url, body, headers)
        resp = adapter.send(prepared, stream=False, timeout=timeout, verify=self._verify, cert=self._cert, proxies=proxies)
        try:
            content = resp.content  # reads the whole body now and releases the connection
        except BaseException:
            resp.close()  # a half-read connection is not reusable: drop it
            raise
        length = resp.headers.get("Content-Length")
        if length is not None and method != "HEAD" and "Content-Encoding" not in resp.headers:
            # urllib3 2 raises on a short body itself; 1.26 hands it over short unless told otherwise
            if length.isdigit() and int(length) != len(content):
                raise http.client.IncompleteRead(content, int(length) - len(content))
        return resp

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send with authentication; return a 2xx response or raise the translated error."""
        headers: Dict[str, str] = {}
        token = self._auth.token() if self._auth is not None else None
        if token:
            headers["X-Authorization"] = token
        resp = self.send(method, path, headers=headers, **kwargs)
        if token and self._auth is not None and _is_token_error(resp):
            log.info("%s %s: token rejected (%s); fetching a new one", method, path, resp.status_code)
            self._auth.invalidate(token)
            token = self._auth.token()
            if token:
                headers["X-Authorization"] = token
            resp = self.send(method, path, headers=headers, **kwargs)
        if resp.status_code >= 400:
            raise api_error(method, self._url(path), resp)
        return resp

    @staticmethod
    def decode_json(resp: requests.Response, what: str) -> Any:
        """The JSON body, None for an empty one (204); bad JSON is an :class:`InvalidResponseError`."""
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return json.loads(resp.content)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            raise InvalidResponseError(
                f"{what}: the server answered HTTP {resp.status_code} with a body that is not JSON: "
                f"{resp.text[:200]!r}",
                status_code=resp.status_code,
                body=resp.text[:2000],
            ) from exc

    def call_json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.decode_json(self.request(method, path, **kwargs), f"{method} {path}")

    def call_text(self, method: str, path: str, **kwargs: Any) -> str:
        # The server sends UTF-8; decoding it directly skips requests' charset guessing.
        return self.request(method, path, **kwargs).content.decode("utf-8", "replace")
