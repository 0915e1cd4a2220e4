# frozen_string_literal: true

# Prints what Sidekiq 6.4's own API (lib/sidekiq/api.rb) says about the keyspace, as JSON.
#
#   REDIS_URL=... [NAMESPACE=ns] ruby tests/ruby/dump.rb
#
# Besides Sidekiq's own display_args (6.4.1 semantics: ActiveJob arguments shown raw, {"_aj_globalid" => gid}),
# each job also carries "display_args_deserialized": the same value passed through upstream Sidekiq >= 7.1's
# JobRecord#deserialize_argument (gid hash -> gid string, "_aj_*" keys dropped), ported verbatim below, and
# "display_args_v8": Sidekiq 8's rule for ActionMailer::MailDeliveryJob (values_at("params", "args")).

require_relative "worker_app"

ACTIVE_JOB_PREFIX = "_aj_"
GLOBALID_KEY = "_aj_globalid"

# upstream sidekiq lib/sidekiq/api.rb (7.1+), JobRecord#deserialize_argument
def deserialize_argument(argument)
  case argument
  when Array
    argument.map { |arg| deserialize_argument(arg) }
  when Hash
    if argument.size == 1 && argument.include?(GLOBALID_KEY)
      argument[GLOBALID_KEY]
    else
      argument.transform_values { |v| deserialize_argument(v) }
        .reject { |k, _| k.start_with?(ACTIVE_JOB_PREFIX) }
    end
  else
    argument
  end
end

AJ_WRAPPER = "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"

def job_json(record)
  out = {
    "jid" => record.jid,
    "klass" => record.klass,
    "queue" => record.queue,
    "display_class" => record.display_class,
    "display_args" => record.display_args,
    "tags" => record.tags,
    "value" => record.value
  }
  out["display_args_deserialized"] = out["display_args_v8"] = record.display_args
  if record.klass == AJ_WRAPPER && record["wrapped"]
    job_args = deserialize_argument(record.args[0]["arguments"])
    wrapped = record["wrapped"]
    if wrapped == "ActionMailer::DeliveryJob"
      out["display_args_deserialized"] = out["display_args_v8"] = job_args.drop(3)
    elsif wrapped == "ActionMailer::MailDeliveryJob"
      out["display_args_deserialized"] = job_args.drop(3).first["args"]
      out["display_args_v8"] = job_args.drop(3).first.values_at("params", "args")
    else
      out["display_args_deserialized"] = out["display_args_v8"] = job_args
    end
  end
  %w[retry_count error_class error_message created_at enqueued_at failed_at retried_at bid].each do |k|
    out[k] = record[k]
  end
  out["error_backtrace"] = record.error_backtrace if record["error_backtrace"]
  out
end

def sorted_json(entry)
  job_json(entry).merge("score" => entry.score, "at" => entry.at.to_f)
end

now = Time.now.to_f
stats = Sidekiq::Stats.new
history = Sidekiq::Stats::History.new(7)

queues = Sidekiq::Queue.all.map do |q|
  {"name" => q.name, "size" => q.size, "latency" => q.latency, "paused" => q.paused?,
   "jobs" => q.map { |j| job_json(j) }}
end

sets = {
  "retry" => Sidekiq::RetrySet.new,
  "schedule" => Sidekiq::ScheduledSet.new,
  "dead" => Sidekiq::DeadSet.new
}.transform_values { |set| set.map { |e| sorted_json(e) } }

# ProcessSet.new(false): no cleanup (no SREM) -- we are reading, not tidying up.
processes = Sidekiq::ProcessSet.new(false).map do |p|
  {"identity" => p.identity, "hostname" => p["hostname"], "pid" => p["pid"], "tag" => p.tag,
   "labels" => p.labels, "queues" => p.queues, "busy" => p["busy"], "quiet" => p["quiet"] == "true",
   "stopping" => p.stopping?, "concurrency" => p["concurrency"], "beat" => p["beat"],
   "started_at" => p["started_at"], "rss" => p["rss"], "rtt_us" => p["rtt_us"]}
end

workers = Sidekiq::Workers.new.map do |identity, tid, work|
  {"identity" => identity, "tid" => tid, "queue" => work["queue"], "run_at" => work["run_at"],
   "jid" => work["payload"]["jid"], "display_class" => Sidekiq::JobRecord.new(work["payload"]).display_class}
end

executed = Sidekiq.redis { |c| c.lrange(KiqboardTest::EXECUTED, 0, -1) }

puts JSON.generate({
  "now" => now,
  "namespace" => ENV["NAMESPACE"].to_s,
  "stats" => {
    "processed" => stats.processed,
    "failed" => stats.failed,
    "scheduled_size" => stats.scheduled_size,
    "retry_size" => stats.retry_size,
    "dead_size" => stats.dead_size,
    "processes_size" => stats.processes_size,
    "workers_size" => stats.workers_size,
    "enqueued" => stats.enqueued,
    "default_queue_latency" => stats.default_queue_latency
  },
  "stats_queues" => stats.queues,
  "history" => {"processed" => history.processed, "failed" => history.failed},
  "queues" => queues,
  "sets" => sets,
  "processes" => processes,
  "workers" => workers,
  "workset_size" => Sidekiq::WorkSet.new.size,
  "executed" => executed
})
