"""kiqboard: one dashboard for the Sidekiq workers of several Rails apps.

`create_app()` is the whole wiring; `flask run` and gunicorn ('app:create_app()') both find it.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import sys
from datetime import datetime, timezone

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

import redis

import auth
from blueprints.dashboard import create_dashboard_blueprint
from blueprints.login import create_login_blueprint
from blueprints.overview import create_overview_blueprint
from config import ConfigError, Settings, load_settings
from pools import Bulkhead, Pool, PoolBusy, connect, describe_redis_error, max_connections_for

log = logging.getLogger("kiqboard")

# gunicorn treats this worker exit status as "cannot boot" and stops instead of respawning forever.
BOOT_ERROR_EXIT_STATUS = 3


def create_app(settings: Settings | None = None) -> Flask:
    if settings is None:
        settings = settings_or_exit()
    if settings.demo and not settings.pools:
        import demo

        settings = dataclasses.replace(settings, pools=demo.demo_pool_settings())
    app = Flask(__name__)
    configure(app, settings)
    pools = build_pools(settings)
    app.extensions["kiqboard"] = {"settings": settings, "pools": pools}
    register_extensions(app, settings, pools)
    register_blueprints(app, settings, pools)
    register_security_headers(app)
    register_pool_fault_handling(app, pools)
    register_error_handlers(app)
    if settings.demo:
        start_demo(app, pools)
    return app


def settings_or_exit() -> Settings:
    """Settings from the environment; a mistake is one line on stderr and a non-zero exit, no traceback."""
    try:
        return load_settings()
    except ConfigError as error:
        print(f"kiqboard: configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(BOOT_ERROR_EXIT_STATUS) from None


def configure(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="kiqboard_session",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, not Strict: the OAuth callback is a cross-site top-level GET that must carry the session.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.force_https,
        PREFERRED_URL_SCHEME="https" if settings.force_https else "http",
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
    )
    app.json.sort_keys = False
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies,
            x_host=settings.trusted_proxies, x_port=settings.trusted_proxies,
        )
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.setLevel(settings.log_level)


def build_pools(settings: Settings) -> dict[str, Pool]:
    if settings.demo:
        import demo

        return {ps.name: Pool(ps, demo.demo_client(ps)) for ps in settings.pools}
    # Sized from the web process's threads (GUNICORN_THREADS): see pools.py and the README.
    threads = settings.web_threads
    return {
        ps.name: Pool(ps, connect(ps, max_connections=max_connections_for(threads)),
                      bulkhead=Bulkhead(limit=max(1, threads // 2)))
        for ps in settings.pools
    }


def register_extensions(app: Flask, settings: Settings, pools: dict[str, Pool]) -> None:
    auth.init_app(app, settings, pools)


def register_blueprints(app: Flask, settings: Settings, pools: dict[str, Pool]) -> None:
    app.register_blueprint(create_login_blueprint(settings))
    app.register_blueprint(create_overview_blueprint(pools))
    for pool in pools.values():
        app.register_blueprint(create_dashboard_blueprint(pool))
    app.add_url_rule("/healthz", "healthz", healthz)

    @app.context_processor
    def layout_context() -> dict:
        return {
            "settings": settings,
            "demo_mode": settings.demo,
            "server_utc_time": datetime.now(timezone.utc).strftime("%H:%M:%S UTC"),
        }


def healthz():
    return jsonify(status="ok")


def register_security_headers(app: Flask) -> None:
    @app.before_request
    def make_csp_nonce() -> None:
        g.csp_nonce = secrets.token_urlsafe(16)

    app.jinja_env.globals["csp_nonce"] = lambda: g.get("csp_nonce", "")

    @app.after_request
    def security_headers(response):
        nonce = g.get("csp_nonce", "")
        response.headers.setdefault(
            "Content-Security-Policy",
            f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
            "img-src 'self' data: https://avatars.githubusercontent.com; connect-src 'self'; font-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response


def register_pool_fault_handling(app: Flask, pools: dict[str, Pool]) -> None:
    """A pool that fails answers 503 naming itself and the reason; after repeated failures its circuit opens.

    Runs for a pool's pages after the blueprint's own guard (sign-in, who may see the pool), so a refused visitor
    learns nothing about the pool's health. Then: the pool's bulkhead (at most half of the process's threads wait
    on one pool), its circuit breaker (fail fast while open, one probe after the pause), and after the view the
    outcome is fed back (success closes the circuit; connection errors and timeouts count towards opening it).
    """
    by_blueprint = {f"pool_{pool.name}": pool for pool in pools.values()}

    def current_pool() -> Pool | None:
        return by_blueprint.get(request.blueprint or "")

    def enter_pool() -> None:
        pool = current_pool()
        if pool is None:
            return
        token = pool.bulkhead.acquire(shed=pool.breaker.failing)
        if token is None:
            raise PoolBusy(
                f"is not answering fast enough ({pool.bulkhead.limit} requests of this web process are already "
                "waiting on it)"
            )
        g.kiqboard_pool_slot = (pool, token)
        pool.breaker.check(pool.name)
        g.kiqboard_pool_entered = pool

    # Blueprint-scoped and appended: runs after the pool blueprint's own before_request guard.
    for blueprint_name in by_blueprint:
        app.before_request_funcs.setdefault(blueprint_name, []).append(enter_pool)

    @app.after_request
    def close_circuit_on_success(response):
        pool = g.pop("kiqboard_pool_entered", None)
        if pool is not None and response.status_code < 500:
            pool.breaker.record_success()
        return response

    @app.teardown_request
    def leave_pool(_error=None) -> None:
        slot = g.pop("kiqboard_pool_slot", None)
        if slot is not None:
            slot[0].bulkhead.release(slot[1])

    @app.errorhandler(redis.RedisError)
    def pool_unavailable(error: redis.RedisError):
        pool = current_pool()
        name = pool.name if pool else "a pool"
        if pool is not None:
            g.pop("kiqboard_pool_entered", None)
            pool.breaker.record_failure(error)  # ignores its own refusals and Redis' error replies
        reason = describe_redis_error(error)
        log.warning("pool=%s error=%r path=%s", name, reason, request.path)
        headers = {"Retry-After": "5"}
        if wants_json():
            return jsonify(error="pool unavailable", pool=name, reason=reason, status=503), 503, headers
        return render_template("pool_unavailable.html", pool_name=name, reason=reason), 503, headers


def wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        request.path.startswith("/api/")
        or request.path.endswith(("/stats", "/stats/queues"))
        or best == "application/json"
        or "Authorization" in request.headers
    )


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if wants_json():
            return jsonify(error=error.name, message=error.description, status=error.code), error.code
        return render_template("error.html", error=error), error.code

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if wants_json():
            return jsonify(error="Internal Server Error", status=500), 500
        return render_template("error.html", error=None), 500


def start_demo(app: Flask, pools: dict[str, Pool]) -> None:
    import demo

    for pool in pools.values():
        demo.seed(pool.redis, pool.settings)
    simulator = demo.DemoSimulator([pool.redis for pool in pools.values()])
    app.extensions["kiqboard"]["demo_simulator"] = simulator

    @app.before_request
    def keep_demo_moving() -> None:
        # Started on the first request, not at import: `flask run`'s reloader imports the app twice.
        simulator.start()
