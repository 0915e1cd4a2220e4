"""Who gets in: GitHub OAuth (Authlib) + Flask-Login, CSRF, membership re-checks, Bearer tokens, per-pool access.

Rules (../shared/CONTRACT.md "Who gets in"):

- A user is in when ``GET /user/memberships/orgs/{org}`` answers ``state: active`` for one of GITHUB_ORG (pending is
  not membership) and, when GITHUB_TEAMS is set, ``GET /orgs/{org}/teams/{slug}/memberships/{login}`` answers
  ``state: active`` for one of those teams.
- The session holds no database id: the signed cookie carries the user's login, id, name, avatar, the *active* teams
  (lowercase ``org/slug``) among every team named anywhere in the settings (GITHUB_TEAMS, every pool's TEAMS and
  OPERATORS), when that was last checked, and the user's GitHub token **encrypted** (Fernet, key derived from
  SECRET_KEY with HKDF). Flask's session cookie is signed, not encrypted; encrypting the token means a leaked cookie
  or a cookie pasted into a bug report does not hand out a GitHub token with ``read:org``.
- Every ``settings.membership_ttl`` seconds the membership is checked again with that token. Removed (or token
  revoked) → signed out with a message. GitHub unreachable → the session is kept for ``GITHUB_OUTAGE_GRACE`` seconds
  (30 min, app.config["KIQBOARD_GITHUB_OUTAGE_GRACE"] overrides) and GitHub is retried at most every
  ``OUTAGE_RETRY`` seconds, so an outage of github.com neither locks every operator out of their queues in the
  middle of an incident nor blocks each page view on a 5 s timeout. After the grace the session ends.
- Scripts: ``Authorization: Bearer <GitHub token>`` on GET/HEAD, same rules; the answer is cached in-process for
  membership_ttl keyed by sha256(token) (never the token itself).
- Unsafe methods (POST/PUT/PATCH/DELETE) need the CSRF token (form field ``authenticity_token`` or header
  ``X-CSRF-Token``) and must not be cross-site (``Sec-Fetch-Site: cross-site`` or a foreign ``Origin``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests
from authlib.integrations.flask_client import OAuth
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import (
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user, login_user, logout_user
from itsdangerous import BadSignature

from config import PoolSettings, Settings

__all__ = [
    "init_app", "current_user", "User", "may_see", "may_operate", "visible_pools", "require_signed_in",
    "guard_pool", "signed_in_required", "csrf_token", "safe_next", "is_json_request", "GitHubAPI", "Membership",
]

log = logging.getLogger("kiqboard.auth")

EXTENSION = "kiqboard_auth"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_SESSION_KEY = "_csrf_token"
USER_SESSION_KEY = "kiq_user"
NEXT_SESSION_KEY = "kiq_login_next"
CSRF_FIELD = "authenticity_token"
CSRF_HEADER = "X-CSRF-Token"
GITHUB_TIMEOUT = 5.0  # seconds, per request to GitHub (connect and read)
GITHUB_OUTAGE_GRACE = 30 * 60  # keep sessions this long while GitHub cannot be reached
OUTAGE_RETRY = 60  # while GitHub is unreachable, try again at most this often (per session)
BEARER_CACHE_SIZE = 2048
DEMO_LOGIN = "demo"
OAUTH_APP_DOCS = (
    "https://docs.github.com/en/organizations/managing-oauth-access-to-your-organizations-data/"
    "approving-oauth-apps-for-your-organization"
)

# Tests replace this to move time forward.
clock = time.time


def _now() -> float:
    return clock()


# --------------------------------------------------------------------------------------------------------------
# The user


class User(UserMixin):
    """The signed-in user, rebuilt from the session on every request (or from a Bearer token's cached answer)."""

    def __init__(
        self,
        login: str,
        id: int | None = None,
        name: str | None = None,
        avatar_url: str | None = None,
        teams: Iterable[str] = (),
        orgs: Iterable[str] = (),
        membership_checked_at: float = 0.0,
        is_demo: bool = False,
        via: str = "session",
    ) -> None:
        self.login = login
        self.id = id
        self.name = name or login
        self.avatar_url = avatar_url
        self.teams = frozenset(t.lower() for t in teams)
        self.orgs = frozenset(o.lower() for o in orgs)
        self.membership_checked_at = membership_checked_at
        self.is_demo = is_demo
        self.via = via  # "session" or "bearer"

    def get_id(self) -> str:
        return self.login

    def to_session(self) -> dict[str, Any]:
        return {
            "login": self.login,
            "id": self.id,
            "name": self.name,
            "avatar_url": self.avatar_url,
            "teams": sorted(self.teams),
            "orgs": sorted(self.orgs),
            "checked_at": self.membership_checked_at,
            "demo": self.is_demo,
        }

    @classmethod
    def from_session(cls, data: Mapping[str, Any]) -> "User":
        return cls(
            login=str(data["login"]),
            id=data.get("id"),
            name=data.get("name"),
            avatar_url=data.get("avatar_url"),
            teams=data.get("teams") or (),
            orgs=data.get("orgs") or (),
            membership_checked_at=float(data.get("checked_at") or 0.0),
            is_demo=bool(data.get("demo")),
        )

    def __repr__(self) -> str:
        return f"<User {self.login} teams={sorted(self.teams)}{' demo' if self.is_demo else ''}>"


class Anonymous(AnonymousUserMixin):
    login = None
    name = None
    avatar_url = None
    teams: frozenset[str] = frozenset()
    orgs: frozenset[str] = frozenset()
    is_demo = False


def demo_user() -> User:
    return User(login=DEMO_LOGIN, id=0, name="Demo user", avatar_url=None, is_demo=True,
                membership_checked_at=_now())


# --------------------------------------------------------------------------------------------------------------
# GitHub


class GitHubUnreachable(Exception):
    """GitHub could not be asked (connection refused, timeout, 5xx, rate limit, garbage)."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status  # what we answer: 503 (no answer) or 502 (a bad answer)


@dataclass
class Membership:
    """The outcome of checking one token against the settings."""

    ok: bool
    reason: str = ""  # when not ok: not_member | pending | restricted | sso | not_in_teams | bad_token | forbidden
    login: str | None = None
    id: int | None = None
    name: str | None = None
    avatar_url: str | None = None
    orgs: tuple[str, ...] = ()  # active orgs among GITHUB_ORG
    teams: tuple[str, ...] = ()  # active teams among every team named in the settings, lowercase org/slug
    org: str | None = None  # the org the refusal is about
    sso_url: str | None = None
    message: str | None = None  # GitHub's own message, when it gave one

    def user(self, via: str = "session") -> User:
        return User(login=self.login or "", id=self.id, name=self.name, avatar_url=self.avatar_url,
                    teams=self.teams, orgs=self.orgs, membership_checked_at=_now(), via=via)


def all_configured_teams(settings: Settings) -> tuple[str, ...]:
    """Every team named anywhere in the settings, lowercase org/slug, in a stable order."""
    seen: dict[str, None] = {}
    github_teams = settings.github.teams if settings.github else ()
    for team in github_teams:
        seen.setdefault(team.lower(), None)
    for pool in settings.pools:
        for team in (*pool.teams, *pool.operators):
            seen.setdefault(team.lower(), None)
    return tuple(seen)


class GitHubAPI:
    """The few GitHub REST calls sign-in needs. Works against github.com and GHE (api_url …/api/v3)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.github is not None
        self.settings = settings
        self.github = settings.github
        self.api_url = settings.github.api_url.rstrip("/")
        self.web_url = settings.github.url.rstrip("/")
        self.http = requests.Session()
        self.http.headers.update({
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "kiqboard",
        })
        self.teams = all_configured_teams(settings)

    def _get(self, path: str, token: str) -> requests.Response:
        url = f"{self.api_url}{path}"
        try:
            response = self.http.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=GITHUB_TIMEOUT,
                                     allow_redirects=False)
        except requests.Timeout:
            raise GitHubUnreachable(f"GitHub did not answer within {GITHUB_TIMEOUT:g} s", 503) from None
        except requests.RequestException as error:
            raise GitHubUnreachable(f"could not reach GitHub ({type(error).__name__})", 503) from None
        if response.status_code >= 500:
            raise GitHubUnreachable(f"GitHub answered {response.status_code}", 502)
        if response.status_code == 429 or (
            response.status_code == 403 and response.headers.get("X-RateLimit-Remaining") == "0"
        ):
            raise GitHubUnreachable("GitHub's API rate limit is exhausted", 503)
        return response

    @staticmethod
    def _json(response: requests.Response) -> dict:
        try:
            data = response.json()
        except ValueError:
            raise GitHubUnreachable(f"GitHub answered {response.status_code} with something that is not JSON", 502) from None
        if not isinstance(data, dict):
            raise GitHubUnreachable("GitHub answered with unexpected JSON", 502)
        return data

    def _forbidden(self, response: requests.Response, org: str) -> Membership:
        """Classify a 403: SAML SSO, OAuth App access restrictions, or something else."""
        sso = response.headers.get("X-GitHub-SSO")
        message = None
        try:
            body = response.json()
            if isinstance(body, dict):
                message = str(body.get("message") or "") or None
        except ValueError:
            pass
        if sso:
            return Membership(ok=False, reason="sso", org=org, sso_url=self._sso_url(sso, org), message=message)
        if message and "OAuth App access restrictions" in message:
            return Membership(ok=False, reason="restricted", org=org, message=message)
        return Membership(ok=False, reason="forbidden", org=org, message=message)

    def _sso_url(self, header: str, org: str) -> str:
        """The url= part of X-GitHub-SSO when it points at this GitHub, else the org's SSO page."""
        for part in header.split(";"):
            part = part.strip()
            if part.lower().startswith("url="):
                url = part[4:].strip()
                if url.startswith(self.web_url + "/") and not any(c in url for c in "\"'<> \\"):
                    return url
        return f"{self.web_url}/orgs/{quote(org)}/sso"

    def check(self, token: str) -> Membership:
        """Who this token belongs to and whether they are in. Raises GitHubUnreachable."""
        response = self._get("/user", token)
        if response.status_code == 401:
            return Membership(ok=False, reason="bad_token", message="GitHub does not accept this token")
        if response.status_code != 200:
            if response.status_code == 403:
                return self._forbidden(response, "")
            raise GitHubUnreachable(f"GitHub answered {response.status_code} to /user", 502)
        user = self._json(response)
        login = user.get("login")
        if not isinstance(login, str) or not login:
            raise GitHubUnreachable("GitHub's /user answer has no login", 502)
        base = {"login": login, "id": user.get("id"), "name": user.get("name") or login,
                "avatar_url": user.get("avatar_url")}

        active_orgs: list[str] = []
        refusals: list[Membership] = []
        for org in self.github.orgs:
            response = self._get(f"/user/memberships/orgs/{quote(org, safe='')}", token)
            if response.status_code == 200:
                data = self._json(response)
                state = data.get("state")
                if state == "active":
                    active_orgs.append(org.lower())
                elif state == "pending":
                    refusals.append(Membership(ok=False, reason="pending", org=org))
                else:
                    refusals.append(Membership(ok=False, reason="not_member", org=org))
            elif response.status_code == 403:
                refusals.append(self._forbidden(response, org))
            elif response.status_code in (404, 401):
                # 404: not a member (GitHub hides orgs you are not in); 401 cannot happen after /user said 200.
                refusals.append(Membership(ok=False, reason="not_member", org=org))
            else:
                raise GitHubUnreachable(f"GitHub answered {response.status_code} for the membership of {org}", 502)
        if not active_orgs:
            order = ("sso", "restricted", "forbidden", "pending", "not_member")
            refusals.sort(key=lambda m: order.index(m.reason))
            refusal = refusals[0] if refusals else Membership(ok=False, reason="not_member")
            refusal.login, refusal.id, refusal.name, refusal.avatar_url = (
                base["login"], base["id"], base["name"], base["avatar_url"])
            return refusal

        teams: list[str] = []
        for team in self.teams:
            org, slug = team.split("/", 1)
            if org not in active_orgs:
                continue
            response = self._get(
                f"/orgs/{quote(org, safe='')}/teams/{quote(slug, safe='')}/memberships/{quote(login, safe='')}", token)
            if response.status_code == 200 and self._json(response).get("state") == "active":
                teams.append(team)
            elif response.status_code not in (200, 403, 404):
                raise GitHubUnreachable(f"GitHub answered {response.status_code} for team {team}", 502)
            # 404: not in the team (or the team does not exist); 403: not allowed to see it: either way not in.

        required = {t.lower() for t in self.github.teams}
        if required and not required & set(teams):
            return Membership(ok=False, reason="not_in_teams", orgs=tuple(active_orgs), teams=tuple(teams), **base)
        return Membership(ok=True, orgs=tuple(active_orgs), teams=tuple(teams), **base)


