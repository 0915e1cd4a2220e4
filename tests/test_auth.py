"""Sign in with GitHub, end to end against a fake GitHub served over real HTTP on loopback.

Most tests use a tiny app (tests/auth_support.auth_test_app: auth + login blueprint + stand-in pool blueprints
guarded by auth.guard_pool); a few go through the real app.create_app.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

import auth
from tests.auth_support import (  # noqa: F401 - fixtures
    CLIENT_ID,
    approve,
    auth_test_app,
    csrf_post,
    csrf_token,
    fake_github,
    fake_github_server,
    local_path,
    make_settings,
    pool_settings,
    sign_in,
    start_sign_in,
)
from tests.conftest import free_port


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(auth, "clock", c)
    return c


@pytest.fixture
def settings(fake_github):
    return make_settings(
        fake_github,
        pools=[
            pool_settings("sidekiq"),
            pool_settings("sidekiq2", teams=["acme/ops", "acme/payments"], operators=["acme/ops"]),
            pool_settings("secret", number=3, teams=["acme/security"]),
        ],
        membership_ttl=10,
    )


@pytest.fixture
def app(settings):
    return auth_test_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


def body(response) -> str:
    return response.get_data(as_text=True)


def assert_refusal(response, status: int, reason: str) -> str:
    text = body(response)
    assert response.status_code == status, (response.status_code, text[:800])
    assert f'data-reason="{reason}"' in text, text[:1500]
    assert "Traceback" not in text
    return text


# --------------------------------------------------------------------------------------------------------------
# The dance


def test_full_dance_keeps_the_deep_link_exactly(client, fake_github, caplog):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    response = client.get("/sidekiq2/retries?page=3")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Fsidekiq2%2Fretries%3Fpage%3D3"

    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and "Sign in with GitHub" in body(page)
    href = re.search(r'id="github-sign-in" href="([^"]+)"', body(page)).group(1).replace("&amp;", "&")

    start = client.get(href)
    assert start.status_code == 302
    authorize = start.headers["Location"]
    assert authorize.startswith(f"{fake_github.url}/login/oauth/authorize?")
    query = parse_qs(urlsplit(authorize).query)
    assert query["scope"] == ["read:org"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert query["client_id"] == [CLIENT_ID] and query["state"][0]
    assert query["redirect_uri"] == ["http://localhost/auth/github/callback"]

    with caplog.at_level(logging.INFO, logger="kiqboard.auth"):
        done = client.get(local_path(approve(fake_github, authorize)))
    assert done.status_code == 302
    assert done.headers["Location"] == "/sidekiq2/retries?page=3"
    assert fake_github.token_requests[-1]["auth"] == "basic"
    assert fake_github.token_requests[-1]["code_verifier"]
    assert any("event=sign_in login=octocat result=ok" in r.getMessage() for r in caplog.records)

    page = client.get("/sidekiq2/retries?page=3")
    assert page.status_code == 200 and "retries of sidekiq2" in body(page)
    with client.session_transaction() as sess:
        user = sess["kiq_user"]
        assert user["login"] == "octocat" and user["teams"] == ["acme/ops"]
        assert "gho_" not in user["token"]  # encrypted in the cookie


@pytest.mark.parametrize("deep_link", [
    "/sidekiq2/retries?page=3",
    "/sidekiq2/retries?page=3&count=50&substr=a%2Fb%20c",
    "/sidekiq/retries?substr=default%20queue&page=2",
    "/sidekiq2/",
])
def test_deep_links_survive_sign_in(client, fake_github, deep_link):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    login = client.get(deep_link).headers["Location"]
    next_value = parse_qs(urlsplit(login).query)["next"][0]
    assert next_value == deep_link
    done = sign_in(client, fake_github, next=next_value)
    assert done.headers["Location"] == deep_link


BAD_NEXT = [
    "//evil.com", "//evil.com/path", "///evil.com", "/\\evil.com", "/\\/evil.com", "\\\\evil.com",
    "https://evil.com", "http://evil.com/sidekiq", "https:evil.com", "javascript:alert(1)", "JavaScript:alert(1)",
    "/%2F%2Fevil.com", "/%2f/evil.com", "/%5Cevil.com", "/\t/evil.com", "/\n/evil.com", "/ok\\x", "evil.com", "",
    " /sidekiq", "data:text/html,hi",
]


@pytest.mark.parametrize("bad", BAD_NEXT)
def test_bad_next_is_dropped(client, fake_github, bad):
    assert auth.safe_next(bad) is None
    done = sign_in(client, fake_github, next=bad)
    assert done.status_code == 302 and done.headers["Location"] == "/"
    page = client.get("/login?" + urlencode({"next": bad}))  # signed in: /login forwards to the (safe) next
    assert page.headers["Location"] == "/"


def test_safe_next_accepts_same_site_paths_unchanged():
    for good in ("/", "/sidekiq2/retries?page=3", "/a/b?x=%2F%2Fevil.com", "/sidekiq/morgue/1700000000.5-abc",
                 "/search?q=j%C3%BCrgen"):
        assert auth.safe_next(good) == good


def test_login_page_keeps_only_a_safe_next(client):
    page = body(client.get("/login?next=//evil.com"))
    assert "evil.com" not in page
    page = body(client.get("/login?" + urlencode({"next": "/sidekiq2/retries?page=3"})))
    href = re.search(r'id="github-sign-in" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert parse_qs(urlsplit(href).query)["next"] == ["/sidekiq2/retries?page=3"]


def test_session_is_cleared_before_login_and_csrf_rotates(client, fake_github):
    with client.session_transaction() as sess:
        sess["planted"] = "by an attacker"
        sess["_csrf_token"] = "x" * 43
    sign_in(client, fake_github)
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess["_csrf_token"] != "x" * 43
        assert not any(key.startswith("_state_") for key in sess)


def test_forged_state_is_refused_cleanly(client, fake_github):
    callback = approve(fake_github, start_sign_in(client))
    forged = re.sub(r"state=[^&]+", "state=forged", local_path(callback))
    assert_refusal(client.get(forged), 400, "state")
    no_state = re.sub(r"&?state=[^&]+", "", local_path(callback))
    assert_refusal(client.get(no_state), 400, "state")
    # A callback from another browser (no Authlib state in this session) is refused too.
    other = client.application.test_client()
    assert_refusal(other.get(local_path(callback)), 400, "state")
    assert client.get("/").status_code == 302  # not signed in


def test_replayed_code_is_refused(client, fake_github):
    callback = local_path(approve(fake_github, start_sign_in(client)))
    assert client.get(callback).status_code == 302
    # The same callback again: its state was used up.
    assert_refusal(client.get(callback), 400, "state")
    # The old code with a fresh, valid state: GitHub (the fake) says the code is spent.
    code = parse_qs(urlsplit(callback).query)["code"][0]
    fresh = local_path(approve(fake_github, start_sign_in(client)))
    replay = re.sub(r"code=[^&]+", f"code={code}", fresh)
    assert_refusal(client.get(replay), 400, "code")


def test_user_cancelling_at_github(client, fake_github):
    fake_github.deny = True
    assert_refusal(sign_in(client, fake_github), 403, "denied")


# --------------------------------------------------------------------------------------------------------------
# Refusals


def test_not_a_member_other_org(client, fake_github, caplog):
    fake_github.set_user("mallory", orgs={"other": "active"})
    with caplog.at_level(logging.INFO, logger="kiqboard.auth"):
        text = assert_refusal(sign_in(client, fake_github, login="mallory"), 403, "not_member")
    assert "not a member of acme" in text
    assert any("login=mallory result=not_member" in r.getMessage() for r in caplog.records)
    assert client.get("/").status_code == 302


def test_no_org_at_all(client, fake_github):
    fake_github.set_user("nobody", orgs={})
    assert_refusal(sign_in(client, fake_github, login="nobody"), 403, "not_member")


def test_pending_invitation_is_not_membership(client, fake_github):
    fake_github.set_user("newbie", orgs={"acme": "pending"})
    text = assert_refusal(sign_in(client, fake_github, login="newbie"), 403, "pending")
    assert f'href="{fake_github.url}/orgs/acme/invitation"' in text


def test_org_restricts_oauth_apps(client, fake_github):
    fake_github.set_user("octocat", orgs={"acme": "restricted"})
    text = assert_refusal(sign_in(client, fake_github), 403, "restricted")
    assert "An owner of the organization must approve this app" in text
    assert auth.OAUTH_APP_DOCS in text


def test_saml_sso_not_authorized(client, fake_github):
    fake_github.set_user("octocat", orgs={"acme": "sso"})
    text = assert_refusal(sign_in(client, fake_github), 403, "sso")
    user_id = fake_github.users["octocat"].id
    assert f'href="{fake_github.url}/orgs/acme/sso?authorization_request=FAKE{user_id}"' in text


def test_not_in_required_teams(fake_github):
    app = auth_test_app(make_settings(fake_github, teams=["acme/ops"]))
    client = app.test_client()
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/payments": "active", "acme/ops": "pending"})
    text = assert_refusal(sign_in(client, fake_github), 403, "not_in_teams")
    assert "acme/ops" in text
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    assert sign_in(client, fake_github).headers["Location"] == "/"


def test_member_of_one_of_several_orgs(fake_github):
    client = auth_test_app(make_settings(fake_github, orgs=["acme", "globex"])).test_client()
    fake_github.set_user("octocat", orgs={"acme": "pending", "globex": "active"})
    assert sign_in(client, fake_github).headers["Location"] == "/"


def test_github_api_answers_502(client, fake_github):
    fake_github.set_user("octocat", orgs={"acme": "active"}, state="down")
    response = sign_in(client, fake_github)
    assert_refusal(response, 502, "unreachable")
    assert response.headers["Retry-After"]


def test_github_unreachable_at_callback(client, fake_github):
    callback = local_path(approve(fake_github, start_sign_in(client)))
    fake_github.refuse_connections()
    assert_refusal(client.get(callback), 503, "unreachable")


def test_github_slow_times_out(client, fake_github, monkeypatch):
    monkeypatch.setattr(auth, "GITHUB_TIMEOUT", 0.3)
    callback = local_path(approve(fake_github, start_sign_in(client)))
    # The token exchange uses the timeout fixed at registration (5 s); the API calls use GITHUB_TIMEOUT.
    fake_github.delay = 1.0
    assert_refusal(client.get(callback), 503, "unreachable")


def test_refusals_as_json(client, fake_github):
    fake_github.set_user("octocat", orgs={"acme": "restricted"})
    callback = local_path(approve(fake_github, start_sign_in(client)))
    response = client.get(callback, headers={"Accept": "application/json"})
    assert response.status_code == 403 and response.get_json()["reason"] == "restricted"


# --------------------------------------------------------------------------------------------------------------
# Logout, CSRF, cross-site


def test_logout_needs_post_and_csrf(client, fake_github):
    sign_in(client, fake_github)
    assert client.get("/logout").status_code == 405
    assert_refusal(client.post("/logout"), 403, "csrf")
    assert_refusal(client.post("/logout", data={"authenticity_token": "wrong"}), 403, "csrf")
    assert client.get("/").status_code == 200  # still signed in
    response = csrf_post(client, "/logout")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_csrf_header_and_json_refusal(client, fake_github):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    sign_in(client, fake_github)
    token = csrf_token(client)
    assert client.post("/sidekiq2/retries", headers={"X-CSRF-Token": token}).status_code == 200
    response = client.post("/sidekiq2/retries", headers={"X-CSRF-Token": "nope", "Accept": "application/json"})
    assert response.status_code == 403 and response.get_json()["reason"] == "csrf"


def test_csrf_meta_matches_session(client, fake_github):
    sign_in(client, fake_github)
    page = body(client.get("/"))
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    assert meta == csrf_token(client)


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://evil.example"},
    {"Origin": "http://localhost.evil.example"},
    {"Origin": "null"},
])
def test_cross_site_post_with_a_valid_token_is_refused(client, fake_github, headers):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    sign_in(client, fake_github)
    assert_refusal(csrf_post(client, "/sidekiq2/retries", headers=headers), 403, "cross_site")


@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://localhost"},
                                     {"Sec-Fetch-Site": "none"}])
def test_same_site_post_with_token_passes(client, fake_github, headers):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    sign_in(client, fake_github)
    assert csrf_post(client, "/sidekiq2/retries", headers=headers).status_code == 200


# --------------------------------------------------------------------------------------------------------------
# Without a session


@pytest.mark.parametrize("path", ["/api/pools", "/sidekiq/stats", "/metrics"])
def test_json_routes_answer_401(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert "error" in response.get_json()


def test_accept_json_answers_401_and_html_redirects(client):
    assert client.get("/sidekiq/", headers={"Accept": "application/json"}).status_code == 401
    response = client.get("/sidekiq/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=%2Fsidekiq%2F"
    assert client.get("/").headers["Location"] == "/login"


# --------------------------------------------------------------------------------------------------------------
# Bearer tokens


def test_bad_bearer_token_is_401(client, fake_github):
    response = client.get("/api/pools", headers={"Authorization": "Bearer gho_not_a_token"})
    assert response.status_code == 401 and response.get_json()["error"]
    assert client.get("/api/pools", headers={"Authorization": "Basic Zm9vOmJhcg=="}).status_code == 401


def test_good_bearer_token_works_on_get_and_is_cached(client, fake_github, clock):
    fake_github.set_user("robot", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    token = fake_github.issue_token("robot")
    headers = {"Authorization": f"Bearer {token}"}
    response = client.get("/api/pools", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == {"pools": [{"name": "sidekiq"}, {"name": "sidekiq2"}], "login": "robot"}
    calls = fake_github.count(token=token)
    assert calls == 5  # /user, the org membership, and each of the 3 teams named in the settings
    for path in ("/sidekiq/stats", "/sidekiq2/retries", "/metrics", "/api/pools"):
        assert client.get(path, headers=headers).status_code == 200, path
    assert fake_github.count(token=token) == calls  # all from the cache
    assert client.get("/secret/stats", headers=headers).status_code == 404  # not in acme/security
    # No session cookie is made for Bearer callers.
    assert client.get_cookie("kiqboard_session") is None
    clock.advance(11)  # past membership_ttl: asked again
    assert client.get("/api/pools", headers=headers).status_code == 200
    assert fake_github.count(token=token) == 2 * calls


def test_bearer_is_read_only(client, fake_github):
    token = fake_github.issue_token("octocat")
    response = client.post("/sidekiq/retries", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (401, 403)
    response = client.post("/sidekiq/retries", headers={"Authorization": f"Bearer {token}",
                                                        "X-CSRF-Token": csrf_token(client)})
    assert response.status_code == 403 and response.get_json()["reason"] == "read_only_token"


def test_bearer_for_non_member_is_403(client, fake_github):
    fake_github.set_user("outsider", orgs={"other": "active"})
    token = fake_github.issue_token("outsider")
    response = client.get("/api/pools", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and response.get_json()["reason"] == "not_member"


def test_bearer_when_github_is_down(client, fake_github):
    token = fake_github.issue_token("octocat")
    fake_github.down = True
    response = client.get("/api/pools", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 502
    fake_github.down = False
    assert client.get("/api/pools", headers={"Authorization": f"Bearer {token}"}).status_code == 200  # not cached


# --------------------------------------------------------------------------------------------------------------
# Membership re-check


def test_membership_removed_ends_access_within_ttl(client, fake_github, clock):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    sign_in(client, fake_github)
    before = fake_github.count()
    clock.advance(5)
    assert client.get("/sidekiq2/").status_code == 200
    assert fake_github.count() == before  # within the TTL: no GitHub call
    fake_github.set_user("octocat", orgs={})  # removed from acme
    clock.advance(6)  # 11 s > membership_ttl=10
    response = client.get("/sidekiq2/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")
    page = body(client.get("/login"))
    assert "no longer a member" in page


def test_team_removed_hides_pool_after_ttl(client, fake_github, clock):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    sign_in(client, fake_github)
    assert client.get("/sidekiq2/").status_code == 200
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={})
    clock.advance(11)
    assert client.get("/sidekiq2/").status_code == 404
    assert client.get("/sidekiq/").status_code == 200


def test_revoked_token_signs_out(client, fake_github, clock):
    sign_in(client, fake_github)
    for token in list(fake_github.tokens):
        fake_github.revoke(token)
    clock.advance(11)
    assert client.get("/").status_code == 302
    assert "revoked" in body(client.get("/login"))


def test_github_outage_keeps_sessions_for_a_grace_period(client, fake_github, clock, app):
    app.config["KIQBOARD_GITHUB_OUTAGE_GRACE"] = 120
    sign_in(client, fake_github)
    fake_github.refuse_connections()
    clock.advance(11)
    assert client.get("/").status_code == 200  # GitHub down: still in
    clock.advance(30)  # retried at most every min(OUTAGE_RETRY, ttl) = 10 s
    assert client.get("/").status_code == 200
    fake_github.resume()
    fake_github.down = True  # now it answers 502
    clock.advance(30)
    assert client.get("/").status_code == 200
    clock.advance(60)  # 131 s after the outage began > 120 s grace
    assert client.get("/").status_code == 302
    assert "could not be reached" in body(client.get("/login"))


def test_outage_then_recovery_resets_the_grace(client, fake_github, clock, app):
    app.config["KIQBOARD_GITHUB_OUTAGE_GRACE"] = 100
    sign_in(client, fake_github)
    fake_github.down = True
    clock.advance(11)
    assert client.get("/").status_code == 200
    fake_github.down = False
    clock.advance(80)
    assert client.get("/").status_code == 200  # re-checked OK: outage forgotten
    with client.session_transaction() as sess:
        assert "outage_since" not in sess["kiq_user"]
    fake_github.down = True
    clock.advance(80)
    assert client.get("/").status_code == 200


def test_outage_does_not_hit_github_on_every_request(client, fake_github, clock):
    sign_in(client, fake_github)
    fake_github.down = True
    clock.advance(11)
    client.get("/")
    hits = fake_github.count()
    for _ in range(5):
        clock.advance(1)
        assert client.get("/").status_code == 200
    assert fake_github.count() == hits


# --------------------------------------------------------------------------------------------------------------
# Per-pool teams and operators


def test_pool_teams_and_operators(client, fake_github, app):
    fake_github.set_user("viewer", orgs={"acme": "active"}, teams={"acme/payments": "active"})
    sign_in(client, fake_github, login="viewer")
    assert "pools: sidekiq sidekiq2" in body(client.get("/"))  # "secret" is absent
    assert client.get("/secret/").status_code == 404
    assert client.get("/secret/retries?page=2").status_code == 404
    assert "operate=False" in body(client.get("/sidekiq2/"))
    assert csrf_post(client, "/sidekiq2/retries").status_code == 403  # may see, may not change
    assert csrf_post(client, "/sidekiq/retries").status_code == 200  # no OPERATORS: everyone who sees it
    assert csrf_post(client, "/secret/retries").status_code == 404
    with app.test_request_context("/"):
        import flask_login

        pools = app.extensions["kiqboard"]["pools"]
        flask_login.login_user(auth.User("viewer", teams=["acme/payments"]))
        assert [p.name for p in auth.visible_pools(pools)] == ["sidekiq", "sidekiq2"]
        assert auth.may_see(pools["sidekiq2"]) and not auth.may_operate(pools["sidekiq2"])
        flask_login.login_user(auth.User("ops", teams=["acme/ops"]))
        assert auth.may_operate(pools["sidekiq2"].settings)
        flask_login.logout_user()
        assert auth.visible_pools(pools) == [] and not auth.may_see(pools["sidekiq"])


def test_operator_may_change(client, fake_github):
    fake_github.set_user("ops", orgs={"acme": "active"}, teams={"acme/ops": "active", "acme/security": "active"})
    sign_in(client, fake_github, login="ops")
    assert "pools: sidekiq sidekiq2 secret" in body(client.get("/"))
    assert "operate=True" in body(client.get("/sidekiq2/"))
    assert csrf_post(client, "/sidekiq2/retries").status_code == 200


def test_team_names_compare_case_insensitively(fake_github):
    settings = make_settings(fake_github, pools=[pool_settings("sidekiq", teams=["ACME/Ops"])])
    client = auth_test_app(settings).test_client()
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    sign_in(client, fake_github)
    assert client.get("/sidekiq/").status_code == 200


# --------------------------------------------------------------------------------------------------------------
# Demo mode


@pytest.fixture
def demo_app():
    from config import Settings

    settings = Settings(pools=(pool_settings("sidekiq", teams=["acme/ops"], operators=["acme/ops"]),), github=None,
                        secret_key="kiqboard-demo-mode-not-secret", demo=True)
    return auth_test_app(settings)


def test_demo_sign_in(demo_app):
    client = demo_app.test_client()
    page = client.get("/login?next=/sidekiq/retries%3Fpage%3D2")
    assert "Sign in as demo user" in body(page)
    token = re.search(r'name="authenticity_token" value="([^"]+)"', body(page)).group(1)
    assert client.get("/auth/github").status_code == 404
    assert client.get("/auth/github/callback?code=x&state=y").status_code == 404
    assert_refusal(client.post("/auth/demo"), 403, "csrf")
    response = client.post("/auth/demo", data={"authenticity_token": token, "next": "/sidekiq/retries?page=2"})
    assert response.status_code == 302 and response.headers["Location"] == "/sidekiq/retries?page=2"
    assert "operate=True" in body(client.get("/sidekiq/"))  # demo user sees and operates everything
    assert csrf_post(client, "/sidekiq/retries").status_code == 200
    assert client.get("/api/pools").get_json()["login"] == "demo"


def test_demo_session_is_worthless_outside_demo_mode(client):
    with client.session_transaction() as sess:
        sess["_user_id"] = "demo"
        sess["kiq_user"] = {"login": "demo", "demo": True, "teams": [], "checked_at": 0}
    assert client.get("/").status_code == 302
    assert client.get("/api/pools").status_code == 401


def test_demo_route_404_outside_demo_mode(client):
    assert client.post("/auth/demo", data={"authenticity_token": csrf_token(client)}).status_code == 404


# --------------------------------------------------------------------------------------------------------------
# Cookies and per-app OAuth registries


def session_cookie_header(response) -> str:
    return next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("kiqboard_session="))


def test_cookie_flags(client, fake_github):
    start = client.get("/auth/github")
    header = session_cookie_header(start)
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    https = client.get("/auth/github", base_url="https://localhost")
    header = session_cookie_header(https)
    assert "Secure" in header and "HttpOnly" in header
    assert "redirect_uri=https%3A%2F%2Flocalhost%2Fauth%2Fgithub%2Fcallback" in https.headers["Location"] \
        or "redirect_uri=https://localhost/auth/github/callback" in https.headers["Location"]
    assert not any(h.startswith("remember_token") for h in start.headers.getlist("Set-Cookie"))


def test_force_https(fake_github):
    client = auth_test_app(make_settings(fake_github, force_https=True)).test_client()
    response = client.get("/auth/github")
    assert parse_qs(urlsplit(response.headers["Location"]).query)["redirect_uri"] == [
        "https://localhost/auth/github/callback"]
    assert "Secure" in session_cookie_header(response)


def test_github_com_layout_api_at_root(fake_github):
    from config import Settings
    from tests.auth_support import github_settings

    settings = Settings(pools=(pool_settings(),), github=github_settings(fake_github, ghe=False),
                        secret_key="x" * 32)
    client = auth_test_app(settings).test_client()
    assert sign_in(client, fake_github).headers["Location"] == "/"
    assert fake_github.calls[0][1] == "/user"


def test_each_app_has_its_own_oauth_urls(fake_github):
    from tests.fake_github import FakeGitHub

    with FakeGitHub() as other:
        app1 = auth_test_app(make_settings(fake_github))
        app2 = auth_test_app(make_settings(other))
        loc1 = app1.test_client().get("/auth/github").headers["Location"]
        loc2 = app2.test_client().get("/auth/github").headers["Location"]
        assert loc1.startswith(fake_github.url) and loc2.startswith(other.url)
        other.set_user("octocat", orgs={"acme": "active"})
        assert sign_in(app2.test_client(), other).headers["Location"] == "/"


# --------------------------------------------------------------------------------------------------------------
# The session interface remembers cookies it verified


class CountingSigner:
    """Wraps the app's itsdangerous serializer and counts how often a cookie is really verified."""

    def __init__(self, signer) -> None:
        self.signer, self.verified = signer, 0

    def loads(self, *args, **kwargs):
        self.verified += 1
        return self.signer.loads(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.signer, name)


