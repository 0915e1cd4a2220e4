# Sidekiq 6.4.1's own Web UI (Debian's ruby-sidekiq), for bench/compare.py:
#   REDIS_URL=redis://127.0.0.1:PORT/0 [REDIS_POOL_SIZE=8] puma -b tcp://127.0.0.1:PORT -t 8:8 -w 0 bench/sidekiq_web/config.ru
require "securerandom"
require "sidekiq"
require "sidekiq/web"

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)
Sidekiq.configure_client do |config|
  # One connection per puma thread, as kiqboard sizes its pool from GUNICORN_THREADS.
  config.redis = {url: ENV.fetch("REDIS_URL"), size: Integer(ENV.fetch("REDIS_POOL_SIZE", "8"))}
end

use Rack::Session::Cookie, secret: ENV.fetch("SESSION_SECRET") { SecureRandom.hex(64) }, same_site: true, max_age: 86400
run Sidekiq::Web
