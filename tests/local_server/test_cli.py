"""``python -m conductor_workers server``: starts, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests


def test_server_command_serves_and_stops_on_sigterm(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "conductor_workers", "server", "--port", "0", "--db", str(tmp_path / "c.db"),
         "--log-level", "debug"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        line = process.stdout.readline()
        assert line.startswith("LocalConductor listening on http://"), line
        url = line.split()[-1]
        assert requests.get(url + "/health", timeout=5).json()["healthy"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "GET /api/health" in process.stderr.read()  # one DEBUG line per request
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