def counting_signer(app) -> CountingSigner:
    interface = app.session_interface
    interface.get_signing_serializer(app)
    interface._signer = CountingSigner(interface._signer)
    return interface._signer


def cookie_value(client) -> str:
    return client.get_cookie("kiqboard_session").value


def test_a_verified_cookie_is_checked_once_then_remembered(app, client, fake_github):
    sign_in(client, fake_github)
    signer = counting_signer(app)
    for _ in range(3):
        response = client.get("/api/pools")
        assert response.status_code == 200 and response.get_json()["login"] == "octocat"
    assert signer.verified == 1
    assert len(app.session_interface._verified) >= 1


def test_remembered_cookie_still_expires(app, client, fake_github, monkeypatch):
    import time as time_module

    sign_in(client, fake_github)
    assert client.get("/api/pools").status_code == 200  # verified and remembered
    later = time_module.time() + app.permanent_session_lifetime.total_seconds() + 60
    monkeypatch.setattr(auth.time, "time", lambda: later)
    response = client.get("/api/pools")
    assert response.status_code == 401  # too old: not taken from memory, and the signer refuses it too


def test_a_tampered_cookie_is_not_helped_by_the_memory(app, client, fake_github):
    sign_in(client, fake_github)
    good = cookie_value(client)
    assert client.get("/api/pools").status_code == 200
    payload, stamp, signature = good.rsplit(".", 2)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (f"{payload}.{stamp}.{flipped}", good + "x", good[:-1], " " + good):
        client.set_cookie("kiqboard_session", bad)
        assert client.get("/api/pools").status_code == 401, bad
    client.set_cookie("kiqboard_session", good)
    assert client.get("/api/pools").status_code == 200


