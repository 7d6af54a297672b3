"""A Conductor cluster on this machine (PostgreSQL, two conductor-oss nodes, HAProxy) and the tests
and benchmark that run a worker fleet against it; see ``harness.py``."""
