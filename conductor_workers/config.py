"""Client configuration: where the server is, how to authenticate, and HTTP policy."""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import attrs

from . import _validate
from .errors import InvalidOptionError

DEFAULT_SERVER_URL = "http://localhost:8080/api"


def _normalise_server_url(value: str) -> str:
    """``http://host:8080``, ``http://host:8080/`` and ``http://host:8080/api/`` all mean ``.../api``."""
    url = str(value).strip().rstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise InvalidOptionError(f"server_url {value!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidOptionError(
            f"server_url must be an http(s) URL such as 'http://localhost:8080/api', got {value!r}"
        )
    if not parts.path.endswith("/api"):
        url += "/api"
    return url


MAX_RETRIES = 100  # with urllib3's backoff capped at 120 s, more retries only hide an outage
MAX_POOL_SIZE = 100_000
MAX_PAYLOAD_KB = 2 ** 30  # 1 TiB: far above any server's payload limit


def _seconds(positive: bool) -> Any:
    def check(instance: object, attribute: "attrs.Attribute[float]", value: float) -> None:
        _validate.seconds(attribute.name, value, positive=positive)

    return check


def _count(minimum: int, maximum: int) -> Any:
    def check(instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
        _validate.count(attribute.name, value, minimum=minimum, maximum=maximum)

    return check


@attrs.frozen
class Configuration:
    """How to reach a Conductor server. Immutable; build a new one with :func:`attrs.evolve`.

    :param server_url: base URL of the REST API, with or without the ``/api`` suffix.
    :param key_id: Orkes application key id (enables ``X-Authorization`` token auth with ``key_secret``).
    :param key_secret: Orkes application key secret; never shown by ``repr`` nor logged.
    Every number is checked once, here (InvalidOptionError otherwise): durations are finite and at
    most 30 days, counts are ints within the maxima of this module.

    :param connect_timeout: seconds to wait for a TCP/TLS connection.
    :param read_timeout: seconds to wait for an answer; long polls add their own timeout on top.
    :param verify: TLS verification: True, False, or the path of a CA bundle.
    :param cert: client certificate for mTLS: a PEM path, or ``(cert_path, key_path)``.
    :param proxies: ``{"http": ..., "https": ...}``; None resolves ``HTTP(S)_PROXY``/``NO_PROXY`` once.
    :param trust_env: read proxies and ``REQUESTS_CA_BUNDLE`` from the environment (once, at build).
    :param max_retries: retries of idempotent calls on connection errors and 429/502/503/504.
    :param backoff_factor: urllib3 backoff factor between those retries, in seconds.
    :param pool_maxsize: HTTP connections kept per host; size it to the number of worker threads.
    :param token_ttl_seconds: how long an Orkes token is reused before it is fetched again.
    :param payload_threshold_kb: a worker's output above this many KB is uploaded to external storage
        before it is reported, when ``upload_large_payloads`` is on (the server's
        ``task-output-payload-size-threshold``, 3072 KB by default).
    :param max_payload_kb: a worker's output above this many KB fails its task locally with
        ``FAILED_WITH_TERMINAL_ERROR`` (the server's maximum, 10240 KB by default, would fail it anyway);
        a payload downloaded from external storage is never read past it (the task whose input it is
        fails the same way, with the size in the reason).
    :param download_timeout: seconds one download from external storage may take in all, however
        its bytes trickle in (each read is also bounded by ``read_timeout``); a task's input download
        is bounded by its worker's ``time_limit`` too, when that is shorter.
    :param upload_large_payloads: upload outputs above ``payload_threshold_kb`` yourself (needs a
        storage that takes uploads, e.g. S3 pre-signed URLs); off: send them inline, and the server
        moves them to its storage.
    """

    server_url: str = attrs.field(default=DEFAULT_SERVER_URL, converter=_normalise_server_url)
    key_id: Optional[str] = None
    key_secret: Optional[str] = attrs.field(default=None, repr=lambda value: "***" if value else "None")
    connect_timeout: float = attrs.field(default=5.0, validator=_seconds(positive=True))
    read_timeout: float = attrs.field(default=30.0, validator=_seconds(positive=True))
    verify: Union[bool, str] = True
    cert: Union[None, str, Tuple[str, str]] = None
    proxies: Optional[Mapping[str, str]] = None
    trust_env: bool = True
    max_retries: int = attrs.field(default=3, validator=_count(0, MAX_RETRIES))
    backoff_factor: float = attrs.field(default=0.2, validator=_seconds(positive=False))
    pool_maxsize: int = attrs.field(default=64, validator=_count(1, MAX_POOL_SIZE))
    token_ttl_seconds: float = attrs.field(default=45 * 60, validator=_seconds(positive=True))
    payload_threshold_kb: int = attrs.field(default=3072, validator=_count(1, MAX_PAYLOAD_KB))
    max_payload_kb: int = attrs.field(default=10240, validator=_count(1, MAX_PAYLOAD_KB))
    download_timeout: float = attrs.field(default=60.0, validator=_seconds(positive=True))
    upload_large_payloads: bool = False

    @property
    def has_auth(self) -> bool:
        return bool(self.key_id and self.key_secret)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: object) -> "Configuration":
        """Read ``CONDUCTOR_SERVER_URL``, ``CONDUCTOR_AUTH_KEY`` and ``CONDUCTOR_AUTH_SECRET``."""
        env = os.environ if environ is None else environ
        values: dict = {}
        if env.get("CONDUCTOR_SERVER_URL"):
            values["server_url"] = env["CONDUCTOR_SERVER_URL"]
        if env.get("CONDUCTOR_AUTH_KEY") and env.get("CONDUCTOR_AUTH_SECRET"):
            values["key_id"] = env["CONDUCTOR_AUTH_KEY"]
            values["key_secret"] = env["CONDUCTOR_AUTH_SECRET"]
        values.update(overrides)
        return cls(**values)


__all__ = ["Configuration", "DEFAULT_SERVER_URL"]
