"""Server versions, and finding a Java runtime new enough for one (3.22+ needs Java 21+)."""
from __future__ import annotations

import glob
import logging
import os
import re
import subprocess
from typing import Optional, Tuple

logger = logging.getLogger(__name__)

DEFAULT_VERSION = os.environ.get("CONDUCTOR_SERVER_VERSION") or "3.32.1"
# Newest 3.21.x published on Maven Central (3.21.20 and 3.21.21 are tags only, not on Central).
FALLBACK_VERSION = "3.21.14"
GROUP_ID = "org.conductoross"
ARTIFACT_ID = "conductor-server"
JVM_ROOT = "/usr/lib/jvm"

STOP_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 40

# JVM flags for a small (2-core) machine. SerialGC: no GC threads competing with the client
# under test; a fixed 1 GiB heap avoids resizing. C2 stays on (no TieredStopAtLevel=1) so that
# benchmark throughput is not capped by C1-only code.
JVM_FLAGS: Tuple[str, ...] = ("-Xms1g", "-Xmx1g", "-XX:+UseSerialGC", "-Dfile.encoding=UTF-8")


class RealServerError(RuntimeError):
    """The real server could not be obtained or started."""



# --------------------------------------------------------------------------- versions and Java


def parse_version(version: str) -> Tuple[int, ...]:
    """``"3.32.1"`` -> ``(3, 32, 1)``; a suffix such as ``-rc18`` is ignored."""
    numbers = re.match(r"^(\d+(?:\.\d+)*)", version)
    if not numbers:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in numbers.group(1).split("."))


def required_java(version: str) -> int:
    """Minimum Java major version the server ``version`` runs on."""
    return 21 if parse_version(version) >= (3, 22) else 17


def uses_sqlite(version: str) -> bool:
    """Whether the bundled configuration of ``version`` is the standalone SQLite one (3.22+)."""
    return parse_version(version) >= (3, 22)


def java_major(java: str) -> Optional[int]:
    """Major version of the ``java`` executable, parsed from ``java -version``; None if unusable."""
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("cannot run %s -version: %s", java, exc)
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if proc.returncode != 0 or not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    return major


def find_java(min_major: int) -> Optional[str]:
    """Path of a Java runtime of at least ``min_major``.

    ``$JAVA_HOME/bin/java`` wins if it is new enough; otherwise the newest runtime under
    /usr/lib/jvm. Returns None when there is none.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = os.path.join(java_home, "bin", "java")
        major = java_major(candidate) if os.access(candidate, os.X_OK) else None
        if major is not None and major >= min_major:
            return candidate
    best: Optional[Tuple[int, str]] = None
    for candidate in sorted(glob.glob(os.path.join(JVM_ROOT, "*", "bin", "java"))):
        real = os.path.realpath(candidate)
        major = java_major(real)
        if major is not None and major >= min_major and (best is None or major > best[0]):
            best = (major, real)
    return best[1] if best else None


def select_server(version: Optional[str] = None) -> Tuple[str, str, int]:
    """Choose ``(version, java_path, java_major)`` to run.

    Falls back to ``FALLBACK_VERSION`` on Java 17 when ``version`` needs Java 21+ and no such
    runtime exists.
    """
    wanted = version or DEFAULT_VERSION
    java = find_java(required_java(wanted))
    if java is None and required_java(wanted) > 17:
        java = find_java(17)
        if java is not None:
            logger.warning(
                "no Java %d+ runtime found: running conductor-server %s on %s instead of %s",
                required_java(wanted),
                FALLBACK_VERSION,
                java,
                wanted,
            )
            wanted = FALLBACK_VERSION
    if java is None:
        raise RealServerError(
            f"no Java {required_java(wanted)}+ runtime found (checked $JAVA_HOME and "
            f"{JVM_ROOT}/*/bin/java); install one (e.g. Temurin 21) to run conductor-server"
        )
    major = java_major(java)
    assert major is not None
    return wanted, java, major
