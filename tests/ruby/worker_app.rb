# frozen_string_literal: true

# A tiny Sidekiq 6.4 "application" for kiqboard's interop tests.
#
# Loaded by the real `sidekiq` CLI (`sidekiq -r tests/ruby/worker_app.rb ...`) and by seed.rb / dump.rb.
# Configured only from the environment:
#   REDIS_URL      redis://127.0.0.1:PORT/DB            (required)
#   NAMESPACE      redis-namespace prefix               (optional; empty = none)
#   KIQ_POLL       scheduler poll interval in seconds   (optional, default 1)
#   KIQ_BEAT       heartbeat interval in seconds        (optional; Sidekiq's BEAT_PAUSE is 5. Signals are popped
#                  once per heartbeat, so quiet/stop tests use 1 to finish in seconds)
#   KIQ_RETRY_IN   seconds until a failed job's retry   (optional, default 3600: the retry set stays put while
#                  the tests read it; Sidekiq's own default would make the poller move them after 15-25 s)
#
# Every key the workers write goes through Sidekiq.redis, so it is namespaced like everything else:
#   kiqboard-test:executed   LIST  jids of jobs that ran to completion (LPUSH)
#   kiqboard-test:args       HASH  jid -> JSON of the args the job received
#   kiqboard-test:started    LIST  jids of SleepWorker jobs that started
#   kiqboard-test:payloads   HASH  jid -> the job hash exactly as the server parsed it (server middleware; the last
#                                  execution wins)

require "json"
require "sidekiq"
require "sidekiq/api"
require "sidekiq/job_retry"
require "active_job"
require "active_job/queue_adapters/sidekiq_adapter"
require "globalid"

# ActionMailer (Debian ruby-actionmailer) is optional: without it the mailer jobs are simply not seeded.
# KIQ_NO_MAILER=1 pretends it is missing.
begin
  raise LoadError if ENV["KIQ_NO_MAILER"].to_s != ""
  require "action_mailer"
  KIQBOARD_ACTION_MAILER = true
rescue LoadError
  KIQBOARD_ACTION_MAILER = false
end

# redis-rb 4.8 warns about Sidekiq 6.4's use of sadd's return value on every push
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

module KiqboardTest
  EXECUTED = "kiqboard-test:executed"
  ARGS = "kiqboard-test:args"
  STARTED = "kiqboard-test:started"
  PAYLOADS = "kiqboard-test:payloads"

  # Server middleware: records every job hash as Sidekiq's processor parsed it (proves Ruby read our payloads).
  class RecordPayload
    def call(_worker, job, _queue)
      Sidekiq.redis { |conn| conn.hset(PAYLOADS, job["jid"].to_s, Sidekiq.dump_json(job)) }
      yield
    end
  end

  def self.redis_options
    opts = {url: ENV.fetch("REDIS_URL")}
    ns = ENV["NAMESPACE"].to_s
    opts[:namespace] = ns unless ns.empty?
    opts
  end

  def self.record(jid, args)
    Sidekiq.redis do |conn|
      conn.hset(ARGS, jid, JSON.generate(args))
      conn.lpush(EXECUTED, jid)
    end
  end
end

Sidekiq.configure_server do |config|
  config.redis = KiqboardTest.redis_options
  config.server_middleware { |chain| chain.add KiqboardTest::RecordPayload }
end
Sidekiq.configure_client do |config|
  config.redis = KiqboardTest.redis_options
end
# seed.rb / dump.rb print JSON on stdout: keep Sidekiq's log lines off it.
Sidekiq.logger = Sidekiq::Logger.new($stderr) unless Sidekiq.server?

# Fast scheduler for tests. In 6.4.1 the poller sleeps random(poll_interval_average) where
# poll_interval_average ||= process_count * average_scheduled_poll_interval; setting poll_interval_average
# directly also skips the poller's fixed 10 s INITIAL_WAIT (it still waits 0-5 s at random).
poll = Float(ENV.fetch("KIQ_POLL", "1"))
Sidekiq.options[:average_scheduled_poll_interval] = poll
Sidekiq.options[:poll_interval_average] = poll
Sidekiq.options[:labels] = ["kiqboard-test"]

