"""One pool's dashboard: every Sidekiq Web page and action, at Sidekiq Web's own paths, under /<pool>.

`create_dashboard_blueprint(pool)` is instantiated once per pool; nothing here is process-global except a
tiny per-blueprint cache of the Redis version shown in the footer.

Rules kept from Sidekiq Web (see ../shared/reference/sidekiq-web.md §2, §4, §5):
- paths, methods, form fields (`key[]` + `retry`/`delete`/`kill`/`add_to_queue`, `identity` + `quiet`/`stop`,
  `key_val`), JSON shapes of /stats and /stats/queues;
- redirects: actions answer 302 to the list, keeping the referer's query (`redirect_with_query`); a job that is
  gone redirects to its list; `days` outside 1..180 is a 401; a bad queue name is a 404.
Deliberately stricter than Sidekiq: `count` is capped, an "all" action carrying a filter is refused, POST
/queues/<name> with `pause`/`unpause` (Sidekiq Pro) is refused instead of clearing the queue, every action is
logged with who did it.
"""

from __future__ import annotations

import json
import logging
import queue as queue_module
import re
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import redis
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from markupsafe import Markup, escape

import auth
from sidekiq_reader import Page

actions_log = logging.getLogger("kiqboard.actions")
log = logging.getLogger("kiqboard.dashboard")

QUEUE_NAME_RE = re.compile(r"\A[a-z_:.\-0-9]+\Z", re.IGNORECASE)
LEADING_INT_RE = re.compile(r"\s*([+-]?\d{1,12})")
MAX_COUNT = 1000
MAX_PAGE = 1_000_000_000
PROCESSES_PER_PAGE = 100  # the Busy page's process table; its summary cards still count every process
DEFAULT_DAYS = 30
ARGS_TRUNCATE = 100  # longer args get a "Show All" toggle
ARGS_LIST_MAX = 2000  # Sidekiq truncates list-page args to 2000 characters
ERROR_TRUNCATE = 200
REDIS_INFO_TTL = 60.0

# The three sorted sets, as Sidekiq Web names them.
SETS = {
    "retries": {
        "set": "retry",
        "title": "Retries",
        "when": "Next Retry",
        "empty": "No retries were found",
        "actions": [("retry", "Retry Now"), ("delete", "Delete"), ("kill", "Kill")],
        "all": [("retry", "Retry All"), ("delete", "Delete All"), ("kill", "Kill All")],
    },
    "scheduled": {
        "set": "schedule",
        "title": "Scheduled Jobs",
        "when": "When",
        "empty": "No scheduled jobs were found",
        "actions": [("add_to_queue", "Add to queue"), ("delete", "Delete")],
        "all": [("add_to_queue", "Add All to Queue"), ("delete", "Delete All")],
    },
    "morgue": {
        "set": "dead",
        "title": "Dead Jobs",
        "when": "Last Retry",
        "empty": "No dead jobs were found",
        "actions": [("retry", "Retry Now"), ("delete", "Delete")],
        "all": [("retry", "Retry All"), ("delete", "Delete All")],
    },
}
# Which endpoint each page belongs to in the nav (the pool switcher keeps you on the same tab).
NAV = [
    ("index", "Dashboard", None),
    ("busy", "Busy", "busy"),
    ("queues", "Queues", "enqueued"),
    ("retries", "Retries", "retries"),
    ("scheduled", "Scheduled", "scheduled"),
    ("morgue", "Dead", "dead"),
]
SECTION_OF = {
    "index": "index", "busy": "busy", "queues": "queues", "queue": "queues",
    "retries": "retries", "retry_job": "retries", "scheduled": "scheduled", "scheduled_job": "scheduled",
    "morgue": "morgue", "dead_job": "morgue",
}
LIVE_POLL_PAGES = {"busy", "queues", "queue", "retries", "scheduled", "morgue"}
PAST_TENSE = {
    "retry": "Retried", "delete": "Deleted", "kill": "Killed", "add_to_queue": "Enqueued",
}


