"""PollingOptions validation, environment spellings and precedence, and Configuration."""
from __future__ import annotations

import attrs
import pytest

from conductor_workers.config import DEFAULT_SERVER_URL, Configuration
from conductor_workers.errors import ConductorError, InvalidOptionError
from conductor_workers.options import (
    MAX_BATCH_POLL_TIMEOUT_MS,
    OPTION_NAMES,
    PollingOptions,
    options_from_env,
    resolve_options,
)

# -- PollingOptions --------------------------------------------------------------------------------


def test_defaults():
    options = PollingOptions()
    assert options.poll_interval == 100
    assert options.concurrency == 1
    assert options.batch_poll_timeout == 2000
    assert options.domain is None and options.worker_id is None
    assert options.paused is False and options.lease_extend is False
    assert options.explicit() == {}
    assert set(OPTION_NAMES) == {
        "poll_interval",
        "concurrency",
        "domain",
        "worker_id",
        "batch_poll_timeout",
        "paused",
        "lease_extend",
        "time_limit",
        "time_limit_terminal",
    }
    assert options.time_limit is None and options.time_limit_terminal is False


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"concurrency": 0}, "concurrency must be between 1 and 10000"),
        ({"concurrency": -3}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency must be an int"),
        ({"concurrency": "4"}, "concurrency must be an int"),
        ({"concurrency": True}, "concurrency must be an int"),
        ({"poll_interval": -1}, "poll_interval must be between 0 and"),
        ({"poll_interval": 1.5}, "poll_interval must be an int"),
        ({"batch_poll_timeout": 6000}, "batch_poll_timeout must be between 0 and 5000"),
        ({"batch_poll_timeout": -1}, "batch_poll_timeout"),
        ({"paused": "yes"}, "paused must be True or False"),
        ({"paused": 1}, "paused must be True or False"),
        ({"lease_extend": None}, "lease_extend must be True or False"),
        ({"domain": ""}, "domain must be a non-empty string"),
        ({"worker_id": 7}, "worker_id must be a non-empty string"),
        ({"time_limit": 0}, "time_limit must be a number of seconds > 0"),
        ({"time_limit": -1.5}, "time_limit must be a number of seconds > 0"),
        ({"time_limit": "5"}, "time_limit must be a number of seconds > 0"),
        ({"time_limit": float("nan")}, "time_limit must be a number of seconds > 0"),
        ({"time_limit": float("inf")}, "time_limit must be a number of seconds > 0"),
        ({"time_limit_terminal": "yes"}, "time_limit_terminal must be True or False"),
        ({"foo": 1}, "unknown polling option(s) foo"),
    ],
)
def test_bad_values_raise_and_change_nothing(changes, fragment):
    before = PollingOptions(concurrency=3, poll_interval=50)
    with pytest.raises(InvalidOptionError) as info:
        before.evolve(**changes)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ConductorError)
    assert before == PollingOptions(concurrency=3, poll_interval=50)


def test_bad_values_in_constructor():
    with pytest.raises(InvalidOptionError):
        PollingOptions(concurrency=0)
    with pytest.raises(InvalidOptionError):
        PollingOptions(batch_poll_timeout=MAX_BATCH_POLL_TIMEOUT_MS + 1)
    with pytest.raises(TypeError):
        PollingOptions(foo=1)  # type: ignore[call-arg]


def test_unknown_option_lists_valid_ones():
    with pytest.raises(InvalidOptionError) as info:
        PollingOptions().evolve(thread_count=4, foo=1)
    message = str(info.value)
    assert "foo" in message and "thread_count" in message
    for name in OPTION_NAMES:
        assert name in message


def test_evolve_and_explicit():
    options = PollingOptions().evolve(concurrency=8, batch_poll_timeout=5000, paused=True, domain="blue")
    assert options.concurrency == 8 and options.batch_poll_timeout == 5000 and options.paused
    assert options.explicit() == {
        "concurrency": 8,
        "batch_poll_timeout": 5000,
        "paused": True,
        "domain": "blue",
    }
    assert PollingOptions(poll_interval=0, batch_poll_timeout=500).poll_interval == 0
    assert PollingOptions(poll_interval=10, batch_poll_timeout=0).batch_poll_timeout == 0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.concurrency = 1  # type: ignore[misc]


