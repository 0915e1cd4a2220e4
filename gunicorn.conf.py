"""gunicorn settings for Heroku and alike (read automatically from the working directory)."""

import os
import sys

# Fail in the master with the one-line message instead of booting workers that cannot start.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from config import ConfigError, load_settings  # noqa: E402

try:
    settings = load_settings()
except ConfigError as error:
    print(f"kiqboard: configuration error: {error}", file=sys.stderr, flush=True)
    sys.exit(3)

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
# Heroku's buildpack sets WEB_CONCURRENCY from the dyno size; threads serve slow Redis calls without a worker each.
workers = settings.web_concurrency
threads = settings.web_threads
# gthread plus puma's fast track for kept-alive connections (gunicorn_worker.py says why and within which limits).
worker_class = "gunicorn_worker.FastTrackThreadWorker"
# The heartbeat file is touched on every loop of every worker: keep it in memory, not on the dyno's disk.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"
timeout = 30
graceful_timeout = 20
keepalive = 5
# Heroku's router is the only thing in front of a dyno; X-Forwarded-Proto is trusted from it.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*" if "DYNO" in os.environ else "127.0.0.1,::1")
accesslog = "-"
errorlog = "-"
max_requests = 5000
max_requests_jitter = 500