def test_each_request_gets_its_own_copy_of_a_remembered_session(app, client, fake_github):
    from flask import Request

    sign_in(client, fake_github)
    assert client.get("/api/pools").status_code == 200
    environ = {"HTTP_COOKIE": f"kiqboard_session={cookie_value(client)}", "REQUEST_METHOD": "GET"}
    with app.test_request_context():
        first = app.session_interface.open_session(app, Request(environ))
        first[auth.USER_SESSION_KEY]["teams"].append("acme/intruders")
        first[auth.USER_SESSION_KEY]["login"] = "mallory"
        second = app.session_interface.open_session(app, Request(environ))
    assert second[auth.USER_SESSION_KEY]["login"] == "octocat"
    assert "acme/intruders" not in second[auth.USER_SESSION_KEY]["teams"]
    assert not second.modified


def test_flashed_messages_survive_the_memory(app, client):
    with client.session_transaction() as session:
        session["_flashes"] = [("warning", "You were signed out.")]
    for _ in range(2):  # the second read comes from memory: the tuple must come back as it went in
        with client.session_transaction() as session:
            assert session["_flashes"] == [("warning", "You were signed out.")]
            assert isinstance(session["_flashes"][0], tuple)
        with app.test_request_context(headers={"Cookie": f"kiqboard_session={cookie_value(client)}"}):
            from flask import get_flashed_messages
            assert get_flashed_messages(with_categories=True) == [("warning", "You were signed out.")]