# -- options_from_env --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "conductor.worker.greet.concurrency",
        "conductor_worker_greet_concurrency",
        "CONDUCTOR_WORKER_GREET_CONCURRENCY",
        "conductor.worker.all.concurrency",
        "conductor_worker_all_concurrency",
        "CONDUCTOR_WORKER_ALL_CONCURRENCY",
        "conductor_worker_concurrency",
        "CONDUCTOR_WORKER_CONCURRENCY",
        # the official SDK's name for the same option
        "conductor.worker.greet.thread_count",
        "conductor_worker_greet_thread_count",
        "CONDUCTOR_WORKER_GREET_THREAD_COUNT",
        "conductor.worker.all.thread_count",
        "conductor_worker_all_thread_count",
        "CONDUCTOR_WORKER_ALL_THREAD_COUNT",
        "CONDUCTOR_WORKER_THREAD_COUNT",
    ],
)
def test_every_spelling_of_concurrency(variable):
    assert options_from_env("greet", {variable: "7"}) == {"concurrency": 7}
    # Other tasks are not affected by task-specific spellings.
    other = options_from_env("other", {variable: "7"})
    if ".greet." in variable or "_greet_" in variable.lower():
        assert other == {}
    else:
        assert other == {"concurrency": 7}


def test_mixed_case_task_name():
    env = {"CONDUCTOR_WORKER_MyTask_CONCURRENCY": "3", "CONDUCTOR_WORKER_MYTASK_POLL_INTERVAL": "250"}
    assert options_from_env("MyTask", env) == {"concurrency": 3, "poll_interval": 250}


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"conductor_worker_greet_polling_interval": "250"}, {"poll_interval": 250}),
        ({"conductor_worker_greet_poll_interval": "250"}, {"poll_interval": 250}),
        ({"CONDUCTOR_WORKER_GREET_POLLING_INTERVAL": "1.5e3"}, {"poll_interval": 1500}),
        ({"conductor.worker.greet.poll_timeout": "2000"}, {"batch_poll_timeout": 2000}),
        ({"CONDUCTOR_WORKER_GREET_BATCH_POLL_TIMEOUT": "300"}, {"batch_poll_timeout": 300}),
        ({"conductor_worker_greet_lease_extend_enabled": "true"}, {"lease_extend": True}),
        ({"CONDUCTOR_WORKER_GREET_LEASE_EXTEND": "ON"}, {"lease_extend": True}),
        ({"conductor_worker_greet_paused": "False"}, {"paused": False}),
        ({"conductor_worker_greet_paused": "1"}, {"paused": True}),
        ({"conductor_worker_all_paused": "no"}, {"paused": False}),
        ({"conductor_worker_greet_domain": "blue"}, {"domain": "blue"}),
        ({"conductor_worker_greet_domain": ""}, {"domain": None}),
        ({"CONDUCTOR_WORKER_GREET_WORKER_ID": " host-9 "}, {"worker_id": "host-9"}),
        ({"CONDUCTOR_WORKER_GREET_TIME_LIMIT": "2.5"}, {"time_limit": 2.5}),
        ({"conductor_worker_all_time_limit": "none"}, {"time_limit": None}),
        ({"conductor.worker.greet.time_limit_terminal": "true"}, {"time_limit_terminal": True}),
        ({"CONDUCTOR_SERVER_URL": "http://x", "unrelated": "1"}, {}),
    ],
)
def test_each_property_and_alias(env, expected):
    assert options_from_env("greet", env) == expected


def test_priority_order_of_levels():
    # Highest first, as documented (the official SDK's order).
    ladder = [
        "conductor.worker.greet.concurrency",
        "conductor_worker_greet_concurrency",
        "CONDUCTOR_WORKER_GREET_CONCURRENCY",
        "conductor.worker.all.concurrency",
        "conductor_worker_all_concurrency",
        "CONDUCTOR_WORKER_ALL_CONCURRENCY",
        "conductor_worker_concurrency",
        "CONDUCTOR_WORKER_CONCURRENCY",
    ]
    for winner in range(len(ladder)):
        env = {name: str(index + 1) for index, name in enumerate(ladder) if index >= winner}
        assert options_from_env("greet", env) == {"concurrency": winner + 1}, ladder[winner]


