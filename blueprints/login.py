"""Sign-in routes: /login, /auth/github, /auth/github/callback, POST /logout, POST /auth/demo (demo mode only).

The rules and the session layout live in auth.py; this module is only the OAuth dance and its pages.
"""

from __future__ import annotations

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_login import current_user

import auth
from config import Settings


def create_login_blueprint(settings: Settings) -> Blueprint:
    bp = Blueprint("login", __name__)

    def github_mode() -> bool:
        return not settings.demo and settings.github is not None

    @bp.get("/login")
    def login_page():
        next_path = auth.safe_next(request.args.get("next"))
        if current_user.is_authenticated:
            return redirect(next_path or "/")
        return render_template(
            "login/login.html",
            next_path=next_path,
            demo=settings.demo,
            github_mode=github_mode(),
            github_start=url_for("login.github_start", next=next_path) if next_path else url_for("login.github_start"),
            orgs=settings.github.orgs if settings.github else (),
        )

    @bp.get("/auth/github")
    def github_start():
        if not github_mode():
            abort(404)
        next_path = auth.safe_next(request.args.get("next"))
        # No fixation and no pile-up of abandoned Authlib state entries (authlib #622): start from nothing.
        session.clear()
        if next_path:
            session[auth.NEXT_SESSION_KEY] = next_path
        redirect_uri = url_for(
            "login.github_callback", _external=True, **({"_scheme": "https"} if settings.force_https else {})
        )
        return auth.state().oauth.github.authorize_redirect(redirect_uri)

    @bp.get("/auth/github/callback")
    def github_callback():
        if not github_mode():
            abort(404)
        next_path = auth.safe_next(session.get(auth.NEXT_SESSION_KEY))
        retry = auth.login_url(next_path)
        error = request.args.get("error")
        if error:
            auth.log_auth("sign_in", None, "denied", error=error[:64])
            return auth.refusal("denied", 403, retry_url=retry, github_error=error[:64],
                                github_error_description=(request.args.get("error_description") or "")[:300])
        try:
            token = auth.state().oauth.github.authorize_access_token()
        except MismatchingStateError:
            auth.log_auth("sign_in", None, "bad_state")
            return auth.refusal("state", 400, retry_url=retry)
        except OAuthError as err:
            auth.log_auth("sign_in", None, "bad_code", error=(err.error or "")[:64])
            return auth.refusal("code", 400, retry_url=retry, github_error=(err.error or "")[:64])
        except (requests.RequestException, ValueError) as err:
            auth.log_auth("sign_in", None, "unreachable", error=type(err).__name__)
            status = 503 if isinstance(err, (requests.ConnectionError, requests.Timeout)) else 502
            return auth.refusal("unreachable", status, retry_url=retry)
        access_token = token.get("access_token") if isinstance(token, dict) else None
        if not access_token:
            auth.log_auth("sign_in", None, "bad_code", error="no_access_token")
            return auth.refusal("code", 400, retry_url=retry)
        try:
            membership = auth.state().github.check(access_token)
        except auth.GitHubUnreachable as err:
            auth.log_auth("sign_in", None, "unreachable", error=str(err))
            return auth.refusal("unreachable", err.status, retry_url=retry, detail=str(err))
        if not membership.ok:
            auth.log_auth("sign_in", membership.login, membership.reason, org=membership.org)
            session.clear()
            status = 502 if membership.reason == "bad_token" else 403
            return auth.refusal(membership.reason, status, retry_url=retry, login=membership.login,
                                org=membership.org, sso_url=membership.sso_url, github_message=membership.message)
        user = membership.user()
        auth.start_session(user, access_token)
        auth.log_auth("sign_in", user.login, "ok", teams=",".join(sorted(user.teams)), next=next_path)
        return redirect(next_path or "/")

    @bp.post("/auth/demo")
    def demo_login():
        if not settings.demo:
            abort(404)
        next_path = auth.safe_next(request.form.get("next") or request.args.get("next"))
        auth.start_session(auth.demo_user())
        auth.log_auth("sign_in", auth.DEMO_LOGIN, "ok", mode="demo")
        return redirect(next_path or "/")

    @bp.post("/logout")
    def logout():
        login = current_user.login if current_user.is_authenticated else None
        auth.end_session("You are signed out.")
        auth.log_auth("sign_out", login, "ok")
        return redirect(url_for("login.login_page"))

    return bp