def test_a_new_secret_key_forgets_what_the_old_one_verified(app, client, fake_github):
    sign_in(client, fake_github)
    assert client.get("/api/pools").status_code == 200
    app.secret_key = "another-secret-key-0123456789abcdef0123"
    assert client.get("/api/pools").status_code == 401
    assert app.session_interface._verified == {} or cookie_value(client) not in app.session_interface._verified


def test_cookie_of_another_app_is_not_accepted(fake_github):
    from tests.auth_support import make_settings as settings_for

    first = auth_test_app(settings_for(fake_github))
    second_settings = settings_for(fake_github)
    import dataclasses
    second = auth_test_app(dataclasses.replace(second_settings, secret_key="a-different-key-" + "z" * 32))
    one = first.test_client()
    sign_in(one, fake_github)
    assert one.get("/api/pools").status_code == 200
    other = second.test_client()
    other.set_cookie("kiqboard_session", cookie_value(one))
    assert other.get("/api/pools").status_code == 401


def test_the_memory_is_bounded(app, fake_github):
    app.session_interface.verified_limit = 3
    clients = [app.test_client() for _ in range(6)]
    for c in clients:
        sign_in(c, fake_github)
        assert c.get("/api/pools").status_code == 200
        assert len(app.session_interface._verified) <= 3
    assert all(c.get("/api/pools").status_code == 200 for c in clients)  # forgotten ones are verified again