def test_task_specific_beats_all_beats_global_across_aliases():
    env = {
        "CONDUCTOR_WORKER_THREAD_COUNT": "1",
        "conductor_worker_all_thread_count": "2",
        "CONDUCTOR_WORKER_GREET_THREAD_COUNT": "3",
    }
    assert options_from_env("greet", env) == {"concurrency": 3}
    assert options_from_env("other", env) == {"concurrency": 2}
    # An "all" variable with the official name beats a global one with ours.
    env = {"CONDUCTOR_WORKER_CONCURRENCY": "1", "conductor_worker_all_thread_count": "2"}
    assert options_from_env("greet", env) == {"concurrency": 2}


def test_our_name_beats_official_alias_at_the_same_level():
    env = {"conductor_worker_greet_thread_count": "2", "conductor_worker_greet_concurrency": "5"}
    assert options_from_env("greet", env) == {"concurrency": 5}
    env = {"conductor_worker_greet_polling_interval": "10", "conductor_worker_greet_poll_interval": "20"}
    assert options_from_env("greet", env) == {"poll_interval": 20}


def test_several_properties_at_once():
    env = {
        "conductor.worker.greet.thread_count": "4",
        "CONDUCTOR_WORKER_ALL_POLLING_INTERVAL": "500",
        "CONDUCTOR_WORKER_DOMAIN": "green",
        "conductor_worker_greet_poll_timeout": "100",
        "conductor_worker_greet_lease_extend_enabled": "yes",
    }
    found = options_from_env("greet", env)
    assert found == {
        "concurrency": 4,
        "poll_interval": 500,
        "domain": "green",
        "batch_poll_timeout": 100,
        "lease_extend": True,
    }
    assert resolve_options(environment=found).concurrency == 4


@pytest.mark.parametrize(
    "variable, raw",
    [
        ("conductor_worker_greet_thread_count", "many"),
        ("CONDUCTOR_WORKER_ALL_POLLING_INTERVAL", "1s"),
        ("conductor.worker.greet.paused", "maybe"),
        ("CONDUCTOR_WORKER_LEASE_EXTEND_ENABLED", "enabled"),
        ("CONDUCTOR_WORKER_GREET_TIME_LIMIT", "5s"),
    ],
)
def test_bad_env_values_name_the_variable(variable, raw):
    with pytest.raises(InvalidOptionError) as info:
        options_from_env("greet", {variable: raw})
    assert variable in str(info.value)
    assert repr(raw) in str(info.value)


def test_env_values_that_parse_but_are_invalid_are_rejected_naming_the_variable():
    with pytest.raises(InvalidOptionError, match="CONDUCTOR_WORKER_GREET_CONCURRENCY='0': concurrency"):
        options_from_env("greet", {"CONDUCTOR_WORKER_GREET_CONCURRENCY": "0"})
    with pytest.raises(InvalidOptionError, match="CONDUCTOR_WORKER_GREET_TIME_LIMIT='-3': time_limit"):
        options_from_env("greet", {"CONDUCTOR_WORKER_GREET_TIME_LIMIT": "-3"})


def test_every_option_is_read_from_the_environment_and_settable_on_a_worker():
    """One list of options (PollingOptions' fields): the environment and Worker follow it."""
    from conductor_workers import Worker

    samples = {"int": ("7", 7), "bool": ("true", True), "str": ("blue", "blue"), "seconds": ("1.5", 1.5)}
    for field in attrs.fields(PollingOptions):
        raw, value = samples[field.metadata["kind"]]
        assert options_from_env("greet", {f"CONDUCTOR_WORKER_GREET_{field.name.upper()}": raw}) == {field.name: value}
        worker = Worker("greet", **{field.name: value})
        assert worker.own_options() == {field.name: value}


def test_options_from_env_reads_os_environ(monkeypatch):
    monkeypatch.setenv("conductor_worker_envtask_thread_count", "6")
    assert options_from_env("envtask") == {"concurrency": 6}


# -- resolve_options -------------------------------------------------------------------------------


def test_resolve_precedence_manager_worker_environment():
    manager = {"concurrency": 2, "poll_interval": 10, "domain": "m"}
    worker = {"concurrency": 4, "domain": "w"}
    environment = {"domain": "e"}
    options = resolve_options(manager, worker, environment)
    assert options == PollingOptions(concurrency=4, poll_interval=10, domain="e")
    assert resolve_options() == PollingOptions()
    assert resolve_options(manager=manager) == PollingOptions(concurrency=2, poll_interval=10, domain="m")
    assert resolve_options(worker=worker, environment={}) == PollingOptions(concurrency=4, domain="w")