if ENV["KIQ_BEAT"].to_s != ""
  require "sidekiq/launcher"
  Sidekiq::Launcher.send(:remove_const, :BEAT_PAUSE)
  Sidekiq::Launcher.const_set(:BEAT_PAUSE, Float(ENV["KIQ_BEAT"]))
end

RETRY_IN = Integer(ENV.fetch("KIQ_RETRY_IN", "3600"))

# Plain job that always succeeds and records its jid.
class PlainWorker
  include Sidekiq::Worker
  sidekiq_options queue: "default", tags: ["plain", "kiqboard"]
  sidekiq_retry_in { RETRY_IN }

  def perform(*args)
    KiqboardTest.record(jid, args)
  end
end

# Always raises: goes to the retry set, with a (compressed) backtrace.
class FailingWorker
  include Sidekiq::Worker
  sidekiq_options queue: "default", retry: 5, backtrace: true, tags: ["failing"]
  sidekiq_retry_in { RETRY_IN }

  def perform(*args)
    raise ArgumentError, "FailingWorker always fails: #{args.inspect}"
  end
end

# retry: 0 -> straight to the dead set on its first failure.
class DeadWorker
  include Sidekiq::Worker
  sidekiq_options queue: "default", retry: 0, backtrace: 5

  def perform(*args)
    raise "DeadWorker dies ünïcödé"
  end
end

# Keeps a thread busy so that processes/busy/work can be compared while it runs.
class SleepWorker
  include Sidekiq::Worker
  sidekiq_options queue: "slow", retry: false

  def perform(seconds, *rest)
    Sidekiq.redis { |conn| conn.lpush(KiqboardTest::STARTED, jid) }
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds.to_f
    sleep 0.1 while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
    KiqboardTest.record(jid, [seconds, *rest])
  end
end

# --- ActiveJob ----------------------------------------------------------------------------------------------------

GlobalID.app = "kiqboard-test"
ActiveJob::Base.queue_adapter = :sidekiq
ActiveJob::Base.logger = Logger.new(nil)
ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper.sidekiq_retry_in { RETRY_IN }

# A GlobalID-identifiable model (no database): serialized by ActiveJob as {"_aj_globalid" => "gid://..."}.
class User
  include GlobalID::Identification
  attr_reader :id

  def initialize(id)
    @id = id
  end

  def self.find(id)
    new(id)
  end
end

class GidJob < ActiveJob::Base
  queue_as :default

  def perform(user, options = {})
    KiqboardTest.record(provider_job_id, [user.to_global_id.to_s, options])
  end
end

class FailingJob < ActiveJob::Base
  queue_as :default

  def perform(*)
    raise "FailingJob always fails"
  end
end

if KIQBOARD_ACTION_MAILER
  ActionMailer::Base.delivery_method = :test
  ActionMailer::Base.logger = Logger.new(nil)

  class TestMailer < ActionMailer::Base
    default from: "kiqboard@example.com"

    def welcome(user, greeting)
      mail(to: "user#{user.id}@example.com", subject: greeting, body: "#{greeting} (#{params.inspect})")
    end
  end

  # Mail jobs record their jid like every other job once delivered.
  [ActionMailer::DeliveryJob, ActionMailer::MailDeliveryJob, ActionMailer::Parameterized::DeliveryJob].each do |klass|
    klass.after_perform { |job| KiqboardTest.record(job.provider_job_id, ["mail", *job.arguments.first(2)]) }
  end

  # Rails 6.1's new default (config.action_mailer.delivery_job): ActionMailer::MailDeliveryJob, args as kwargs.
  class ModernMailer < TestMailer
    self.delivery_job = ActionMailer::MailDeliveryJob
  end
end
