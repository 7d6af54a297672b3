"""``prepare``: a one-off extraction of the jar and an AOT cache (opt-in, faster later starts)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional
from .jar import aot_cache_path, ensure_jar, extracted_jar
from .java import JVM_FLAGS, RealServerError, logger, select_server
from .server import RealConductorServer, _free_port, _tail


# --------------------------------------------------------------------------- AOT cache (opt-in)


def prepare(version: Optional[str] = None) -> Optional[Path]:
    """Fetch + extract the jar and, on Java 25+, record a JVM AOT cache (startup ~3x faster).

    The training run starts the application context and exits (``spring.context.exit=onRefresh``);
    it takes one to two minutes. Returns the cache path, or None when not applicable.
    """
    chosen, java, major = select_server(version)
    jar = ensure_jar(chosen)
    launcher = extracted_jar(jar, java, chosen)
    if launcher is None or major < 25:
        logger.info("AOT cache needs an extractable jar and Java 25+; skipped")
        return None
    target = aot_cache_path(launcher, major)
    work = Path(tempfile.mkdtemp(prefix="conductor-aot-"))
    try:
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        cmd = [
            java,
            *JVM_FLAGS,
            f"-Djava.io.tmpdir={work}",
            "--enable-native-access=ALL-UNNAMED",
            f"-XX:AOTCacheOutput={partial}",
            "-Dspring.context.exit=onRefresh",
            "-jar",
            str(launcher),
            *RealConductorServer.server_args(chosen, _free_port(), work),
        ]
        log_path = work / "training.log"
        with open(log_path, "wb") as log_file:
            code = subprocess.run(cmd, cwd=work, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0 or not partial.is_file():
            raise RealServerError(f"AOT training run failed (exit {code}):\n{_tail(log_path)}")
        os.replace(partial, target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)