# --------------------------------------------------------------------------------------------------------------
# Per-app state


@dataclass
class AuthState:
    settings: Settings
    pools: Mapping[str, Any]
    oauth: OAuth | None = None
    github: GitHubAPI | None = None
    fernet: Fernet | None = None
    bearer_cache: "OrderedDict[str, tuple[float, Membership]]" = field(default_factory=OrderedDict)
    bearer_lock: threading.Lock = field(default_factory=threading.Lock)


def state() -> AuthState:
    return current_app.extensions[EXTENSION]


def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"kiqboard", info=b"github-token-in-session").derive(
        secret_key.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


class KiqboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, marked Secure whenever the request itself is https (after ProxyFix).

    Every signed-in request carries the same cookie until the session changes, and checking it (HMAC, zlib, JSON)
    was the largest fixed cost of a request. So a cookie this process has verified is remembered, exact string →
    payload and signing time, and the next request with that string only re-checks the age. Nothing is trusted
    that was not verified with this app's keys; losing the memory (restart, another dyno) only costs a re-check.
    """

    verified_limit = 2048

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: tuple = ()
        self._signer: Any = None
        self._verified: dict[str, tuple[float, str]] = {}  # cookie -> (signed at, payload as tagged JSON)

    def get_signing_serializer(self, app: Flask):
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        if keys != self._keys or self._signer is None:
            signer = super().get_signing_serializer(app)
            with self._lock:
                self._keys, self._signer, self._verified = keys, signer, {}
        return self._signer

    def open_session(self, app: Flask, request):
        signer = self.get_signing_serializer(app)
        if signer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        max_age = app.permanent_session_lifetime.total_seconds()
        known = self._verified.get(value)
        if known is not None and 0 <= time.time() - known[0] <= max_age:
            return self.session_class(self.serializer.loads(known[1]))
        try:
            data, signed_at = signer.loads(value, max_age=int(max_age), return_timestamp=True)
        except BadSignature:
            return self.session_class()
        with self._lock:
            if len(self._verified) >= self.verified_limit:
                del self._verified[next(iter(self._verified))]
            self._verified[value] = (signed_at.timestamp(), self.serializer.dumps(data))
        return self.session_class(data)

    def get_cookie_secure(self, app: Flask) -> bool:
        if app.config.get("SESSION_COOKIE_SECURE"):
            return True
        try:
            return bool(request.is_secure)
        except RuntimeError:  # outside a request
            return False


# --------------------------------------------------------------------------------------------------------------
# Wiring


def init_app(app: Flask, settings: Settings, pools: Mapping[str, Any]) -> None:
    """Flask-Login, the OAuth registry (one per app), CSRF and cross-site refusal, membership re-checks."""
    st = AuthState(settings=settings, pools=pools)
    app.extensions[EXTENSION] = st
    app.session_interface = KiqboardSessionInterface()
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if app.config.get("SESSION_COOKIE_SAMESITE") not in ("Lax", "Strict"):
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    # Remember-me is never used; should anything call login_user(remember=True), keep that cookie tight too.
    app.config.update(REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax",
                      REMEMBER_COOKIE_SECURE=bool(settings.force_https))
    app.config.setdefault("KIQBOARD_GITHUB_OUTAGE_GRACE", GITHUB_OUTAGE_GRACE)

    manager = LoginManager()
    manager.session_protection = "basic"
    manager.anonymous_user = Anonymous
    manager.login_view = "login.login_page"
    manager.init_app(app)

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        data = session.get(USER_SESSION_KEY)
        if not isinstance(data, dict) or data.get("login") != user_id:
            return None
        if bool(data.get("demo")) != bool(settings.demo):
            return None  # a demo session is worthless outside demo mode (and a GitHub one inside it)
        try:
            return User.from_session(data)
        except (KeyError, TypeError, ValueError):
            return None

    @manager.unauthorized_handler
    def unauthorized():
        return _unauthenticated_response()

    if settings.github is not None and not settings.demo:
        oauth = OAuth()
        oauth.init_app(app)
        github = settings.github
        oauth.register(
            "github",
            client_id=github.client_id,
            client_secret=github.client_secret,
            authorize_url=f"{github.url.rstrip('/')}/login/oauth/authorize",
            access_token_url=f"{github.url.rstrip('/')}/login/oauth/access_token",
            api_base_url=f"{github.api_url.rstrip('/')}/",
            client_kwargs={"scope": "read:org", "code_challenge_method": "S256", "default_timeout": GITHUB_TIMEOUT},
        )
        st.oauth = oauth
        st.github = GitHubAPI(settings)
    st.fernet = _fernet(settings.secret_key)

    app.jinja_env.globals.update(csrf_token=csrf_token, may_see=may_see, may_operate=may_operate)
    app.before_request(_protect_unsafe_methods)
    app.before_request(_recheck_membership)


# --------------------------------------------------------------------------------------------------------------
# Responses


def is_json_request() -> bool:
    """JSON routes (API, Sidekiq's /stats, /metrics) and callers that prefer JSON get JSON answers."""
    path = request.path
    if path.startswith("/api/") or path.endswith(("/stats", "/stats/queues")) or path == "/metrics":
        return True
    if "Authorization" in request.headers:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def refusal(reason: str, status: int, **context: Any) -> Response:
    """A clear refusal: templates/login/refused.html, or JSON {"error": …, "reason": …} for JSON callers."""
    settings = state().settings
    github = settings.github
    context.setdefault("github_url", github.url.rstrip("/") if github else "https://github.com")
    context.setdefault("orgs", github.orgs if github else ())
    context.setdefault("required_teams", github.teams if github else ())
    context.setdefault("client_id", github.client_id if github else "")
    context.setdefault("docs_url", OAUTH_APP_DOCS)
    if is_json_request():
        body = {"error": context.get("message") or REASON_TEXT.get(reason, reason), "reason": reason}
        if context.get("sso_url"):
            body["sso_url"] = context["sso_url"]
        response = jsonify(body)
    else:
        response = make_response(render_template("login/refused.html", reason=reason, status=status, **context))
    response.status_code = status
    if status in (502, 503):
        response.headers["Retry-After"] = "30"
    return response


REASON_TEXT = {
    "not_member": "not a member of the GitHub organization",
    "pending": "the invitation to the GitHub organization is still pending",
    "restricted": "the GitHub organization restricts OAuth apps; an organization owner must approve this app",
    "sso": "SAML single sign-on has not authorized this token for the organization",
    "not_in_teams": "not a member of any of the required GitHub teams",
    "forbidden": "GitHub refused to show the organization membership",
    "bad_token": "GitHub does not accept this token",
    "unreachable": "GitHub could not be reached; try again in a moment",
    "state": "this sign-in was not started here or has expired; start again",
    "code": "GitHub did not accept the sign-in code (already used or expired); start again",
    "denied": "the sign-in was cancelled at GitHub",
    "csrf": "missing or invalid CSRF token; reload the page and try again",
    "cross_site": "cross-site request refused",
    "read_only_token": "Bearer tokens are accepted on GET requests only",
    "unauthenticated": "sign in first",
}


def _unauthenticated_response() -> Response:
    if is_json_request():
        response = jsonify({"error": "not signed in: sign in with GitHub or send Authorization: Bearer <GitHub token>"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="kiqboard"'
        return response
    return redirect(login_url(current_request_uri()))


def current_request_uri() -> str:
    """The path and query exactly as the client sent them (percent-encoding untouched)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw and raw.startswith("/") and not raw.startswith("//"):
        return raw
    path = quote(request.script_root + request.path, safe="/:@!$&'()*+,;=-._~")
    qs = request.query_string.decode("latin-1")
    return f"{path}?{qs}" if qs else path


def login_url(next_path: str | None) -> str:
    safe = safe_next(next_path)
    if not safe or safe == "/":
        return "/login"
    return "/login?next=" + quote(safe, safe="")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_next(value: str | None) -> str | None:
    """`value` when it is a same-site path (+query), else None. Never rewrites what it accepts.

    Accepted: "/", "/sidekiq2/retries?page=3". Refused: "//host", "/\\host", any backslash, control characters
    (browsers drop tabs/newlines, so "/\\t/host" would become "//host"), absolute URLs, "javascript:", anything
    urlsplit finds a scheme or host in, and paths whose *decoded* form starts with "//" (e.g. "/%2F%2Fhost"): no
    kiqboard page starts that way, and a component that decodes once more must not see a host there.
    """
    if not value or not isinstance(value, str) or len(value) > 2048:
        return None
    if not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or _CONTROL.search(value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        return None
    decoded = unquote(parts.path)
    if decoded.startswith("//") or "\\" in decoded or _CONTROL.search(decoded):
        return None
    return value


# --------------------------------------------------------------------------------------------------------------
# CSRF and cross-site refusal


def csrf_token() -> str:
    """This session's CSRF token (created on first use). Also the Jinja global `csrf_token()`.

    Bearer-token requests get "" (they may not POST, and must not be handed a session cookie)."""
    if g.get("_kiq_bearer") is not None:
        return ""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_SESSION_KEY] = token
    return token


def _same_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if request.is_secure and parts.scheme != "https":
        return False
    netloc = parts.netloc.lower()
    default_port = ":443" if parts.scheme == "https" else ":80"
    if netloc.endswith(default_port):
        netloc = netloc[: -len(default_port)]
    return netloc == request.host.lower()


def _protect_unsafe_methods() -> Response | None:
    if request.method not in UNSAFE_METHODS:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    origin = request.headers.get("Origin")
    if fetch_site == "cross-site" or (origin is not None and not _same_origin(origin)):
        log.warning("event=refused result=cross_site method=%s path=%s origin=%s sec_fetch_site=%s",
                    request.method, _kv(request.path), _kv(origin or "-"), _kv(fetch_site or "-"))
        return refusal("cross_site", 403)
    expected = session.get(CSRF_SESSION_KEY)
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    if not isinstance(expected, str) or not expected or not hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8")
    ):
        log.warning("event=refused result=csrf method=%s path=%s login=%s", request.method, _kv(request.path),
                    _kv(_session_login() or "-"))
        return refusal("csrf", 403)
    return None


# --------------------------------------------------------------------------------------------------------------
# Signing in and out (used by blueprints/login.py)


def _session_login() -> str | None:
    data = session.get(USER_SESSION_KEY)
    return data.get("login") if isinstance(data, dict) else None


def _kv(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text) or _CONTROL.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def log_auth(event: str, login: str | None, result: str, **fields: Any) -> None:
    extra = "".join(f" {key}={_kv(value)}" for key, value in fields.items() if value not in (None, "", ()))
    level = logging.INFO if result == "ok" else logging.WARNING
    log.log(level, "event=%s login=%s result=%s%s", event, _kv(login or "-"), result, extra)


def encrypt_token(token: str) -> str:
    return state().fernet.encrypt(token.encode("utf-8")).decode("ascii")


def decrypt_token(blob: str | None) -> str | None:
    if not blob:
        return None
    try:
        return state().fernet.decrypt(blob.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        return None


def start_session(user: User, token: str | None = None) -> None:
    """Sign `user` in on a fresh session (no fixation: everything from before is dropped)."""
    session.clear()
    login_user(user, remember=False, fresh=True)
    data = user.to_session()
    if token:
        data["token"] = encrypt_token(token)
    session[USER_SESSION_KEY] = data
    session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)


def end_session(message: str | None = None, category: str = "info") -> None:
    logout_user()
    session.clear()
    if message:
        flash(message, category)


def removed_message(membership: Membership, settings: Settings) -> str:
    orgs = ", ".join(settings.github.orgs) if settings.github else "the organization"
    if membership.reason == "not_in_teams":
        teams = ", ".join(settings.github.teams) if settings.github else ""
        return f"You were signed out: you are no longer a member of any of the teams {teams}."
    if membership.reason == "bad_token":
        return "You were signed out: your GitHub authorization was revoked or has expired. Sign in again."
    if membership.reason in ("sso", "restricted", "forbidden"):
        return f"You were signed out: GitHub no longer lets kiqboard see your membership of {membership.org or orgs}."
    if membership.reason == "pending":
        return f"You were signed out: you are no longer a member of {membership.org or orgs} (only invited)."
    return f"You were signed out: you are no longer a member of {membership.org or orgs}."


# --------------------------------------------------------------------------------------------------------------
# Membership re-check for session users


def _recheck_membership() -> None:
    if request.endpoint in ("static", "healthz"):
        return
    st = state()
    data = session.get(USER_SESSION_KEY)
    if not isinstance(data, dict) or st.github is None:
        return
    if data.get("demo"):
        end_session()  # cannot happen with distinct keys; never let a demo session in outside demo mode
        return
    if "Authorization" in request.headers:
        return  # Bearer requests are judged by their token, not the cookie
    now = _now()
    try:
        checked_at = float(data.get("checked_at") or 0.0)
    except (TypeError, ValueError):
        checked_at = 0.0
    next_check = float(data.get("retry_at") or 0.0) if data.get("outage_since") else checked_at + st.settings.membership_ttl
    if now < next_check and checked_at <= now + 60:  # a check "from the future" is not trusted either
        return
    login = data.get("login")
    token = decrypt_token(data.get("token"))
    if token is None:
        log_auth("recheck", login, "no_token")
        end_session("Your session has expired. Sign in again.")
        return
    try:
        membership = st.github.check(token)
    except GitHubUnreachable as error:
        grace = float(current_app.config.get("KIQBOARD_GITHUB_OUTAGE_GRACE", GITHUB_OUTAGE_GRACE))
        outage_since = float(data.get("outage_since") or now)
        if now - outage_since >= grace:
            log_auth("recheck", login, "unreachable_grace_over", error=str(error))
            end_session("You were signed out: GitHub could not be reached to confirm your membership. "
                        "Sign in again when GitHub is back.", "warning")
            return
        log_auth("recheck", login, "unreachable_grace", error=str(error), since=int(outage_since))
        data = dict(data, outage_since=outage_since, retry_at=now + min(OUTAGE_RETRY, st.settings.membership_ttl))
        session[USER_SESSION_KEY] = data
        return
    if not membership.ok or (membership.login or "").lower() != str(login).lower():
        log_auth("recheck", login, membership.reason or "login_changed", org=membership.org)
        end_session(removed_message(membership, st.settings), "warning")
        return
    user = membership.user()
    fresh = user.to_session()
    fresh["token"] = data.get("token")
    session[USER_SESSION_KEY] = fresh
    g.pop("_login_user", None)  # rebuilt from the fresh data on next access
    log_auth("recheck", login, "ok", teams=",".join(sorted(user.teams)))


# --------------------------------------------------------------------------------------------------------------
# Bearer tokens


def _bearer_membership(token: str) -> Membership:
    """Cached for membership_ttl per sha256(token). Raises GitHubUnreachable (never cached)."""
    st = state()
    key = hashlib.sha256(token.encode("utf-8")).hexdigest()
    now = _now()
    with st.bearer_lock:
        hit = st.bearer_cache.get(key)
        if hit and hit[0] > now:
            st.bearer_cache.move_to_end(key)
            return hit[1]
        st.bearer_cache.pop(key, None)
    membership = st.github.check(token)
    with st.bearer_lock:
        st.bearer_cache[key] = (now + st.settings.membership_ttl, membership)
        while len(st.bearer_cache) > BEARER_CACHE_SIZE:
            st.bearer_cache.popitem(last=False)
    if membership.ok:
        log_auth("bearer", membership.login, "ok", teams=",".join(membership.teams))
    else:
        log_auth("bearer", membership.login, membership.reason, org=membership.org)
    return membership


def _json_error(message: str, status: int, **extra: Any) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="kiqboard"'
    return response


def _authenticate_bearer() -> Response | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _json_error("unsupported Authorization header: send Authorization: Bearer <GitHub token>", 401)
    if request.method not in ("GET", "HEAD"):
        return _json_error(REASON_TEXT["read_only_token"], 403, reason="read_only_token")
    st = state()
    if st.github is None:
        return _json_error("Bearer tokens need GitHub sign-in, which demo mode does not have", 401)
    cached = g.get("_kiq_bearer")
    if cached is None:
        try:
            membership = _bearer_membership(token)
        except GitHubUnreachable as error:
            log_auth("bearer", None, "unreachable", error=str(error))
            response = _json_error(f"GitHub could not be reached to check the token: {error}", error.status,
                                   reason="unreachable")
            response.headers["Retry-After"] = "30"
            return response
        g._kiq_bearer = membership
        cached = membership
    if not cached.ok:
        if cached.reason == "bad_token":
            return _json_error("GitHub does not accept this token", 401, reason="bad_token")
        return _json_error(REASON_TEXT.get(cached.reason, cached.reason), 403, reason=cached.reason,
                           **({"sso_url": cached.sso_url} if cached.sso_url else {}))
    g._login_user = cached.user(via="bearer")  # this request only: no session is written
    return None


# --------------------------------------------------------------------------------------------------------------
# Access helpers for blueprints


def require_signed_in() -> Response | None:
    """For a blueprint's before_request: None when the caller is in, else the response to send.

    HTML without a session → redirect to /login?next=<exact path+query>; JSON routes → 401 JSON;
    `Authorization: Bearer <GitHub token>` → checked (GET/HEAD only), 401 JSON when GitHub does not accept it.
    """
    if "Authorization" in request.headers:
        return _authenticate_bearer()
    if current_user.is_authenticated:
        return None
    return _unauthenticated_response()


def signed_in_required(view):
    """Decorator form of require_signed_in()."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        response = require_signed_in()
        if response is not None:
            return response
        return view(*args, **kwargs)

    return wrapper


def _pool_settings(pool: Any) -> PoolSettings:
    return getattr(pool, "settings", pool)


def may_see(pool: Any) -> bool:
    """Pool (or PoolSettings): no TEAMS → everyone signed in; else one of the user's active teams is listed."""
    user = current_user
    if not user or not user.is_authenticated:
        return False
    if user.is_demo:
        return True
    teams = _pool_settings(pool).teams
    if not teams:
        return True
    return bool(user.teams & {t.lower() for t in teams})


def may_operate(pool: Any) -> bool:
    """May see it and (no OPERATORS, or one of the user's active teams is an operator team)."""
    if not may_see(pool):
        return False
    user = current_user
    if user.is_demo:
        return True
    operators = _pool_settings(pool).operators
    if not operators:
        return True
    return bool(user.teams & {t.lower() for t in operators})


def visible_pools(pools: Mapping[str, Any] | Iterable[Any]) -> list:
    """The pools (dict name→Pool, or an iterable of Pools) the current user may see, in their order."""
    values = pools.values() if isinstance(pools, Mapping) else pools
    return [pool for pool in values if may_see(pool)]


def guard_pool(pool: Any) -> Response | None:
    """For a pool blueprint's before_request: sign-in, then 404 when hidden, then 403 on unsafe methods
    without operator rights. Returns the sign-in response (redirect/401) or None; aborts with 404/403."""
    response = require_signed_in()
    if response is not None:
        return response
    settings = _pool_settings(pool)
    if not may_see(settings):
        abort(404)
    if request.method in UNSAFE_METHODS and not may_operate(settings):
        teams = ", ".join(settings.operators)
        abort(403, description=f"You may look at {settings.name} but not change it: that takes membership of "
                               f"one of these GitHub teams: {teams}.")
    return None
