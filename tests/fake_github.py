"""A small fake GitHub (web + REST API) served over real HTTP on 127.0.0.1, in a thread.

    fake = FakeGitHub().start()          # or the `fake_github` fixture from tests/auth_support.py
    fake.set_user("octocat", orgs={"acme": "active"}, teams={"acme/ops": "active"})
    fake.url          -> "http://127.0.0.1:PORT"          (GITHUB_URL)
    fake.api_url      -> "http://127.0.0.1:PORT/api/v3"   (GITHUB_API_URL, GHE style; the API is also served at /)

Web:  GET  /login/oauth/authorize  auto-approves for `fake.default_login` (or the `login=` query parameter, which
           real GitHub treats as a suggestion): 302 to redirect_uri?code=…&state=…  (or ?error=access_denied when
           `fake.deny = True`).
      POST /login/oauth/access_token  HTTP Basic (or form) client auth; checks the code (single use, 10 min),
           redirect_uri and the PKCE S256 verifier; answers like GitHub: 200 JSON, {"error": …} on mistakes.
API:  GET /user, /user/memberships/orgs/{org}, /orgs/{org}/teams/{slug}/memberships/{login}
      Per-user answers: orgs={"acme": "active"|"pending"|"restricted"|"sso"|"admin"}, teams={"acme/ops": "active"|
      "pending"}; an org absent from `orgs` is 404 (not a member / other org). `state=` for the whole user:
      "restricted" or "sso" for every org, "down" → 502 for that user's calls.
      Whole server: `fake.down = True` → every API call 502; `fake.refuse_connections()` / `fake.resume()` closes and
      reopens the listening socket (connection refused); `fake.delay = seconds` slows every API answer.
Counters: `fake.calls` is a list of (method, path, token); `fake.count(prefix=None, token=None)`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

CLIENT_ID = "kiqboard-test-client"
CLIENT_SECRET = "kiqboard-test-secret-0123456789"

RESTRICTED_MESSAGE = (
    "Although you appear to have the correct authorization credentials, the `{org}` organization has enabled OAuth "
    "App access restrictions, meaning that data access to third-parties is limited. For more information on these "
    "restrictions, including how to enable this app, visit "
    "https://docs.github.com/articles/restricting-access-to-your-organization-s-data/"
)
SSO_MESSAGE = (
    "Resource protected by organization SAML enforcement. You must grant your Personal Access token access to "
    "this organization."
)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # keep test output readable
        pass


@dataclass
class FakeUser:
    login: str
    id: int
    name: str | None = None
    orgs: dict[str, str] = field(default_factory=dict)  # org (lowercase) -> active|pending|restricted|sso|admin
    teams: dict[str, str] = field(default_factory=dict)  # "org/slug" (lowercase) -> active|pending
    state: str | None = None  # None | "restricted" | "sso" | "down"


@dataclass
class _Code:
    login: str
    client_id: str
    redirect_uri: str | None
    challenge: str | None
    method: str | None
    expires: float
    scope: str


class FakeGitHub:
    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        self._server = None
        self._thread: threading.Thread | None = None
        self.reset()

    # ----------------------------------------------------------------------------------------------- control

    def reset(self) -> None:
        with self.lock:
            self.users: dict[str, FakeUser] = {}
            self.tokens: dict[str, str] = {}  # token -> login
            self.codes: dict[str, _Code] = {}
            self.calls: list[tuple[str, str, str | None]] = []
            self.authorize_requests: list[dict[str, str]] = []
            self.token_requests: list[dict[str, str]] = []
            self.default_login = "octocat"
            self.down = False
            self.delay = 0.0
            self.deny = False
            self._next_id = 1000
        self.set_user("octocat", orgs={"acme": "active"})

    def set_user(self, login: str, orgs: dict[str, str] | None = None, teams: dict[str, str] | None = None,
                 state: str | None = None, name: str | None = None) -> FakeUser:
        """Create or replace a user. orgs/teams: name -> state (see module doc)."""
        with self.lock:
            old = self.users.get(login.lower())
            if old is None:
                self._next_id += 1
            user = FakeUser(
                login=login, id=old.id if old else self._next_id, name=name if name is not None else login.title(),
                orgs={k.lower(): v for k, v in (orgs or {}).items()},
                teams={k.lower(): v for k, v in (teams or {}).items()},
                state=state,
            )
            self.users[login.lower()] = user
            return user

    def update_user(self, login: str, **changes) -> FakeUser:
        with self.lock:
            user = self.users[login.lower()]
            for key, value in changes.items():
                if key in ("orgs", "teams"):
                    value = {k.lower(): v for k, v in value.items()}
                setattr(user, key, value)
            return user

    def issue_token(self, login: str) -> str:
        """A token for `login` as if it had gone through OAuth (for Bearer tests)."""
        token = "gho_" + secrets.token_urlsafe(27)
        with self.lock:
            self.tokens[token] = login.lower()
        return token

    def revoke(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)

    def count(self, prefix: str | None = None, token: str | None = None) -> int:
        with self.lock:
            return sum(
                1 for _method, path, tok in self.calls
                if (prefix is None or path.startswith(prefix)) and (token is None or tok == token)
            )

    # ----------------------------------------------------------------------------------------------- server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v3"

    def start(self) -> "FakeGitHub":
        self._server = make_server(self.host, self.port, self.wsgi, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-github", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def refuse_connections(self) -> None:
        """Close the listening socket: clients get 'connection refused' until resume()."""
        self.stop()

    def resume(self) -> None:
        if self._server is None:
            self.start()

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------- WSGI

    def wsgi(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception as error:  # pragma: no cover - a bug in the fake, shown to the test
            response = self._json({"message": f"fake GitHub crashed: {error!r}"}, 500)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/login/oauth/authorize" and request.method == "GET":
            return self.authorize(request)
        if path == "/login/oauth/access_token" and request.method == "POST":
            return self.access_token(request)
        if path.startswith("/api/v3/"):
            path = path[len("/api/v3"):]
        return self.api(request, path)

    @staticmethod
    def _json(data, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(data), status=status, headers=headers or {}, content_type="application/json")

    def authorize(self, request: Request) -> Response:
        args = request.args
        with self.lock:
            self.authorize_requests.append(dict(args))
        if args.get("client_id") != self.client_id:
            return Response("unknown client_id", status=404)
        redirect_uri = args.get("redirect_uri")
        if not redirect_uri:
            return Response("redirect_uri missing (the fake requires it)", status=400)
        state = args.get("state")
        if self.deny:
            return self._redirect(redirect_uri, {"error": "access_denied", "error_description": "The user has denied your application access.", "state": state or ""})
        login = (args.get("login") or self.default_login).lower()
        if login not in self.users:
            return Response(f"no such fake user {login!r}", status=400)
        code = secrets.token_hex(10)
        with self.lock:
            self.codes[code] = _Code(
                login=login, client_id=self.client_id, redirect_uri=redirect_uri,
                challenge=args.get("code_challenge"), method=args.get("code_challenge_method"),
                expires=time.time() + 600, scope=args.get("scope", ""),
            )
        params = {"code": code}
        if state is not None:
            params["state"] = state
        return self._redirect(redirect_uri, params)

    @staticmethod
    def _redirect(uri: str, params: dict[str, str]) -> Response:
        parts = urlsplit(uri)
        query = parts.query + ("&" if parts.query else "") + urlencode(params)
        return Response("", status=302, headers={"Location": urlunsplit(parts._replace(query=query))})

    def _client_auth(self, request: Request) -> tuple[str | None, str | None]:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                raw = base64.b64decode(header[6:].strip()).decode("utf-8")
            except (ValueError, UnicodeError):
                return None, None
            cid, _, secret = raw.partition(":")
            from urllib.parse import unquote_plus
            return unquote_plus(cid), unquote_plus(secret)
        return request.form.get("client_id"), request.form.get("client_secret")

    def access_token(self, request: Request) -> Response:
        form = request.form
        with self.lock:
            self.token_requests.append({**form, "auth": "basic" if request.authorization else "post"})
        cid, secret = self._client_auth(request)
        if cid != self.client_id or secret != self.client_secret:
            return self._json({"error": "incorrect_client_credentials",
                               "error_description": "The client_id and/or client_secret passed are incorrect."})
        with self.lock:
            code = self.codes.pop(form.get("code", ""), None)  # single use: gone even if the rest is wrong
        bad_code = {"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}
        if code is None or code.expires < time.time() or code.client_id != cid:
            return self._json(bad_code)
        if code.redirect_uri and form.get("redirect_uri") != code.redirect_uri:
            return self._json({"error": "redirect_uri_mismatch",
                               "error_description": "The redirect_uri MUST match the registered callback URL for this application."})
        if code.challenge:
            verifier = form.get("code_verifier", "")
            if code.method != "S256":
                return self._json({"error": "invalid_request", "error_description": "only S256 is supported"})
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii", "replace")).digest()).rstrip(b"=").decode()
            if not verifier or digest != code.challenge:
                return self._json({"error": "invalid_grant", "error_description": "The code_verifier does not match."})
        token = self.issue_token(code.login)
        return self._json({"access_token": token, "token_type": "bearer", "scope": code.scope})

    def _token(self, request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return value.strip()
        return None

    def api(self, request: Request, path: str) -> Response:
        token = self._token(request)
        with self.lock:
            self.calls.append((request.method, path, token))
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status=502, content_type="text/html")
        with self.lock:
            login = self.tokens.get(token or "")
            user = self.users.get(login) if login else None
        if user is None:
            return self._json({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}, 401)
        if user.state == "down":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", status=502, content_type="text/html")
        parts = [p for p in path.split("/") if p]
        if parts == ["user"]:
            return self._json({
                "login": user.login, "id": user.id, "name": user.name, "type": "User",
                "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
            })
        if len(parts) == 4 and parts[:3] == ["user", "memberships", "orgs"]:
            org = parts[3].lower()
            blocked = self._blocked(user, org)
            if blocked is not None:
                return blocked
            org_state = user.orgs.get(org)
            if org_state is None:
                return self._json({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404)
            return self._json({
                "state": "pending" if org_state == "pending" else "active",
                "role": "admin" if org_state == "admin" else "member",
                "organization": {"login": parts[3]}, "user": {"login": user.login},
            })
        if len(parts) == 6 and parts[0] == "orgs" and parts[2] == "teams" and parts[4] == "memberships":
            org, slug, member = parts[1].lower(), parts[3].lower(), parts[5].lower()
            blocked = self._blocked(user, org)
            if blocked is not None:
                return blocked
            with self.lock:
                target = self.users.get(member)
            team_state = target.teams.get(f"{org}/{slug}") if target else None
            if target is None or team_state is None or user.orgs.get(org) in (None, "pending"):
                return self._json({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404)
            return self._json({"state": team_state, "role": "member", "url": request.url})
        return self._json({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404)

    def _blocked(self, user: FakeUser, org: str) -> Response | None:
        mode = user.orgs.get(org) if user.orgs.get(org) in ("restricted", "sso") else user.state
        if mode == "restricted":
            return self._json({"message": RESTRICTED_MESSAGE.format(org=org),
                               "documentation_url": "https://docs.github.com/articles/restricting-access-to-your-organization-s-data/"}, 403)
        if mode == "sso":
            return self._json(
                {"message": SSO_MESSAGE, "documentation_url": "https://docs.github.com/articles/authenticating-to-a-github-organization-with-saml-single-sign-on/"},
                403,
                headers={"X-GitHub-SSO": f"required; url={self.url}/orgs/{org}/sso?authorization_request=FAKE{user.id}"},
            )
        return None
