"""Sign-in helpers other test modules can reuse.

    from tests.auth_support import fake_github, fake_github_server, github_settings, make_settings, sign_in, csrf_post
    # (importing the fixtures into a test module, or into conftest.py, makes pytest see them)

    def test_something(fake_github, redis_url):
        settings = make_settings(fake_github, pools=[pool_settings("sidekiq", redis_url)])
        app = create_app(settings)                           # the real app, or auth_test_app(settings)
        client = app.test_client()
        fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
        response = sign_in(client, app, fake_github, login="octocat", next="/sidekiq/retries?page=3")
        assert response.headers["Location"] == "/sidekiq/retries?page=3"
        csrf_post(client, "/sidekiq/retries", data={...})   # adds authenticity_token

A browser works unattended too: the fake's authorize endpoint approves at once for `fake_github.default_login`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from config import GitHubSettings, PoolSettings, Settings
from tests.fake_github import CLIENT_ID, CLIENT_SECRET, FakeGitHub

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET_KEY = "kiqboard-test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def fake_github_server() -> Iterator[FakeGitHub]:
    server = FakeGitHub().start()
    yield server
    server.stop()


@pytest.fixture
def fake_github(fake_github_server: FakeGitHub) -> Iterator[FakeGitHub]:
    """The session's fake GitHub, reset (users, tokens, counters, down/delay) for this test.

    Default user: octocat, an active member of "acme".
    """
    fake_github_server.resume()
    fake_github_server.reset()
    yield fake_github_server
    fake_github_server.resume()
    fake_github_server.down = False
    fake_github_server.delay = 0.0


def github_settings(fake: FakeGitHub, orgs: Iterable[str] = ("acme",), teams: Iterable[str] = (),
                    ghe: bool = True) -> GitHubSettings:
    """GitHubSettings pointing at the fake. ghe=True: API under /api/v3 (GitHub Enterprise layout)."""
    return GitHubSettings(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        orgs=tuple(orgs),
        teams=tuple(teams),
        url=fake.url,
        api_url=fake.api_url if ghe else fake.url,
    )


def pool_settings(name: str = "sidekiq", url: str = "redis://127.0.0.1:6379/0", number: int | None = None,
                  teams: Iterable[str] = (), operators: Iterable[str] = (), **kwargs: Any) -> PoolSettings:
    if number is None:
        number = 1 if name == "sidekiq" else int("".join(c for c in name if c.isdigit()) or 1)
    return PoolSettings(number=number, name=name, url=url, teams=tuple(teams), operators=tuple(operators), **kwargs)


def make_settings(fake: FakeGitHub, pools: Iterable[PoolSettings] = (), orgs: Iterable[str] = ("acme",),
                  teams: Iterable[str] = (), membership_ttl: int = 300, **kwargs: Any) -> Settings:
    """Settings for GitHub sign-in against the fake (not demo mode)."""
    pools = tuple(pools) or (pool_settings(),)
    return Settings(
        pools=pools,
        github=github_settings(fake, orgs=orgs, teams=teams),
        secret_key=TEST_SECRET_KEY,
        demo=False,
        membership_ttl=membership_ttl,
        **kwargs,
    )


def start_sign_in(client, next: str | None = None) -> str:
    """GET /auth/github (with next) and return the authorize URL it redirects to."""
    url = "/auth/github" + (("?" + urlencode({"next": next})) if next is not None else "")
    response = client.get(url)
    assert response.status_code == 302, (response.status_code, response.get_data(as_text=True)[:500])
    return response.headers["Location"]


def approve(fake: FakeGitHub, authorize_url: str, login: str | None = None) -> str:
    """Follow the authorize redirect to the fake over real HTTP; return the callback URL (with code and state)."""
    if login is not None:
        authorize_url += ("&" if "?" in authorize_url else "?") + urlencode({"login": login})
    response = requests.get(authorize_url, allow_redirects=False, timeout=5)
    assert response.status_code == 302, (response.status_code, response.text[:300])
    return response.headers["Location"]


def local_path(url: str) -> str:
    """'http://localhost/auth/github/callback?code=…' → '/auth/github/callback?code=…' for the test client."""
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def sign_in(client, app=None, fake: FakeGitHub | None = None, login: str = "octocat", next: str | None = None):
    """Drive the whole dance with a Flask test client: /auth/github → fake authorize (real HTTP) → callback.

    Returns the callback's response (302 to `next` or "/" when signed in; a refusal page otherwise).
    `app` is accepted for symmetry and unused. Call as sign_in(client, app, fake_github, login="octocat").
    """
    if fake is None and isinstance(app, FakeGitHub):
        app, fake = None, app
    assert fake is not None, "pass the fake_github fixture"
    callback = approve(fake, start_sign_in(client, next=next), login=login)
    return client.get(local_path(callback))


def csrf_token(client) -> str:
    """The test client's session CSRF token (created in the session if there is none yet)."""
    with client.session_transaction() as sess:
        token = sess.get("_csrf_token")
        if not token:
            token = sess["_csrf_token"] = secrets.token_urlsafe(32)
    return token


