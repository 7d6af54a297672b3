"""Support code shared by the test suites and the benchmarks (no tests here).

Imported as the top-level package ``support`` (``from support.proxy import LoopbackProxy``): pytest
puts ``tests/`` on ``sys.path`` for ``tests/conftest.py`` (default ``prepend`` import mode, ``tests/``
has no ``__init__.py``); the benchmark scripts append ``tests/`` to ``sys.path`` themselves.

* ``support.waiting``: ``wait_until``, the polling wait the suites share instead of fixed sleeps;
* ``support.proxy``: ``LoopbackProxy``, a loopback HTTP proxy: counts, gates, cuts, rejects, plays chaos;
* ``support.scripted_server``: ``ScriptedServer``, an HTTP server answering each path from a script;
* ``support.storage_server``: ``StorageServer``, an external payload storage with huge, endless and slow bodies;
* ``support.fault_server``: ``FaultServer``, Conductor's task API for one task type, with scripted faults;
* ``support.workers``: ``Env`` and ``Flow``, a server with helpers for the worker-framework tests;
* ``support.sockets``: the loopback listener, clean close and reset the two socket servers above share;
* ``support.conductor_oss``: the real conductor-oss server (``RealConductorServer``; versions and Java,
  the boot jar from Maven, the process); ``python tests/real_server.py`` runs one by hand;
* ``support.postgres``: ``PostgresServer``, a throwaway PostgreSQL from Debian's package.
"""