# --------------------------------------------------------------------------------------------------------------
# A real HTTP server and a real HTTP client (cookies, redirects, Host handling as a browser would)


@pytest.fixture
def live_server(app):
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_real_http_dance(live_server, fake_github):
    fake_github.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    http = requests.Session()
    # Anonymous deep link → /login?next=… → /auth/github → fake GitHub → callback → the deep link, all followed.
    response = http.get(f"{live_server}/sidekiq2/retries?page=3", timeout=10)
    assert response.status_code == 200 and "Sign in with GitHub" in response.text
    href = re.search(r'id="github-sign-in" href="([^"]+)"', response.text).group(1).replace("&amp;", "&")
    response = http.get(live_server + href, timeout=10)
    assert response.status_code == 200, response.text[:500]
    assert response.url == f"{live_server}/sidekiq2/retries?page=3"
    assert "retries of sidekiq2" in response.text
    assert fake_github.authorize_requests[-1]["redirect_uri"] == f"{live_server}/auth/github/callback"
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', response.text).group(1)
    assert http.post(f"{live_server}/sidekiq2/retries", data={"authenticity_token": token}, timeout=10).status_code == 200
    assert http.post(f"{live_server}/sidekiq2/retries", data={"authenticity_token": token},
                     headers={"Origin": "https://evil.example"}, timeout=10).status_code == 403
    response = http.post(f"{live_server}/logout", data={"authenticity_token": token}, timeout=10)
    assert response.url == f"{live_server}/login" and "You are signed out." in response.text
    assert http.get(f"{live_server}/api/pools", timeout=10).status_code == 401


