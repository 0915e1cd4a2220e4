"""Environment → typed, frozen settings.

Every mistake raises ConfigError with one line that names the variable and the fix; the entry points
(create_app under `flask run`, gunicorn, or plain `import app; app.create_app()`) turn it into that one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

POOL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
# Names that would shadow the app's own top-level routes.
RESERVED_POOL_NAMES = frozenset(
    {"login", "logout", "auth", "healthz", "api", "metrics", "search", "static", "favicon.ico"}
)
TEAM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
ORG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
REDIS_VAR_RE = re.compile(r"REDIS_([0-9]+)(?:_(URL|NAME|NAMESPACE|TEAMS|OPERATORS|DEAD_MAX_JOBS|DEAD_TIMEOUT))?")
REDIS_SCHEMES = ("redis", "rediss", "unix")

DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_SOCKET_TIMEOUT = 2.0
DEFAULT_DEAD_MAX_JOBS = 10_000
DEFAULT_DEAD_TIMEOUT = 180 * 24 * 3600


class ConfigError(Exception):
    """A configuration mistake, worded as one line: the variable, what is wrong, and the fix."""


@dataclass(frozen=True)
class PoolSettings:
    number: int
    name: str
    url: str
    namespace: str | None = None
    teams: tuple[str, ...] = ()  # "org/team-slug": who may see the pool (empty: everyone let in)
    operators: tuple[str, ...] = ()  # "org/team-slug": who may change it (empty: everyone who sees it)
    dead_max_jobs: int = DEFAULT_DEAD_MAX_JOBS
    dead_timeout: int = DEFAULT_DEAD_TIMEOUT
    # What redis-py gets: URL options pass through; timeouts are explicit unless the URL sets them.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and error pages."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.hostname or ""
        if parts.username:
            netloc = f"{parts.username}:***@{netloc}"
        else:
            netloc = f":***@{netloc}"
        if parts.port:
            netloc += f":{parts.port}"
        return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class GitHubSettings:
    client_id: str
    client_secret: str
    orgs: tuple[str, ...]
    teams: tuple[str, ...] = ()
    url: str = "https://github.com"
    api_url: str = "https://api.github.com"


@dataclass(frozen=True)
class Settings:
    pools: tuple[PoolSettings, ...]
    github: GitHubSettings | None
    secret_key: str
    demo: bool = False
    membership_ttl: int = 300
    # How many proxies in front of the app set X-Forwarded-* (Heroku's router: 1). 0 trusts none.
    trusted_proxies: int = 0
    # Force https cookies and redirect URIs regardless of the request's scheme.
    force_https: bool = False
    log_level: str = "INFO"
    # The web process's shape (gunicorn.conf.py); connection pools and bulkheads are sized from web_threads.
    web_concurrency: int = 2
    web_threads: int = 8

    def pool(self, name: str) -> PoolSettings | None:
        return next((p for p in self.pools if p.name == name), None)


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _positive_int(environ: Mapping[str, str], var: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a whole number; set it to e.g. {default}") from None
    if value < minimum:
        raise ConfigError(f"{var}={value} is too small; set it to {minimum} or more (default {default})")
    return value


def _positive_float(environ: Mapping[str, str], var: str, default: float) -> float:
    raw = environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a number of seconds; set it to e.g. {default}") from None
    if not value > 0 or value > 300:
        raise ConfigError(f"{var}={raw} must be between 0 and 300 seconds (default {default})")
    return value


def _teams(environ: Mapping[str, str], var: str) -> tuple[str, ...]:
    teams = _split_list(environ.get(var, ""))
    for team in teams:
        if not TEAM_RE.fullmatch(team):
            raise ConfigError(
                f"{var}: {team!r} is not a GitHub team; write teams as org/team-slug, comma-separated"
            )
    return teams


def _check_redis_url(var: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"{var}: the URL must start with redis://, rediss:// or unix:// (got {parts.scheme or 'no scheme'}://…)"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{var}: the URL has no host; write it as redis://[:password@]host[:port][/db]")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(f"{var}: a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{var}: the URL's port is not a number between 1 and 65535") from None
    db = parts.path.lstrip("/") if parts.scheme != "unix" else dict(parse_qsl(parts.query)).get("db", "")
    if db and not db.isdigit():
        raise ConfigError(f"{var}: the database in the URL must be a number, e.g. redis://host:6379/0")


def _pools(environ: Mapping[str, str], connect_timeout: float, socket_timeout: float) -> tuple[PoolSettings, ...]:
    urls: dict[int, tuple[str, str]] = {}
    options: dict[int, dict[str, str]] = {}
    for var, value in environ.items():
        match = REDIS_VAR_RE.fullmatch(var)
        if not match:
            continue
        number, suffix = int(match.group(1)), match.group(2)
        if number < 1:
            raise ConfigError(f"{var}: pool numbers start at 1; rename it to REDIS_1…")
        if suffix in (None, "URL"):
            if number in urls:
                other = urls[number][0]
                raise ConfigError(
                    f"{var} and {other} are both set; keep one (REDIS_{number}_URL is what Heroku's addons:attach sets)"
                )
            urls[number] = (var, value.strip())
        else:
            options.setdefault(number, {})[suffix] = value
    for number, opts in options.items():
        if number not in urls:
            first = sorted(opts)[0]
            raise ConfigError(f"REDIS_{number}_{first} is set but REDIS_{number} is not; set REDIS_{number} to the pool's Redis URL or remove it")

    pools: list[PoolSettings] = []
    seen: dict[str, str] = {}
    for number in sorted(urls):
        var, url = urls[number]
        if not url:
            raise ConfigError(f"{var} is empty; set it to the pool's Redis URL, e.g. redis://localhost:6379/0")
        _check_redis_url(var, url)
        opts = options.get(number, {})
        name_var = f"REDIS_{number}_NAME"
        name = opts.get("NAME", "").strip() or ("sidekiq" if number == 1 else f"sidekiq{number}")
        if not POOL_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{name_var}={name!r}: use 1-40 lowercase letters, digits, '-' or '_', starting with a letter or digit"
            )
        if name in RESERVED_POOL_NAMES:
            raise ConfigError(f"{name_var}={name!r} is a reserved path of kiqboard; choose another name")
        if name in seen:
            raise ConfigError(f"{name_var}: the pool name {name!r} is already used by {seen[name]}; names must be unique")
        seen[name] = var
        namespace = opts.get("NAMESPACE", "").strip() or None
        if namespace is not None and any(c.isspace() for c in namespace):
            raise ConfigError(f"REDIS_{number}_NAMESPACE={namespace!r} must not contain spaces")
        pools.append(
            PoolSettings(
                number=number,
                name=name,
                url=url,
                namespace=namespace,
                teams=_teams(environ, f"REDIS_{number}_TEAMS"),
                operators=_teams(environ, f"REDIS_{number}_OPERATORS"),
                dead_max_jobs=_positive_int(environ, f"REDIS_{number}_DEAD_MAX_JOBS", DEFAULT_DEAD_MAX_JOBS),
                dead_timeout=_positive_int(environ, f"REDIS_{number}_DEAD_TIMEOUT", DEFAULT_DEAD_TIMEOUT),
                connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
            )
        )
    return tuple(pools)


def _url(environ: Mapping[str, str], var: str, default: str) -> str:
    value = environ.get(var, "").strip() or default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{var}={value!r} must be an http(s) URL, e.g. {default}")
    return value.rstrip("/")


GITHUB_VARS = ("GITHUB_CLIENT_ID", "GITHUB_CLIENT_KEY", "GITHUB_CLIENT_SECRET", "GITHUB_ORG", "GITHUB_TEAMS")


def _github(environ: Mapping[str, str]) -> GitHubSettings | None:
    present = [v for v in GITHUB_VARS if environ.get(v, "").strip()]
    if not present:
        return None
    client_id = environ.get("GITHUB_CLIENT_ID", "").strip()
    client_key = environ.get("GITHUB_CLIENT_KEY", "").strip()
    if client_id and client_key and client_id != client_key:
        raise ConfigError("GITHUB_CLIENT_ID and GITHUB_CLIENT_KEY are both set and differ; keep GITHUB_CLIENT_ID")
    client_id = client_id or client_key
    missing = [
        var
        for var, value in (
            ("GITHUB_CLIENT_ID", client_id),
            ("GITHUB_CLIENT_SECRET", environ.get("GITHUB_CLIENT_SECRET", "").strip()),
            ("GITHUB_ORG", environ.get("GITHUB_ORG", "").strip()),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"{missing[0]} is not set; GitHub sign-in needs GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET and GITHUB_ORG together"
        )
    orgs = _split_list(environ["GITHUB_ORG"])
    for org in orgs:
        if not ORG_RE.fullmatch(org):
            raise ConfigError(f"GITHUB_ORG: {org!r} is not a GitHub organization login; list org logins, comma-separated")
    teams = _teams(environ, "GITHUB_TEAMS")
    for team in teams:
        if team.split("/", 1)[0].lower() not in {o.lower() for o in orgs}:
            raise ConfigError(f"GITHUB_TEAMS: {team!r} is not in an organization of GITHUB_ORG ({', '.join(orgs)})")
    return GitHubSettings(
        client_id=client_id,
        client_secret=environ["GITHUB_CLIENT_SECRET"].strip(),
        orgs=orgs,
        teams=teams,
        url=_url(environ, "GITHUB_URL", "https://github.com"),
        api_url=_url(environ, "GITHUB_API_URL", "https://api.github.com"),
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment into Settings, or raise ConfigError with one line naming the variable."""
    environ = os.environ if environ is None else environ
    connect_timeout = _positive_float(environ, "REDIS_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
    socket_timeout = _positive_float(environ, "REDIS_SOCKET_TIMEOUT", DEFAULT_SOCKET_TIMEOUT)
    pools = _pools(environ, connect_timeout, socket_timeout)
    github = _github(environ)
    secret_key = environ.get("SECRET_KEY", "")
    membership_ttl = _positive_int(environ, "MEMBERSHIP_TTL", 300, minimum=10)
    trusted_proxies = _positive_int(environ, "TRUSTED_PROXIES", 1 if "DYNO" in environ else 0, minimum=0)
    force_https = environ.get("FORCE_HTTPS", "").strip().lower() in ("1", "true", "yes")
    web_concurrency = _positive_int(environ, "WEB_CONCURRENCY", 2)
    web_threads = _positive_int(environ, "GUNICORN_THREADS", 8)
    log_level = environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL={log_level!r} must be one of DEBUG, INFO, WARNING, ERROR")

    demo = not pools and github is None
    if not demo:
        if not pools:
            raise ConfigError("REDIS_1 is not set; point it at a Sidekiq app's Redis, e.g. REDIS_1=redis://localhost:6379/0")
        if github is None:
            raise ConfigError(
                "GITHUB_CLIENT_ID is not set; with REDIS_<n> configured, sign-in needs GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET and GITHUB_ORG"
            )
        if not secret_key:
            raise ConfigError('SECRET_KEY is not set; generate one with: python -c "import secrets; print(secrets.token_hex(32))"')
        if len(secret_key) < 16:
            raise ConfigError("SECRET_KEY is too short; use at least 16 random characters (e.g. secrets.token_hex(32))")
        for pool in pools:
            for var, teams in ((f"REDIS_{pool.number}_TEAMS", pool.teams), (f"REDIS_{pool.number}_OPERATORS", pool.operators)):
                for team in teams:
                    if team.split("/", 1)[0].lower() not in {o.lower() for o in github.orgs}:
                        raise ConfigError(f"{var}: {team!r} is not in an organization of GITHUB_ORG ({', '.join(github.orgs)})")
    elif not secret_key:
        # Demo mode: a fixed key is fine — the data is fake and nothing outside this process trusts it.
        secret_key = "kiqboard-demo-mode-not-secret"
    return Settings(
        pools=pools,
        github=github,
        secret_key=secret_key,
        demo=demo,
        membership_ttl=membership_ttl,
        trusted_proxies=trusted_proxies,
        force_https=force_https,
        log_level=log_level,
        web_concurrency=web_concurrency,
        web_threads=web_threads,
    )