# ---------------------------------------------------------------------------------------------- parsing


def ruby_to_i(value: str | None, default: int) -> int:
    """Ruby's String#to_i, which Sidekiq Web uses on query params: leading integer, else 0; None → default."""
    if value is None:
        return default
    match = LEADING_INT_RE.match(value)
    if not match:
        return 0
    return int(match.group(1))


def page_param() -> int:
    page = ruby_to_i(request.args.get("page"), 1)
    return min(max(page, 1), MAX_PAGE)


def count_param(default: int) -> int:
    count = ruby_to_i(request.args.get("count"), default)
    if count < 1:
        count = default
    return min(count, MAX_COUNT)


def substr_param() -> str | None:
    substr = request.args.get("substr", "")
    substr = substr.strip()
    return substr[:200] or None


def is_queue_name(name) -> bool:
    """A name Sidekiq Web would route to (its queue pages 404 for any other)."""
    return bool(QUEUE_NAME_RE.match(str(name or "")))


def valid_queue_name(name: str) -> str:
    if not is_queue_name(name):
        abort(404)
    return name


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


# -------------------------------------------------------------------------------------------- formatting


def as_utc(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), timezone.utc)
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def relative_words(seconds: float) -> str:
    """"3 minutes" style, as timeago/Sidekiq's relative_time show it."""
    seconds = abs(seconds)
    if seconds < 45:
        return "less than a minute" if seconds >= 1 else "just now"
    minutes = seconds / 60
    if minutes < 1.5:
        return "a minute"
    if minutes < 45:
        return f"{round(minutes)} minutes"
    hours = minutes / 60
    if hours < 1.5:
        return "an hour"
    if hours < 24:
        return f"{round(hours)} hours"
    days = hours / 24
    if days < 1.5:
        return "a day"
    if days < 30:
        return f"{round(days)} days"
    months = days / 30.4375
    if months < 1.5:
        return "a month"
    if months < 12:
        return f"{round(months)} months"
    years = days / 365.25
    if years < 1.5:
        return "a year"
    return f"{round(years)} years"


def relative_time(value) -> str:
    when = as_utc(value)
    if when is None:
        return ""
    delta = (when - datetime.now(timezone.utc)).total_seconds()
    words = relative_words(delta)
    if words == "just now":
        return words
    return f"in {words}" if delta > 0 else f"{words} ago"


