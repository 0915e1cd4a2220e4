"""config.load_settings: every variable of CONTRACT.md, and one clear line for every mistake."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings

GITHUB = {
    "GITHUB_CLIENT_ID": "Iv1.abc",
    "GITHUB_CLIENT_SECRET": "s3cret",
    "GITHUB_ORG": "acme",
    "SECRET_KEY": "x" * 32,
}


def settings(**env):
    return load_settings({**GITHUB, **env})


def error_of(env: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_nothing_set_is_demo_mode():
    s = load_settings({})
    assert s.demo is True
    assert s.pools == ()
    assert s.github is None
    assert s.secret_key


def test_any_redis_var_rules_out_demo_mode():
    message = error_of({"REDIS_1": "redis://localhost:6379/0"})
    assert "GITHUB_CLIENT_ID" in message
    message = error_of({"REDIS_1_URL": "redis://localhost:6379/0", "SECRET_KEY": "x" * 32})
    assert "GITHUB_CLIENT_ID" in message


def test_github_without_pools_is_an_error_not_demo():
    assert "REDIS_1" in error_of(dict(GITHUB))


def test_pools_ordered_by_number_with_default_names():
    s = settings(REDIS_10="redis://h10:6379/0", REDIS_2="redis://h2:6379/1", REDIS_1="redis://h1:6379/0")
    assert [p.number for p in s.pools] == [1, 2, 10]
    assert [p.name for p in s.pools] == ["sidekiq", "sidekiq2", "sidekiq10"]
    assert s.demo is False


def test_pool_options():
    s = settings(
        REDIS_1="rediss://:pw@h1:6380/0?ssl_cert_reqs=none",
        REDIS_1_NAME="storefront",
        REDIS_1_NAMESPACE="shop",
        REDIS_1_TEAMS="acme/web, acme/ops",
        REDIS_1_OPERATORS="acme/ops",
        REDIS_1_DEAD_MAX_JOBS="500",
    )
    (pool,) = s.pools
    assert pool.name == "storefront"
    assert pool.url == "rediss://:pw@h1:6380/0?ssl_cert_reqs=none"
    assert pool.namespace == "shop"
    assert pool.teams == ("acme/web", "acme/ops")
    assert pool.operators == ("acme/ops",)
    assert pool.dead_max_jobs == 500
    assert pool.connect_timeout == 1.0 and pool.socket_timeout == 2.0
    assert "pw" not in pool.display_url and "***" in pool.display_url


def test_heroku_attach_url_variant():
    s = settings(REDIS_1_URL="redis://h1:6379/0", REDIS_1_NAME="app")
    assert s.pools[0].url == "redis://h1:6379/0"
    assert s.pools[0].name == "app"


def test_timeouts_overridable():
    s = settings(REDIS_1="redis://h", REDIS_CONNECT_TIMEOUT="0.5", REDIS_SOCKET_TIMEOUT="3")
    assert (s.pools[0].connect_timeout, s.pools[0].socket_timeout) == (0.5, 3.0)


def test_github_settings():
    s = settings(
        REDIS_1="redis://h",
        GITHUB_ORG="acme, widgets",
        GITHUB_TEAMS="acme/devs",
        GITHUB_URL="https://ghe.example/",
        GITHUB_API_URL="https://ghe.example/api/v3",
        MEMBERSHIP_TTL="60",
    )
    assert s.github.orgs == ("acme", "widgets")
    assert s.github.teams == ("acme/devs",)
    assert s.github.url == "https://ghe.example"
    assert s.github.api_url == "https://ghe.example/api/v3"
    assert s.membership_ttl == 60


def test_client_key_accepted_for_client_id():
    env = {**GITHUB, "REDIS_1": "redis://h"}
    env["GITHUB_CLIENT_KEY"] = env.pop("GITHUB_CLIENT_ID")
    assert load_settings(env).github.client_id == "Iv1.abc"


def test_heroku_dyno_trusts_one_proxy():
    assert settings(REDIS_1="redis://h").trusted_proxies == 0
    assert settings(REDIS_1="redis://h", DYNO="web.1").trusted_proxies == 1
    assert settings(REDIS_1="redis://h", DYNO="web.1", TRUSTED_PROXIES="0").trusted_proxies == 0


@pytest.mark.parametrize(
    "env, names",
    [
        ({"REDIS_1": "http://x"}, ["REDIS_1", "redis://"]),
        ({"REDIS_1": "localhost:6379"}, ["REDIS_1"]),
        ({"REDIS_1": "redis://"}, ["REDIS_1", "host"]),
        ({"REDIS_1": "redis://h:99999"}, ["REDIS_1", "port"]),
        ({"REDIS_1": "redis://h/abc"}, ["REDIS_1", "database"]),
        ({"REDIS_1": ""}, ["REDIS_1"]),
        ({"REDIS_1": "redis://h", "REDIS_1_NAME": "Bad Name"}, ["REDIS_1_NAME"]),
        ({"REDIS_1": "redis://h", "REDIS_1_NAME": "-x"}, ["REDIS_1_NAME"]),
        ({"REDIS_1": "redis://h", "REDIS_1_NAME": "a" * 41}, ["REDIS_1_NAME"]),
        ({"REDIS_1": "redis://h", "REDIS_1_NAME": "login"}, ["REDIS_1_NAME", "reserved"]),
        ({"REDIS_1": "redis://h", "REDIS_2": "redis://h2", "REDIS_2_NAME": "sidekiq"}, ["REDIS_2_NAME", "sidekiq"]),
        ({"REDIS_1": "redis://h", "REDIS_3_NAME": "x"}, ["REDIS_3_NAME", "REDIS_3"]),
        ({"REDIS_1": "redis://h", "REDIS_1_URL": "redis://h"}, ["REDIS_1", "REDIS_1_URL"]),
        ({"REDIS_0": "redis://h"}, ["REDIS_0"]),
        ({"REDIS_1": "redis://h", "REDIS_1_TEAMS": "justateam"}, ["REDIS_1_TEAMS", "org/team-slug"]),
        ({"REDIS_1": "redis://h", "REDIS_1_OPERATORS": "other/ops"}, ["REDIS_1_OPERATORS", "GITHUB_ORG"]),
        ({"REDIS_1": "redis://h", "REDIS_1_DEAD_MAX_JOBS": "lots"}, ["REDIS_1_DEAD_MAX_JOBS"]),
        ({"REDIS_1": "redis://h", "MEMBERSHIP_TTL": "soon"}, ["MEMBERSHIP_TTL"]),
        ({"REDIS_1": "redis://h", "REDIS_SOCKET_TIMEOUT": "-1"}, ["REDIS_SOCKET_TIMEOUT"]),
        ({"REDIS_1": "redis://h", "GITHUB_TEAMS": "other/devs"}, ["GITHUB_TEAMS"]),
        ({"REDIS_1": "redis://h", "GITHUB_URL": "ftp://x"}, ["GITHUB_URL"]),
        ({"REDIS_1": "redis://h", "LOG_LEVEL": "LOUD"}, ["LOG_LEVEL"]),
    ],
)
def test_each_mistake_is_one_line_naming_the_variable(env, names):
    message = error_of({**GITHUB, **env})
    for name in names:
        assert name in message


@pytest.mark.parametrize("missing", ["GITHUB_CLIENT_SECRET", "GITHUB_ORG", "GITHUB_CLIENT_ID"])
def test_half_the_github_settings(missing):
    env = {**GITHUB, "REDIS_1": "redis://h"}
    del env[missing]
    assert missing in error_of(env)


def test_half_github_settings_without_redis_is_not_demo():
    assert "GITHUB_CLIENT_SECRET" in error_of({"GITHUB_CLIENT_ID": "x"})


def test_secret_key_required_outside_demo():
    env = {**GITHUB, "REDIS_1": "redis://h"}
    del env["SECRET_KEY"]
    assert "SECRET_KEY" in error_of(env)
    assert "SECRET_KEY" in error_of({**env, "SECRET_KEY": "short"})


def test_settings_are_frozen():
    s = settings(REDIS_1="redis://h")
    with pytest.raises(Exception):
        s.secret_key = "other"  # type: ignore[misc]
    with pytest.raises(Exception):
        s.pools[0].url = "redis://other"  # type: ignore[misc]


def test_web_process_shape():
    s = settings(REDIS_1="redis://h")
    assert (s.web_concurrency, s.web_threads) == (2, 8)
    s = settings(REDIS_1="redis://h", WEB_CONCURRENCY="4", GUNICORN_THREADS="16")
    assert (s.web_concurrency, s.web_threads) == (4, 16)
    assert "GUNICORN_THREADS" in error_of({**GITHUB, "REDIS_1": "redis://h", "GUNICORN_THREADS": "lots"})
