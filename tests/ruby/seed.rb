# frozen_string_literal: true

# Seeds a Sidekiq 6.4 keyspace with Sidekiq's own client, ActiveJob's adapter and Sidekiq's own JobRetry code path.
#
#   REDIS_URL=... [NAMESPACE=ns] ruby tests/ruby/seed.rb [MODE]
#
# MODE "full" (default): a bit of everything (queues, scheduled, retry, dead, ActiveJob, mailer).
# MODE "actions": jobs that succeed when run, parked in retry (3 PlainWorker, 1 ActiveJob, 1 mailer), dead
#                 (3 PlainWorker, 1 ActiveJob) and schedule (3 PlainWorker in an hour, 1 ActiveJob, 1 mailer),
#                 for the retry / add-to-queue interop tests.
# MODE "failing": only pushes FailingWorker/DeadWorker/FailingJob jobs into queue "failing" so that a real `sidekiq`
#                 process (started with -q failing) fails them into the retry and dead sets.
# Prints JSON: {"jids": {category: [jid, ...]}, "action_mailer": bool}

require_relative "worker_app"

STAGING = "kiqboard-staging"
JIDS = Hash.new { |h, k| h[k] = [] }

def note(category, jid)
  JIDS[category] << jid if jid
  jid
end

# Jobs pushed inside the block (to queue STAGING) are taken back off that queue and run through Sidekiq's own
# JobRetry#local with a block that raises, exactly as Sidekiq::Processor does when a job fails. They end up in the
# retry set (scored by Sidekiq's own delay) or, when retries are exhausted, in the dead set.
def through_job_retry(final_queue, times: 1, error: RuntimeError, message: "boom")
  yield
  jobs = Sidekiq.redis { |conn| Array.new(conn.llen("queue:#{STAGING}")) { conn.rpop("queue:#{STAGING}") } }
  Sidekiq.redis { |conn| conn.srem("queues", STAGING) }
  jobs.compact.each do |jobstr|
    times.times do |i|
      msg = Sidekiq.load_json(jobstr)
      worker = Object.const_get(msg["class"]).new
      begin
        Sidekiq::JobRetry.new.local(worker, jobstr, final_queue) { raise error, message }
      rescue Sidekiq::JobRetry::Skip, Sidekiq::JobRetry::Handled
      end
      next if i == times - 1
      # take it back out of the retry set to fail it again (retry_count += 1, retried_at)
      jobstr = Sidekiq.redis do |conn|
        found = conn.zrange("retry", 0, -1).find { |m| Sidekiq.load_json(m)["jid"] == msg["jid"] }
        conn.zrem("retry", found)
        found
      end
    end
  end
end