def test_resolve_rejects_unknown_names_in_any_layer():
    for layer in ("manager", "worker", "environment"):
        with pytest.raises(InvalidOptionError, match="bogus"):
            resolve_options(**{layer: {"bogus": 1}})


# -- Configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("http://localhost:8080", "http://localhost:8080/api"),
        ("http://localhost:8080/", "http://localhost:8080/api"),
        ("http://localhost:8080/api", "http://localhost:8080/api"),
        ("http://localhost:8080/api/", "http://localhost:8080/api"),
        ("  https://conductor.example.com/api//  ", "https://conductor.example.com/api"),
        ("https://example.com/conductor", "https://example.com/conductor/api"),
        ("https://example.com/conductor/api", "https://example.com/conductor/api"),
    ],
)
def test_server_url_normalisation(given, expected):
    assert Configuration(server_url=given).server_url == expected


@pytest.mark.parametrize("bad", ["localhost:8080", "ftp://host/api", "http://", "", "/api", "not a url"])
def test_bad_server_urls_rejected(bad):
    with pytest.raises(ValueError, match="server_url"):
        Configuration(server_url=bad)


def test_configuration_defaults_and_validation():
    config = Configuration()
    assert config.server_url == DEFAULT_SERVER_URL == "http://localhost:8080/api"
    assert not config.has_auth
    assert config.token_ttl_seconds == 45 * 60
    with pytest.raises(ValueError, match="read_timeout"):
        Configuration(read_timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        Configuration(max_retries=-1)
    assert Configuration(max_retries=0).max_retries == 0
    evolved = attrs.evolve(config, server_url="http://other:1")
    assert evolved.server_url == "http://other:1/api"


def test_secret_hidden_in_repr():
    config = Configuration(server_url="http://h:1", key_id="my-key", key_secret="s3cr3t-value")
    assert config.has_auth
    text = repr(config)
    assert "s3cr3t-value" not in text
    assert "***" in text
    assert "my-key" in text
    assert "s3cr3t-value" not in str(config)
    assert "key_secret=None" in repr(Configuration())


def test_has_auth_needs_both():
    assert not Configuration(key_id="k").has_auth
    assert not Configuration(key_secret="s").has_auth


def test_from_env_with_injected_dict():
    env = {
        "CONDUCTOR_SERVER_URL": "http://conductor:9000/",
        "CONDUCTOR_AUTH_KEY": "key-1",
        "CONDUCTOR_AUTH_SECRET": "secret-1",
    }
    config = Configuration.from_env(env)
    assert config.server_url == "http://conductor:9000/api"
    assert config.key_id == "key-1" and config.key_secret == "secret-1"
    assert "secret-1" not in repr(config)

    # Only a key, no secret: no auth at all.
    partial = Configuration.from_env({"CONDUCTOR_AUTH_KEY": "key-1"})
    assert partial.key_id is None and not partial.has_auth
    assert partial.server_url == DEFAULT_SERVER_URL

    # Overrides beat the environment.
    overridden = Configuration.from_env(env, server_url="http://x:1", read_timeout=3.0)
    assert overridden.server_url == "http://x:1/api" and overridden.read_timeout == 3.0

    with pytest.raises(ValueError):
        Configuration.from_env({"CONDUCTOR_SERVER_URL": "conductor:9000"})


def test_from_env_reads_os_environ(monkeypatch):
    monkeypatch.setenv("CONDUCTOR_SERVER_URL", "http://from-env:1234")
    monkeypatch.delenv("CONDUCTOR_AUTH_KEY", raising=False)
    monkeypatch.delenv("CONDUCTOR_AUTH_SECRET", raising=False)
    assert Configuration.from_env().server_url == "http://from-env:1234/api"


# -- numbers: one rule for every channel (keyword, environment, manager, health, Configuration) -------

import decimal  # noqa: E402
import math  # noqa: E402
import threading  # noqa: E402

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conductor_workers import ConductorClient, TaskManager, worker_task  # noqa: E402
from conductor_workers.health import start_health_server  # noqa: E402

NUMERIC_OPTIONS = ("poll_interval", "concurrency", "batch_poll_timeout", "time_limit")
INT_OPTIONS = ("poll_interval", "concurrency", "batch_poll_timeout")

# Anything a caller might pass: floats with inf/nan/huge/tiny/negative, huge ints, strings, bools, None.
ANY_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.sampled_from([0, 1, 4, 5000, 5001, 10 ** 12, 1e300, 1e-300, 0.5, 2.0, -0.0, float("nan"), float("inf")]),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
)
# What an environment variable may hold.
ENV_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
    st.text(alphabet="0123456789.eE+-_ infatyINFNn", max_size=8),
    st.sampled_from(["inf", "-inf", "nan", "NaN", "1e300", "1e400", "1.7", "4.0", "1_000", " 7 ", "9" * 30]),
)