# --------------------------------------------------------------------------------------------------------------
# Through the real app


@pytest.fixture
def real_app(fake_github, redis_url):
    app_module = pytest.importorskip("app")
    settings = make_settings(
        fake_github,
        pools=[pool_settings("sidekiq", redis_url), pool_settings("sidekiq2", redis_url, teams=["acme/ops"],
                                                                  operators=["acme/ops"])],
        trusted_proxies=1,
    )
    return app_module.create_app(settings)


def test_real_app_sign_in_and_pool_access(real_app, fake_github):
    client = real_app.test_client()
    response = client.get("/sidekiq2/retries?page=3")
    assert response.status_code == 302 and response.headers["Location"] == "/login?next=%2Fsidekiq2%2Fretries%3Fpage%3D3"
    assert client.get("/api/pools").status_code == 401
    assert client.get("/sidekiq/stats").status_code == 401
    fake_github.set_user("octocat", orgs={"acme": "active"})
    done = sign_in(client, real_app, fake_github, next="/sidekiq2/retries?page=3")
    assert done.headers["Location"] == "/sidekiq2/retries?page=3"
    assert client.get("/sidekiq2/retries?page=3").status_code == 404  # not in acme/ops
    assert client.get("/sidekiq/retries").status_code == 200
    names = [p["name"] for p in client.get("/api/pools").get_json()["pools"]]
    assert names == ["sidekiq"]
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 403