def utc_text(value) -> str:
    when = as_utc(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def time_tag(value) -> Markup:
    """<time> with the relative text and the absolute UTC time on hover (all parts escaped)."""
    when = as_utc(value)
    if when is None:
        return Markup("")
    # f-string + escape(): Markup.format goes through string.Formatter, ~3x slower (Busy renders ~150 of these).
    return Markup(f'<time class="rel" datetime="{escape(when.isoformat())}" title="{escape(utc_text(when))}">'
                  f'{escape(relative_time(when))}</time>')


def number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def latency_text(seconds: float) -> str:
    seconds = float(seconds or 0)
    text = f"{seconds:,.2f} s" if seconds < 10 else f"{seconds:,.0f} s"
    if seconds >= 60:
        text += f" ({relative_words(seconds)})"
    return text


def rss_text(kb) -> str:
    if kb is None:
        return "—"
    kb = int(kb)
    if kb >= 1024 * 1024:
        return f"{kb / 1024 / 1024:,.1f} GB"
    if kb >= 1024:
        return f"{kb / 1024:,.1f} MB"
    return f"{kb:,} KB"


def arg_text(arg) -> str:
    if isinstance(arg, str):
        return json.dumps(arg, ensure_ascii=False)
    try:
        return json.dumps(arg, ensure_ascii=False, sort_keys=False, default=str)
    except (TypeError, ValueError):
        return repr(arg)


def args_text(args) -> str:
    if not isinstance(args, (list, tuple)):
        return "Invalid job payload, args must be an Array, not " + type(args).__name__
    return ", ".join(arg_text(a) for a in args)


def args_cell(args) -> Markup:
    """A job's arguments for a table cell; past ARGS_TRUNCATE characters the rest is behind "Show All"."""
    text = args_text(args)
    if len(text) <= ARGS_TRUNCATE:
        return Markup(f'<span class="args">{escape(text)}</span>')
    return Markup(
        f'<span class="args args-short">{escape(truncate(text, ARGS_TRUNCATE))}</span>\n'
        f'<span class="args args-full" hidden>{escape(truncate(text, ARGS_LIST_MAX))}</span>\n'
        '<button type="button" class="btn btn-link btn-small toggle-args" aria-expanded="false">Show All</button>'
    )


def pretty_json(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return repr(value)


def truncate(text: str | None, length: int) -> str:
    if text is None:
        return ""
    return text if len(text) <= length else text[: length - 1] + "…"


# -------------------------------------------------------------------------------------------- blueprint


def create_dashboard_blueprint(pool) -> Blueprint:
    bp = Blueprint(f"pool_{pool.name}", __name__, url_prefix=f"/{pool.name}")
    info_cache: dict = {"at": 0.0, "version": None}

    def endpoint(name: str) -> str:
        return f"{bp.name}.{name}"

    def purl(view: str, /, **values) -> str:
        return url_for(endpoint(view), **values)

    def can_operate() -> bool:
        return auth.may_operate(pool.settings)

    def visible_pools() -> list:
        return auth.visible_pools(current_app.extensions["kiqboard"]["pools"])

    def who() -> str:
        return getattr(current_user, "login", None) or "anonymous"

    # ------------------------------------------------------------------------------------ guards

    @bp.before_request
    def guard():
        return auth.guard_pool(pool.settings)

    # Redis errors are app.py's: a 503 naming the pool, and the pool's circuit breaker.

    # ------------------------------------------------------------------------------------ layout

    def redis_version(fresh=None) -> str | None:
        now = time.monotonic()
        if fresh is not None:
            info_cache.update(at=now, version=fresh)
        elif info_cache["version"] is None or now - info_cache["at"] > REDIS_INFO_TTL:
            try:
                info_cache.update(at=now, version=pool.reader.redis_info().redis_version)
            except redis.exceptions.RedisError:
                return info_cache["version"]
        return info_cache["version"]

    def layout(stats=None, section: str | None = None, redis_info=None) -> dict:
        if section is None:
            section = SECTION_OF.get((request.endpoint or "").rsplit(".", 1)[-1], "index")
        operate = can_operate()
        return {
            "pool": pool,
            "stats": stats,
            "section": section,
            "nav": NAV,
            "purl": purl,
            "with_page": lambda params, param, number: {**params, param: number},
            "can_operate": operate,
            "pools_visible": visible_pools(),
            "redis_version": redis_version(redis_info.redis_version if redis_info else None),
            "live_poll": (request.endpoint or "").rsplit(".", 1)[-1] in LIVE_POLL_PAGES,
        }

    def render(template: str, stats=None, redis_info=None, **context):
        return render_template(template, **layout(stats, redis_info=redis_info), **context)

    # ------------------------------------------------------------------------------------ helpers

    def redirect_with_query(url: str):
        """Sidekiq's redirect_with_query: back to `url` with the referer's query string (same origin only)."""
        referer = request.referrer
        if referer:
            parts = urlsplit(referer)
            same_origin = not parts.netloc or parts.netloc == request.host
            if same_origin and parts.query:
                return redirect(f"{url}?{parts.query}", 302)
        return redirect(url, 302)

    def log_action(action: str, target: str, count: int, **extra) -> None:
        record = {"who": who(), "pool": pool.name, "action": action, "target": target, "count": count, **extra}
        actions_log.info(json.dumps(record, sort_keys=False), extra={"kiqboard_action": record})

    def form_keys() -> list[str]:
        keys = request.form.getlist("key[]") or request.form.getlist("key")
        return [k for k in keys if k][:MAX_COUNT * 10]

    def chosen_action(allowed: list[str]) -> str | None:
        for name in allowed:
            if name in request.form:
                return name
        return None

    def run_set_action(set_name: str, action: str, keys: list[str]) -> int:
        actions = pool.actions
        if action == "retry":
            return actions.retry(set_name, keys)
        if action == "delete":
            return actions.delete(set_name, keys)
        if action == "kill":
            return actions.kill(keys)
        if action == "add_to_queue":
            return actions.add_to_queue(keys)
        raise ValueError(action)

    # ------------------------------------------------------------------------------------ dashboard

    @bp.get("/")
    def index():
        days = ruby_to_i(request.args.get("days"), DEFAULT_DAYS)
        if days < 1 or days > 180:
            abort(401)
        data = pool.reader.dashboard(days=days)
        history = data.history
        history_points = {
            "dates": [d.isoformat() for d in reversed(history.dates)],
            "processed": list(reversed(history.processed)),
            "failed": list(reversed(history.failed)),
        }
        return render(
            "dashboard/index.html", stats=data.stats, redis_info=data.redis, data=data, days=days,
            history_points=history_points,
            history_rows=list(zip(history.dates, history.processed, history.failed)),
        )

    @bp.get("/dashboard/stats")
    def dashboard_stats():
        return redirect(purl("stats"), 302)

    @bp.get("/stats")
    def stats():
        return jsonify(pool.reader.stats_json())

    @bp.get("/stats/queues")
    def stats_queues():
        return current_app.response_class(
            json.dumps(pool.reader.queue_sizes()) + "\n", mimetype="application/json"
        )

    # ------------------------------------------------------------------------------------ busy

    @bp.get("/busy")
    def busy():
        data = pool.reader.busy(page=page_param(), count=count_param(100))
        processes = data.processes
        threads = sum(p.concurrency or 0 for p in processes)
        busy_count = sum(p.busy or 0 for p in processes)
        per_page = PROCESSES_PER_PAGE
        total_pages = max(1, -(-len(processes) // per_page))
        process_number = min(max(ruby_to_i(request.args.get("processes_page"), 1), 1), total_pages)
        start = (process_number - 1) * per_page
        process_page = Page(items=processes[start:start + per_page], page=process_number, count=per_page,
                            total=len(processes))
        summary = {
            "processes": len(processes),
            "threads": threads,
            "busy": busy_count,
            "utilization": round(busy_count * 100.0 / threads) if threads else 0,
            "rss": sum(p.rss_kb or 0 for p in processes),
        }
        return render("dashboard/busy.html", stats=data.stats, data=data, summary=summary, process_page=process_page)

    @bp.post("/busy")
    def busy_post():
        identity = request.form.get("identity")
        signals = [s for s in ("quiet", "stop") if s in request.form]
        for signal in signals:
            if identity:
                done = pool.actions.signal(identity, signal)
                log_action(signal, identity, int(bool(done)))
            else:
                done = pool.actions.signal_all(signal)
                log_action(f"{signal}_all", "processes", int(done))
        return redirect(purl("busy"), 302)

    # ------------------------------------------------------------------------------------ queues

    @bp.get("/queues")
    def queues():
        data = pool.reader.queues()
        return render("dashboard/queues.html", stats=data.stats, data=data)

    @bp.get("/queues/<name>")
    def queue(name: str):
        valid_queue_name(name)
        ascending = request.args.get("direction") == "asc"
        data = pool.reader.queue(name, page=page_param(), count=count_param(25), ascending=ascending)
        return render("dashboard/queue.html", stats=data.stats, data=data, name=name, ascending=ascending)

    @bp.post("/queues/<name>")
    def queue_post(name: str):
        valid_queue_name(name)
        if "pause" in request.form or "unpause" in request.form:
            # Sidekiq OSS would clear the queue here; pausing is a Sidekiq Pro feature we cannot drive.
            abort(400, description="Pausing queues needs Sidekiq Pro; the queue was left as it is.")
        deleted = pool.actions.delete_queue(name)
        log_action("delete_queue", name, int(bool(deleted)))
        return redirect(purl("queues"), 302)

    @bp.post("/queues/<name>/delete")
    def queue_job_delete(name: str):
        valid_queue_name(name)
        key_val = request.form.get("key_val")
        count = 0
        if key_val:
            count = pool.actions.delete_queued_job(name, key_val.encode("utf-8"))
        log_action("delete_job", name, int(count))
        return redirect_with_query(purl("queue", name=name))

    # ------------------------------------------------------------------------------------ sets

    def set_list(kind: str):
        conf = SETS[kind]
        substr = substr_param()
        data = pool.reader.sorted_set(conf["set"], page=page_param(), count=count_param(25), substr=substr)
        return render(f"dashboard/{kind}.html", stats=data.stats, data=data, conf=conf, kind=kind, substr=substr)

    def set_bulk(kind: str):
        conf = SETS[kind]
        keys = form_keys()
        if not keys:
            return redirect(request.path, 302)
        action = chosen_action([a for a, _ in conf["actions"]])
        if action is not None:
            count = run_set_action(conf["set"], action, keys)
            log_action(action, conf["set"], int(count), keys=len(keys))
        return redirect_with_query(purl(kind))

    def set_entry(kind: str, key: str):
        conf = SETS[kind]
        data = pool.reader.entry(conf["set"], key)
        if data.entry is None:
            flash("That job is gone: it was retried, deleted or moved, or it ran already.", "info")
            return redirect(purl(kind), 302)
        return render("dashboard/job.html", stats=data.stats, entry=data.entry, job=data.entry.job,
                      conf=conf, kind=kind, key=key)

    def set_entry_post(kind: str, key: str):
        conf = SETS[kind]
        action = chosen_action([a for a, _ in conf["actions"]])
        if action is not None:
            count = run_set_action(conf["set"], action, [key])
            log_action(action, f"{conf['set']}:{key}", int(count))
        return redirect_with_query(purl(kind))

    def filtered_request() -> bool:
        if request.values.get("substr", "").strip():
            return True
        referer = request.referrer
        if referer:
            from urllib.parse import parse_qs

            if any(v.strip() for v in parse_qs(urlsplit(referer).query).get("substr", [])):
                return True
        return False

    def set_all(kind: str, action: str):
        conf = SETS[kind]
        if action not in {a for a, _ in conf["all"]}:
            abort(404)
        if filtered_request():
            # Never let "Delete All" on a filtered view delete the whole set.
            abort(400, description="An “all” action cannot run on a filtered view: it would act on the "
                                   "whole set. Clear the filter first, or select the jobs.")
        set_name = conf["set"]
        actor = who()
        list_url = purl(kind)

        def work(progress=None) -> int:
            actions = pool.actions
            if action == "delete":
                return actions.delete_all(set_name)
            if action == "retry":
                return actions.retry_all(set_name, progress=progress)
            if action == "kill":
                return actions.kill_all(progress=progress)
            return actions.add_all_to_queue(progress=progress)

        def message(count: int) -> str:
            verb = PAST_TENSE[action]
            text = f"{verb} {plural(count, 'job')}"
            return text + (" to their queues" if action == "add_to_queue" else "")

        if "application/x-ndjson" in request.headers.get("Accept", ""):
            return stream_all(work, message, f"{action}_all", set_name, actor, list_url)
        count = int(work())
        log_action(f"{action}_all", set_name, count)
        flash(message(count), "success")
        return redirect(list_url, 302)

    def stream_all(work, message, action_name: str, set_name: str, actor: str, list_url: str):
        """NDJSON progress lines from the action's progress callback, then the count; no server-side state."""
        events: queue_module.Queue = queue_module.Queue()

        def progress(done: int, total: int) -> None:
            events.put({"event": "progress", "done": int(done), "total": int(total)})

        def runner() -> None:
            try:
                count = int(work(progress))
            except Exception as error:  # reported to the page, logged here
                log.exception("pool %s: %s failed", pool.name, action_name)
                events.put({"event": "error", "message": f"{type(error).__name__}: the action failed"})
                return
            record = {"who": actor, "pool": pool.name, "action": action_name, "target": set_name, "count": count}
            actions_log.info(json.dumps(record), extra={"kiqboard_action": record})
            events.put({"event": "done", "count": count, "message": message(count), "location": list_url})

        thread = threading.Thread(target=runner, name=f"kiqboard-{action_name}", daemon=True)
        thread.start()

        def lines():
            yield json.dumps({"event": "start", "action": action_name}) + "\n"
            while True:
                try:
                    event = events.get(timeout=10)
                except queue_module.Empty:
                    yield json.dumps({"event": "heartbeat"}) + "\n"
                    continue
                yield json.dumps(event) + "\n"
                if event["event"] in ("done", "error"):
                    return

        response = Response(lines(), mimetype="application/x-ndjson")
        response.headers["X-Accel-Buffering"] = "no"
        return response

    def register_set(kind: str, job_endpoint: str) -> None:
        bp.add_url_rule(f"/{kind}", kind, lambda: set_list(kind), methods=["GET"])
        bp.add_url_rule(f"/{kind}", f"{kind}_bulk", lambda: set_bulk(kind), methods=["POST"])
        bp.add_url_rule(f"/{kind}/<key>", job_endpoint, lambda key: set_entry(kind, key), methods=["GET"])
        bp.add_url_rule(f"/{kind}/<key>", f"{job_endpoint}_post", lambda key: set_entry_post(kind, key),
                        methods=["POST"])
        bp.add_url_rule(f"/{kind}/all/<action>", f"{kind}_all", lambda action: set_all(kind, action),
                        methods=["POST"])

    register_set("retries", "retry_job")
    register_set("scheduled", "scheduled_job")
    register_set("morgue", "dead_job")

    # ------------------------------------------------------------------------------------ template helpers

    @bp.app_template_filter("number")
    def _number(value):
        return number(value)

    bp.add_app_template_filter(relative_time, "relative_time")
    bp.add_app_template_filter(utc_text, "utc")
    bp.add_app_template_filter(time_tag, "time_tag")
    bp.add_app_template_filter(latency_text, "latency")
    bp.add_app_template_filter(rss_text, "rss")
    bp.add_app_template_filter(args_text, "args_text")
    bp.add_app_template_filter(pretty_json, "pretty_json")
    bp.add_app_template_filter(truncate, "cut")
    bp.add_app_template_filter(arg_text, "arg_text")

    bp.add_app_template_test(is_queue_name, "queue_name")

    # The cells every job table repeats per row, in Python rather than Jinja macros: a page renders up to a few
    # hundred of them, and a macro call costs several times a function call. Everything from Redis is escaped.

    def queue_link(name) -> Markup:
        if not name:
            return Markup("")
        if is_queue_name(name):
            return Markup(f'<a class="queue-name" href="{escape(purl("queue", name=name))}">{escape(name)}</a>')
        return Markup(f'<span class="queue-name">{escape(name)}</span>')

    def job_class(job, filter_kind: str | None = None) -> Markup:
        html = ['<span class="job-class">', "::<wbr>".join(str(escape(part)) for part in job.display_class.split("::")),
                "</span>"]
        for tag in job.tags:
            if filter_kind:
                html.append(f' <a class="badge badge-info jobtag" href="{escape(purl(filter_kind, substr=tag))}" '
                            f'title="Filter by this tag">{escape(tag)}</a>')
            else:
                html.append(f' <span class="badge badge-info jobtag">{escape(tag)}</span>')
        return Markup("".join(html))

    @bp.context_processor
    def dashboard_helpers() -> dict:
        return {
            "ARGS_TRUNCATE": ARGS_TRUNCATE,
            "ARGS_LIST_MAX": ARGS_LIST_MAX,
            "ERROR_TRUNCATE": ERROR_TRUNCATE,
            "SETS": SETS,
            "queue_link": queue_link,
            "job_class": job_class,
            "args_cell": args_cell,
        }

    return bp