def wait_accepts(seconds: float) -> None:
    """Raise as threading's waits would (OverflowError, ValueError) for a timeout they cannot take;
    returns at once (the lock is free), so huge values cost nothing."""
    lock = threading.Lock()
    assert lock.acquire(timeout=seconds)
    lock.release()


def assert_usable(options: PollingOptions) -> None:
    """Every number of ``options`` is of its kind and can be waited on by the runtime."""
    for name in INT_OPTIONS:
        assert type(getattr(options, name)) is int, name
    assert options.concurrency >= 1
    wait_accepts(options.poll_interval / 1000.0)
    wait_accepts(options.batch_poll_timeout / 1000.0)
    if options.time_limit is not None:
        assert isinstance(options.time_limit, float) or type(options.time_limit) is int
        assert math.isfinite(options.time_limit) and options.time_limit > 0
        wait_accepts(options.time_limit)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NUMERIC_OPTIONS), value=ANY_VALUE)
@example(name="time_limit", value=1e300)
@example(name="poll_interval", value=10 ** 20)
@example(name="concurrency", value=10 ** 30)
def test_any_keyword_value_is_refused_or_usable(name, value):
    try:
        options = PollingOptions(**{name: value})
    except InvalidOptionError as exc:
        assert name in str(exc) and "\n" not in str(exc)
        return
    assert_usable(options)
    assert getattr(options, name) == value


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NUMERIC_OPTIONS), raw=ENV_TEXT)
@example(name="concurrency", raw="1.7")
@example(name="concurrency", raw="inf")
@example(name="concurrency", raw="nan")
@example(name="time_limit", raw="1e300")
@example(name="poll_interval", raw="1e20")
def test_any_environment_value_is_refused_or_usable(name, raw):
    variable = f"CONDUCTOR_WORKER_GREET_{name.upper()}"
    try:
        options = resolve_options(environment=options_from_env("greet", {variable: raw}))
    except InvalidOptionError as exc:
        assert "\n" not in str(exc)
        return
    assert_usable(options)
    value = getattr(options, name)
    if name in INT_OPTIONS:
        assert value == decimal.Decimal(raw.strip()), "an integer option takes only a whole number"
    elif value is not None:
        assert value == float(raw)


@pytest.mark.parametrize("raw", ["1.7", "inf", "-inf", "nan", "1e400", "4.5", "1e-3", "1e999999999"])
def test_integer_environment_values_must_be_whole_numbers(raw):
    for variable in ("CONDUCTOR_WORKER_CONCURRENCY", "conductor_worker_greet_polling_interval",
                     "CONDUCTOR_WORKER_ALL_BATCH_POLL_TIMEOUT"):
        with pytest.raises(InvalidOptionError) as info:
            resolve_options(environment=options_from_env("greet", {variable: raw}))
        assert variable in str(info.value) and repr(raw) in str(info.value)


@pytest.mark.parametrize("raw", ["inf", "nan", "1e300", "-1", "0"])
def test_time_limit_environment_values_must_be_usable(raw):
    with pytest.raises(InvalidOptionError, match="time_limit"):
        resolve_options(environment=options_from_env("greet", {"CONDUCTOR_WORKER_GREET_TIME_LIMIT": raw}))