def test_real_app_behind_heroku_router_uses_https(real_app, fake_github):
    client = real_app.test_client()
    response = client.get("/auth/github", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kiq.example.com",
                                                   "X-Forwarded-For": "203.0.113.9"})
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["redirect_uri"] == ["https://kiq.example.com/auth/github/callback"]
    assert "Secure" in session_cookie_header(response)


def test_real_app_post_behind_heroku_router(real_app, fake_github):
    client = real_app.test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kiq.example.com", "X-Forwarded-Port": "443",
                 "X-Forwarded-For": "203.0.113.9"}
    fake_github.set_user("octocat", orgs={"acme": "active"})
    callback = approve(fake_github, client.get("/auth/github", headers=forwarded).headers["Location"])
    assert client.get(local_path(callback), headers=forwarded).status_code == 302
    token = csrf_token(client)
    for origin in ("https://kiq.example.com", "https://kiq.example.com:443"):
        response = client.post("/sidekiq/retries", data={"authenticity_token": token, "key[]": "1.0-x", "delete": "1"},
                               headers={**forwarded, "Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert response.status_code not in (401, 403), (origin, response.status_code, body(response)[:300])
    response = client.post("/sidekiq/retries", data={"authenticity_token": token},
                           headers={**forwarded, "Origin": "http://kiq.example.com"})  # downgraded origin
    assert response.status_code == 403
    response = client.post("/logout", data={"authenticity_token": token},
                           headers={**forwarded, "Origin": "https://kiq.example.com"})
    assert response.status_code == 302


def test_real_app_bearer(real_app, fake_github):
    fake_github.set_user("robot", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    token = fake_github.issue_token("robot")
    client = real_app.test_client()
    response = client.get("/api/pools", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert [p["name"] for p in response.get_json()["pools"]] == ["sidekiq", "sidekiq2"]
    assert client.get("/sidekiq2/stats", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/pools", headers={"Authorization": "Bearer nope"}).status_code == 401
