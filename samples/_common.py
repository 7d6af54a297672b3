"""What every sample shares: which server to talk to, and logging."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from conductor_workers import ConductorClient, Configuration


@contextlib.contextmanager
def conductor_client(verbose: bool = False) -> Iterator[ConductorClient]:
    """A client for ``CONDUCTOR_SERVER_URL`` (+ ``CONDUCTOR_AUTH_KEY``/``_SECRET``), or, when it is
    not set, for an embedded ``LocalConductor`` that lives as long as the block."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    with contextlib.ExitStack() as stack:
        url = os.environ.get("CONDUCTOR_SERVER_URL")
        if not url:
            from conductor_workers.testing import LocalConductor

            url = stack.enter_context(LocalConductor()).url
        print(f"server: {url}")
        yield stack.enter_context(ConductorClient(Configuration.from_env(server_url=url)))