def csrf_post(client, url: str, data: dict | None = None, **kwargs: Any):
    """POST with the session's CSRF token in the authenticity_token field."""
    data = dict(data or {})
    data.setdefault("authenticity_token", csrf_token(client))
    return client.post(url, data=data, **kwargs)


def auth_test_app(settings: Settings, pools: dict | None = None):
    """A tiny Flask app with only auth + the login blueprint + stand-ins for overview and one blueprint per pool
    (GET /<pool>/, GET|POST /<pool>/retries, GET /<pool>/stats) guarded by auth.guard_pool — for testing auth
    without the real dashboard."""
    from flask import Blueprint, Flask, g, jsonify, render_template_string

    import auth
    from blueprints.login import create_login_blueprint

    app = Flask("kiqboard_auth_test", root_path=str(ROOT), template_folder="templates", static_folder="static")
    app.config.update(SECRET_KEY=settings.secret_key, SESSION_COOKIE_NAME="kiqboard_session", TESTING=True,
                      SESSION_COOKIE_SECURE=settings.force_https)
    pools = pools if pools is not None else {ps.name: _StubPool(ps) for ps in settings.pools}
    app.extensions["kiqboard"] = {"settings": settings, "pools": pools}
    auth.init_app(app, settings, pools)
    app.register_blueprint(create_login_blueprint(settings))
    app.jinja_env.globals["csp_nonce"] = lambda: g.get("csp_nonce", "")

    @app.context_processor
    def layout() -> dict:
        return {"settings": settings, "demo_mode": settings.demo, "server_utc_time": "00:00:00 UTC"}

    page = "{% extends 'base.html' %}{% block content %}<p id='who'>{{ current_user.login }}</p>{{ body }}{% endblock %}"

    overview = Blueprint("overview", __name__)
    overview.before_request(auth.require_signed_in)

    @overview.get("/")
    def index():
        names = " ".join(p.name for p in auth.visible_pools(pools))
        return render_template_string(page, body=f"pools: {names}")

    @overview.get("/api/pools")
    def api_pools():
        return jsonify(pools=[{"name": p.name} for p in auth.visible_pools(pools)], login=auth.current_user.login)

    @overview.get("/metrics")
    def metrics():
        return "kiqboard_up 1\n", 200, {"Content-Type": "text/plain"}

    app.register_blueprint(overview)

    for pool in pools.values():
        app.register_blueprint(_stub_pool_blueprint(pool, page))
    return app


class _StubPool:
    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name


def _stub_pool_blueprint(pool, page: str):
    from flask import Blueprint, jsonify, render_template_string

    import auth

    bp = Blueprint(f"pool_{pool.name}", __name__, url_prefix=f"/{pool.name}")

    @bp.before_request
    def guard():
        return auth.guard_pool(pool.settings)

    @bp.get("/")
    def dashboard():
        return render_template_string(page, body=f"pool {pool.name} operate={auth.may_operate(pool.settings)}")

    @bp.route("/retries", methods=["GET", "POST"])
    def retries():
        from flask import request

        if request.method == "POST":
            return "changed", 200
        return render_template_string(page, body=f"retries of {pool.name}")

    @bp.get("/stats")
    def stats():
        return jsonify(sidekiq={"processed": 1}, pool=pool.name)

    return bp
