"""How the client's ``requests.Session`` is built: connection pools, urllib3 retry policies (all
methods on a failed connect; reads and 429/5xx only for idempotent ones; a connect-only policy for
polls), ``Retry-After`` capped, CA/certificates resolved once from the environment, and the proxies
for a URL decided as requests decides them (the transport resolves them once per host)."""
from __future__ import annotations

import os
from typing import Any, Dict

import requests
import requests.adapters
import requests.utils
from urllib3.util.retry import Retry

from ._version import __version__
from .config import Configuration

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_RETRY_STATUSES = (429, 502, 503, 504)
RETRY_AFTER_CAP = 30.0  # seconds: a longer Retry-After is honoured only up to this


class _CappedRetry(Retry):
    """urllib3's Retry, with ``Retry-After`` honoured up to :data:`RETRY_AFTER_CAP` seconds."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(float(super().parse_retry_after(retry_after)), RETRY_AFTER_CAP)


def _adapter(config: Configuration, retry: Retry) -> requests.adapters.HTTPAdapter:
    return requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=config.pool_maxsize, max_retries=retry)


def _idempotent_retry(config: Configuration) -> Retry:
    """Connection errors for every method; read errors and 429/502/503/504 for idempotent ones."""
    return _CappedRetry(
        total=config.max_retries,
        connect=config.max_retries,
        read=config.max_retries,
        status=config.max_retries,
        backoff_factor=config.backoff_factor,
        status_forcelist=_RETRY_STATUSES,
        allowed_methods=_IDEMPOTENT_METHODS,  # connect errors are retried for every method
        raise_on_status=False,
        respect_retry_after_header=True,
    )


def _connect_only_retry(config: Configuration) -> Retry:
    """For requests that must not be sent twice (polls dequeue tasks): only a failed connect is retried.

    Nothing is retried once the request may have reached the server, and urllib3 never sleeps on a
    ``Retry-After``: the caller (the runner) decides, where ``stop_polling`` can interrupt the wait.
    """
    return Retry(
        total=config.max_retries,
        connect=config.max_retries,
        read=0,
        status=0,
        other=0,
        redirect=0,
        backoff_factor=config.backoff_factor,
        raise_on_status=False,
        raise_on_redirect=False,
        respect_retry_after_header=False,
    )


def resolve_proxies(config: Configuration, url: str) -> Dict[str, str]:
    """The proxies for requests to ``url``'s host.

    ``config.proxies`` when given, for every URL (``NO_PROXY`` does not apply to them, as in
    requests); otherwise, with ``trust_env``, ``HTTP(S)_PROXY``/``ALL_PROXY`` unless ``NO_PROXY``
    names the host (requests' own rules: suffixes, ``*``, CIDR ranges, ports); else none.
    """
    if config.proxies is not None:
        return dict(config.proxies)
    if config.trust_env:
        return dict(requests.utils.get_environ_proxies(url))
    return {}


def _build_session(config: Configuration) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # resolved below, once, instead of on every request
    verify: Any = config.verify
    if config.trust_env and verify is True:
        verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.proxies.update(resolve_proxies(config, config.server_url))
    session.verify = verify
    session.cert = config.cert
    adapter = _adapter(config, _idempotent_retry(config))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Accept": "application/json", "User-Agent": f"conductor-workers/{__version__}"})
    return session


__all__ = ["RETRY_AFTER_CAP", "resolve_proxies"]
