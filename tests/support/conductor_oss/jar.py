"""The boot jar in the local Maven repository (``mvn dependency:get`` when missing), and the
extracted jar / AOT cache that make the JVM start faster."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional
from .java import ARTIFACT_ID, GROUP_ID, RealServerError, logger


# --------------------------------------------------------------------------- the jar


def maven_repo_local() -> Path:
    """The local Maven repository: ``$MAVEN_REPO_LOCAL``, ``-Dmaven.repo.local`` in
    ``$MAVEN_OPTS``, else ``~/.m2/repository``."""
    explicit = os.environ.get("MAVEN_REPO_LOCAL")
    if explicit:
        return Path(explicit).expanduser()
    match = re.search(r"-Dmaven\.repo\.local=(\S+)", os.environ.get("MAVEN_OPTS", ""))
    if match:
        return Path(match.group(1)).expanduser()
    return Path.home() / ".m2" / "repository"


def jar_path(version: str) -> Path:
    group_dir = Path(*GROUP_ID.split("."))
    return maven_repo_local() / group_dir / ARTIFACT_ID / version / f"{ARTIFACT_ID}-{version}-boot.jar"


def _mvn_get(artifact: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RealServerError(f"{artifact} is not in {maven_repo_local()} and `mvn` is not installed")
    cmd = [
        mvn,
        "-q",
        "-B",
        "dependency:get",
        f"-Dartifact={artifact}",
        "-Dtransitive=false",
        f"-Dmaven.repo.local={maven_repo_local()}",
    ]
    logger.info("fetching %s: %s", artifact, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RealServerError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")


def ensure_jar(version: str) -> Path:
    """Path of the server's boot jar, downloading it with ``mvn dependency:get`` if missing."""
    path = jar_path(version)
    if not path.is_file():
        _mvn_get(f"{GROUP_ID}:{ARTIFACT_ID}:{version}:jar:boot")
        if not path.is_file():
            raise RealServerError(f"mvn reported success but {path} does not exist")
    return path


# --------------------------------------------------------------------------- startup speed-ups


def cache_root() -> Path:
    return Path(os.environ.get("CONDUCTOR_SERVER_CACHE_DIR") or Path.home() / ".cache" / "conductor-workers")


def extracted_jar(jar: Path, java: str, version: str) -> Optional[Path]:
    """Spring Boot 3.3+ ``-Djarmode=tools extract`` layout of ``jar``, cached; None if unsupported.

    Running the extracted jar skips opening the 450 MB nested jar at every start (a few
    seconds) and is what a JVM AOT cache needs (a stable class path).
    """
    target = cache_root() / f"{ARTIFACT_ID}-{version}" / "extracted"
    launcher = target / jar.name
    if launcher.is_file():
        return launcher
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=target.parent))
    try:
        proc = subprocess.run(
            [java, "-Djarmode=tools", "-jar", str(jar), "extract", "--destination", str(staging / "x")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0 or not (staging / "x" / jar.name).is_file():
            logger.info("jar extraction not available for %s; running the fat jar", jar.name)
            return None
        try:
            os.rename(staging / "x", target)
        except OSError:  # another process won the race
            if not launcher.is_file():
                raise
        return launcher
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("could not extract %s (%s); running the fat jar", jar, exc)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def aot_cache_path(launcher: Path, java_major_version: int) -> Path:
    return launcher.parent.parent / f"app-java{java_major_version}.aot"
