"""The real conductor-oss server for tests, CI and benchmarks (``tests/real_server.py`` runs it).

* :mod:`.java`: server versions and a Java runtime new enough for one; ``select_server``;
* :mod:`.jar`: the boot jar from the local Maven repository (``mvn dependency:get`` when missing),
  the extracted jar and AOT cache;
* :mod:`.server`: ``RealConductorServer`` (a JVM on a loopback port with a throwaway database),
  ``check_health``, ``postgres_args``, ``describe_selection``;
* :mod:`.aot`: ``prepare``, a one-off AOT cache.
"""
from __future__ import annotations

from .aot import prepare
from .jar import ensure_jar, jar_path
from .java import DEFAULT_VERSION, FALLBACK_VERSION, RealServerError, find_java, select_server
from .server import RealConductorServer, check_health, describe_selection, postgres_args

__all__ = [
    "DEFAULT_VERSION", "FALLBACK_VERSION", "RealConductorServer", "RealServerError", "check_health",
    "describe_selection", "ensure_jar", "find_java", "jar_path", "postgres_args", "prepare", "select_server",
]