def test_the_largest_accepted_values_can_be_waited_on():
    from conductor_workers import _validate

    options = PollingOptions(
        poll_interval=_validate.MAX_WAIT_MS, time_limit=_validate.MAX_WAIT_SECONDS,
        concurrency=_validate.MAX_CONCURRENCY, batch_poll_timeout=MAX_BATCH_POLL_TIMEOUT_MS,
    )
    assert_usable(options)
    assert _validate.MAX_WAIT_SECONDS <= threading.TIMEOUT_MAX
    for name, value in [("poll_interval", _validate.MAX_WAIT_MS + 1), ("time_limit", _validate.MAX_WAIT_SECONDS * 1.01),
                        ("concurrency", _validate.MAX_CONCURRENCY + 1)]:
        with pytest.raises(InvalidOptionError, match=name):
            PollingOptions(**{name: value})


@worker_task("numbers_task")
def _numbers_worker() -> None:
    return None


@pytest.fixture
def idle_manager():
    client = ConductorClient(Configuration(server_url="http://127.0.0.1:9/api"))  # never reached
    try:
        yield TaskManager(client, [_numbers_worker])
    finally:
        client.close()


SECONDS_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.sampled_from([1e300, 1e10, float("inf"), float("nan"), -1, "5", True]),
)


@settings(max_examples=150, deadline=None)
@given(value=SECONDS_VALUES)
@example(value=float("inf"))
@example(value=1e10)
@example(value=float("nan"))
def test_manager_shutdown_timeout_is_refused_or_usable(value):
    client = ConductorClient(Configuration(server_url="http://127.0.0.1:9/api"))
    try:
        try:
            manager = TaskManager(client, [_numbers_worker], shutdown_timeout=value)
        except InvalidOptionError as exc:
            assert "shutdown_timeout" in str(exc)
            return
        wait_accepts(manager.shutdown_timeout)
        wait_accepts(max(runner.shutdown_timeout for runner in manager.runners.values()))
    finally:
        client.close()


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, 1e10, -1, "3", True])
def test_stop_polling_and_serve_forever_refuse_unusable_timeouts(idle_manager, value):
    with pytest.raises(InvalidOptionError, match="timeout"):
        idle_manager.stop_polling(value)
    with pytest.raises(InvalidOptionError, match="timeout"):
        idle_manager.serve_forever(shutdown_timeout=value)
    runner = idle_manager.runners["numbers_task"]
    with pytest.raises(InvalidOptionError, match="timeout"):
        runner.stop(value)
    assert idle_manager.stop_polling(None) is True and idle_manager.stop_polling(0) is True


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, 0, -5, "30", True])
def test_health_max_silence_must_be_usable(idle_manager, value):
    with pytest.raises(InvalidOptionError, match="max_silence"):
        start_health_server(idle_manager, 0, max_silence=value)


CONFIG_SECONDS = ("connect_timeout", "read_timeout", "token_ttl_seconds", "backoff_factor")
CONFIG_INTS = ("max_retries", "pool_maxsize", "payload_threshold_kb", "max_payload_kb")


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(CONFIG_SECONDS + CONFIG_INTS), value=ANY_VALUE)
@example(name="read_timeout", value=float("nan"))
@example(name="connect_timeout", value=float("inf"))
@example(name="backoff_factor", value=float("nan"))
@example(name="max_retries", value="3")
@example(name="pool_maxsize", value=2.5)
def test_any_configuration_number_is_refused_or_usable(name, value):
    try:
        config = Configuration(**{name: value})
    except InvalidOptionError as exc:
        assert name in str(exc)
        return
    accepted = getattr(config, name)
    if name in CONFIG_INTS:
        assert type(accepted) is int
    else:
        wait_accepts(accepted)


@pytest.mark.parametrize("kwargs", [dict(timeout=float("nan")), dict(timeout=float("inf")), dict(timeout=1e300),
                                    dict(timeout=-1), dict(poll_interval=float("inf")), dict(poll_interval=0),
                                    dict(poll_interval=float("nan")), dict(timeout="10")])
def test_wait_for_workflow_refuses_unusable_numbers_before_asking_the_server(kwargs):
    """Before: nan waited for ever, inf with an inf interval raised OverflowError from time.sleep."""
    from conductor_workers import WorkflowExecutor

    client = ConductorClient(Configuration(server_url="http://127.0.0.1:9/api", max_retries=0))  # never reached
    try:
        with pytest.raises(InvalidOptionError, match="timeout|poll_interval"):
            WorkflowExecutor(client).wait_for_workflow("wf-1", **kwargs)
    finally:
        client.close()
