"""The factory, start-up errors under every entry point, /healthz, security headers and demo mode wiring."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from app import create_app
from config import load_settings
from tests.conftest import ROOT, free_port

VENV_BIN = os.path.dirname(sys.executable)
GITHUB = {
    "GITHUB_CLIENT_ID": "Iv1.abc",
    "GITHUB_CLIENT_SECRET": "s3cret",
    "GITHUB_ORG": "acme",
    "SECRET_KEY": "x" * 32,
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GITHUB_", "SECRET_KEY", "FLASK_"))}
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, variable: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"REDIS_1": "http://x"}, "REDIS_1"),
        ({"REDIS_1": "redis://h", "REDIS_1_NAME": "Bad Name", **GITHUB}, "REDIS_1_NAME"),
        ({"REDIS_1": "redis://h", "GITHUB_CLIENT_ID": "x"}, "GITHUB_CLIENT_SECRET"),
    ],
)
def test_python_c_create_app_prints_one_line(env, variable):
    result = run([sys.executable, "-c", "import app; app.create_app()"], clean_env(**env))
    assert_one_line_error(result, variable)


def test_flask_run_prints_one_line():
    result = run([os.path.join(VENV_BIN, "flask"), "run", "--port", str(free_port())], clean_env(REDIS_1="http://x"))
    assert_one_line_error(result, "REDIS_1")


def test_gunicorn_prints_one_line():
    env = clean_env(REDIS_1="redis://h", REDIS_3_NAME="x", PORT=str(free_port()))
    result = run([os.path.join(VENV_BIN, "gunicorn"), "app:create_app()"], env)
    assert_one_line_error(result, "REDIS_3_NAME")


def test_flask_routes_lists_one_blueprint_per_pool():
    env = clean_env(REDIS_1="redis://127.0.0.1:6379/0", REDIS_2="redis://127.0.0.1:6379/1", **GITHUB)
    result = run([os.path.join(VENV_BIN, "flask"), "routes"], env)
    assert result.returncode == 0, result.stderr
    assert "pool_sidekiq." in result.stdout and "/sidekiq/retries" in result.stdout
    assert "pool_sidekiq2." in result.stdout and "/sidekiq2/retries" in result.stdout
    assert "/auth/github/callback" in result.stdout


def test_procfile_command_serves_healthz(redis_url):
    port = free_port()
    env = clean_env(REDIS_1=redis_url, PORT=str(port), WEB_CONCURRENCY="1", **GITHUB)
    command = open(ROOT / "Procfile").read().split("web:", 1)[1].strip()
    process = subprocess.Popen(command, shell=True, cwd=ROOT, env={**env, "PATH": f"{VENV_BIN}:{env['PATH']}"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        os.killpg(process.pid, 15)
        process.wait(10)


def make_app(redis_url: str, **env: str):
    return create_app(load_settings({"REDIS_1": redis_url, "REDIS_2": redis_url.replace("/0", "/1"), **GITHUB, **env}))


def test_factory_builds_a_client_per_pool(redis_url):
    app = make_app(redis_url)
    pools = app.extensions["kiqboard"]["pools"]
    assert list(pools) == ["sidekiq", "sidekiq2"]
    first, second = pools["sidekiq"].redis, pools["sidekiq2"].redis
    assert first.connection_pool is not second.connection_pool
    kwargs = first.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == 1.0 and kwargs["socket_timeout"] == 2.0
    assert second.connection_pool.connection_kwargs["db"] == 1


def test_url_options_pass_through_to_redis_py():
    settings = load_settings({"REDIS_1": "rediss://:pw@h:6380/2?ssl_cert_reqs=none&socket_timeout=5", **GITHUB})
    app = create_app(settings)
    pool = app.extensions["kiqboard"]["pools"]["sidekiq"].redis.connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    assert pool.connection_kwargs["socket_timeout"] == 5.0
    assert pool.connection_kwargs["db"] == 2


def test_two_apps_do_not_share_pools(redis_url):
    a, b = make_app(redis_url), make_app(redis_url)
    assert a.extensions["kiqboard"]["pools"]["sidekiq"].redis is not b.extensions["kiqboard"]["pools"]["sidekiq"].redis


def test_healthz_needs_no_sign_in_and_has_security_headers(redis_url):
    client = make_app(redis_url).test_client()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self' 'nonce-" in csp
    assert "unsafe-inline" not in csp


def test_each_response_gets_a_fresh_nonce(redis_url):
    client = make_app(redis_url).test_client()
    first = client.get("/healthz").headers["Content-Security-Policy"]
    second = client.get("/healthz").headers["Content-Security-Policy"]
    assert first != second


def test_unknown_path_is_a_404_page_not_a_traceback(redis_url):
    response = make_app(redis_url).test_client().get("/no/such/page")
    assert response.status_code in (302, 404)


def test_demo_mode_is_unreachable_with_a_pool_configured(redis_url):
    app = make_app(redis_url)
    assert app.extensions["kiqboard"]["settings"].demo is False
    assert "demo_simulator" not in app.extensions["kiqboard"]
    assert app.test_client().post("/auth/demo").status_code in (403, 404)


def test_demo_mode_builds_seeded_in_memory_pools():
    app = create_app(load_settings({}))
    state = app.extensions["kiqboard"]
    assert state["settings"].demo is True
    assert len(state["pools"]) >= 2
    for pool in state["pools"].values():
        stats = pool.reader.stats()
        assert stats.processed > 0 and stats.retries > 0 and stats.processes > 0
    response = app.test_client().get("/login")
    assert response.status_code == 200
    assert b"Demo mode" in response.data