def seed_full
  # --- enqueued, several queues, with Sidekiq's client ---------------------------------------------------------
  note :default, PlainWorker.perform_async(1, "two", {"three" => 3.5}, nil, true)
  note :default, PlainWorker.perform_async("ünïcödé ✓", [1, [2, [3]]])
  note :default, Sidekiq::Client.push("class" => "PlainWorker", "args" => [{"nested" => {"deep" => [1, 2]}}],
    "tags" => ["custom-tag", "other"], "custom_key" => "extra value")
  note :critical, PlainWorker.set(queue: "critical").perform_async("critical one")
  note :critical, PlainWorker.set(queue: "critical").perform_async("critical two")
  note :low, Sidekiq::Client.push("class" => PlainWorker, "queue" => "low", "args" => [42], "retry" => 3)
  Sidekiq::Client.push_bulk("class" => PlainWorker, "queue" => "bulk", "args" => [[1], [2], [3], [4]]).each do |jid|
    note :bulk, jid
  end
  # a job whose class is not loaded anywhere (string class), and a display_class override
  note :low, Sidekiq::Client.push("class" => "Some::Unknown::Job", "queue" => "low", "args" => ["x"])
  note :low, Sidekiq::Client.push("class" => "PlainWorker", "queue" => "low", "args" => [], "display_class" => "Shown::AsThis")

  # --- ActiveJob through its Sidekiq adapter -------------------------------------------------------------------
  job = GidJob.perform_later(User.new(42), {"note" => "hello", :sym => 1})
  note :default, job.provider_job_id
  job = GidJob.set(queue: "low").perform_later(User.new(7))
  note :low, job.provider_job_id
  if KIQBOARD_ACTION_MAILER
    note :mailers, TestMailer.welcome(User.new(5), "Hello").deliver_later.provider_job_id
    note :mailers, TestMailer.with(account: "acme").welcome(User.new(6), "Hi").deliver_later.provider_job_id
    note :mailers, ModernMailer.welcome(User.new(7), "Modern").deliver_later.provider_job_id
    note :mailers, ModernMailer.with(account: "acme").welcome(User.new(8), "Modern with params").deliver_later.provider_job_id
  end

  # --- scheduled ------------------------------------------------------------------------------------------------
  note :schedule, PlainWorker.perform_in(3600, "in an hour")
  note :schedule, PlainWorker.perform_at(Time.now + 7200, "in two hours")
  note :schedule, PlainWorker.set(queue: "critical").perform_in(1800, "critical later")
  note :schedule, GidJob.set(wait: 3600).perform_later(User.new(9)).provider_job_id
  if KIQBOARD_ACTION_MAILER
    note :schedule, TestMailer.welcome(User.new(10), "Later").deliver_later(wait: 3600).provider_job_id
  end

  # --- retry set via Sidekiq's JobRetry -------------------------------------------------------------------------
  through_job_retry("default", error: ArgumentError, message: "transient failure") do
    note :retry, PlainWorker.set(queue: STAGING).perform_async("will succeed when retried")
    note :retry, FailingWorker.set(queue: STAGING).perform_async("fails", 1)
  end
  through_job_retry("critical", times: 3, message: "failed three times") do
    note :retry, FailingWorker.set(queue: STAGING).perform_async("thrice")
  end
  through_job_retry("default", message: "ActiveJob failure") do
    note :retry, GidJob.set(queue: STAGING).perform_later(User.new(11), {"k" => "v"}).provider_job_id
  end
  if KIQBOARD_ACTION_MAILER
    through_job_retry("mailers", message: "SMTP down") do
      note :retry, TestMailer.welcome(User.new(12), "Retry me").deliver_later(queue: STAGING).provider_job_id
      note :retry, ModernMailer.welcome(User.new(13), "Retry me too").deliver_later(queue: STAGING).provider_job_id
    end
  end

  # --- dead set via Sidekiq's JobRetry (retry: 0 / retries exhausted) ------------------------------------------
  through_job_retry("default", message: "dead on arrival") do
    note :dead, DeadWorker.set(queue: STAGING).perform_async("dead one")
    note :dead, PlainWorker.set(queue: STAGING, retry: 0).perform_async("dead but would succeed")
  end
  through_job_retry("low", times: 2, message: "exhausted") do
    note :dead, FailingWorker.set(queue: STAGING, retry: 1).perform_async("exhausted")
  end
end

def seed_failing
  note :failing_retry, FailingWorker.set(queue: "failing").perform_async("really run", 1)
  note :failing_retry, FailingWorker.set(queue: "failing").perform_async("really run", 2)
  note :failing_retry, FailingJob.set(queue: "failing").perform_later("aj really run").provider_job_id
  note :failing_dead, DeadWorker.set(queue: "failing").perform_async("really dies")
end

def seed_actions
  through_job_retry("default", message: "transient") do
    3.times { |i| note :retry, PlainWorker.set(queue: STAGING).perform_async("retry me", i, {"ü" => [1.5, nil]}) }
    note :retry_aj, GidJob.set(queue: STAGING).perform_later(User.new(21), {"from" => "retry"}).provider_job_id
    if KIQBOARD_ACTION_MAILER
      note :retry_aj, ModernMailer.welcome(User.new(22), "retry mail").deliver_later(queue: STAGING).provider_job_id
    end
  end
  through_job_retry("default", message: "dead") do
    3.times { |i| note :dead, PlainWorker.set(queue: STAGING, retry: 0).perform_async("resurrect me", i) }
    note :dead_aj, GidJob.set(queue: STAGING).perform_later(User.new(31)).provider_job_id
  end
  # ActiveJob's retry: 0 lives in the wrapper's options; move its retry entry to dead with the Ruby API
  Sidekiq::RetrySet.new.each { |e| e.kill if JIDS[:dead_aj].include?(e.jid) }
  3.times { |i| note :schedule, PlainWorker.perform_in(3600, "scheduled", i) }
  note :schedule_aj, GidJob.set(wait: 3600).perform_later(User.new(41)).provider_job_id
  if KIQBOARD_ACTION_MAILER
    note :schedule_aj, ModernMailer.with(account: "acme").welcome(User.new(42), "later").deliver_later(wait: 3600).provider_job_id
  end
end

case (ARGV[0] || "full")
when "full" then seed_full
when "failing" then seed_failing
when "actions" then seed_actions
else abort "unknown mode #{ARGV[0]}"
end

puts JSON.generate({"jids" => JIDS, "action_mailer" => KIQBOARD_ACTION_MAILER})
