"""Round trips (and time) per SidekiqReader page method at 1k and 1M entries, on a throwaway real redis-server.

    .venv/bin/python bench/round_trips.py            # sizes 1000 and 1000000
    .venv/bin/python bench/round_trips.py 1000 50000

A round trip is one packed send on a redis-py connection (a pipeline without MULTI is one send), counted by
wrapping ``AbstractConnection.send_packed_command``. The server-side command count comes from INFO commandstats deltas:
it includes the commands run inside the Lua script (a measure of server work, not of network round trips);
INFO itself is left out of it.
Seeded per size N: N retry entries, N jobs in queue:default, N/10 scheduled, N/10 dead, 50 processes running
min(N, 5000) jobs, 180 days of history. Seeding uses server-side Lua so 1M entries take seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis  # noqa: E402

import sidekiq_reader  # noqa: E402
from conftest import RedisServer  # noqa: E402

SEED_ZSET = """
local key, first, last, base = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local args = {}
for i = first, last do
  local jid = string.format('%024x', i)
  args[#args + 1] = tostring(base + i / 1000)
  args[#args + 1] = '{"class":"HardWorker","args":[' .. i .. ',"user-' .. i .. '"],"retry":true,"queue":"default",' ..
    '"jid":"' .. jid .. '","created_at":1700000000.5,"enqueued_at":1700000001.5,"retry_count":3,' ..
    '"error_class":"RuntimeError","error_message":"boom ' .. i .. '","failed_at":1700000002.5}'
  if #args >= 2000 then redis.call('ZADD', key, unpack(args)); args = {} end
end
if #args > 0 then redis.call('ZADD', key, unpack(args)) end
return 1
"""

SEED_LIST = """
local key, first, last = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local args = {}
for i = first, last do
  args[#args + 1] = '{"class":"HardWorker","args":[' .. i .. '],"retry":true,"queue":"default","jid":"' ..
    string.format('%024x', i) .. '","created_at":1700000000.5,"enqueued_at":1700000001.5}'
  if #args >= 1000 then redis.call('LPUSH', key, unpack(args)); args = {} end
end
if #args > 0 then redis.call('LPUSH', key, unpack(args)) end
return 1
"""


def seed(client: redis.Redis, size: int) -> None:
    client.flushall()
    zset = client.register_script(SEED_ZSET)
    lst = client.register_script(SEED_LIST)
    chunk = 100_000
    for name, count in (("retry", size), ("schedule", max(size // 10, 1)), ("dead", max(size // 10, 1))):
        for first in range(0, count, chunk):
            zset(keys=[name], args=[first, min(first + chunk, count) - 1, 1700000000])
    for first in range(0, size, chunk):
        lst(keys=["queue:default"], args=[first, min(first + chunk, size) - 1])
    pipe = client.pipeline(transaction=False)
    pipe.sadd("queues", "default", "low", "mailers")
    pipe.lpush("queue:low", '{"class":"X","args":[],"jid":"low1","enqueued_at":1700000000.0}')
    pipe.set("stat:processed", size * 10)
    pipe.set("stat:failed", size)
    for day in range(180):
        date = time.strftime("%Y-%m-%d", time.gmtime(time.time() - day * 86400))
        pipe.set(f"stat:processed:{date}", day * 7)
        pipe.set(f"stat:failed:{date}", day)
    running = min(size, 5000)
    for p in range(50):
        identity = f"worker-{p}.example:{1000 + p}:{p:012x}"
        pipe.sadd("processes", identity)
        pipe.hset(identity, mapping={
            "info": f'{{"hostname":"worker-{p}.example","pid":{1000 + p},"concurrency":100,"queues":["default"],'
                    f'"started_at":1700000000.0,"tag":"bench","labels":[]}}',
            "busy": running // 50, "beat": time.time(), "quiet": "false", "rss": 123456, "rtt_us": 100,
        })
        work = {
            f"tid-{t}": '{"queue":"default","payload":"{\\"class\\":\\"HardWorker\\",\\"args\\":[%d],\\"jid\\":'
                        '\\"w%d\\"}","run_at":%d}' % (t, p * 1000 + t, 1700000000 + (p * 7919 + t) % 100000)
            for t in range(running // 50)
        }
        if work:
            pipe.hset(f"{identity}:work", mapping=work)
    pipe.execute()


def commands_served(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(value["calls"]) for name, value in stats.items() if name not in ("cmdstat_info",))


def main(sizes: list[int]) -> None:
    server = RedisServer().start()
    counter = {"round_trips": 0}
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        counter["round_trips"] += 1
        return original(self, command, check_health)

    results: dict[str, dict[int, tuple[int, int, float]]] = {}
    try:
        admin = server.client()
        for size in sizes:
            started = time.perf_counter()
            seed(admin, size)
            print(f"seeded {size:,} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            reader = sidekiq_reader.SidekiqReader(server.client())
            last_set_page = max(1, -(-size // 25))
            a_key = sidekiq_reader.entry_key(1700000000 + 12 / 1000, f"{12:024x}")
            calls = {
                "stats()": lambda: reader.stats(),
                "stats_json()": lambda: reader.stats_json(),
                "queue_sizes()": lambda: reader.queue_sizes(),
                "dashboard(days=180)": lambda: reader.dashboard(180),
                "busy(page=1, count=100)": lambda: reader.busy(),
                "busy(last page)": lambda: reader.busy(page=50, count=100),
                "queues()": lambda: reader.queues(),
                "queue(page=1)": lambda: reader.queue("default"),
                "queue(last page)": lambda: reader.queue("default", page=last_set_page),
                "queue(page=1, asc)": lambda: reader.queue("default", ascending=True),
                "sorted_set(retry, page=1)": lambda: reader.sorted_set("retry"),
                "sorted_set(retry, last page)": lambda: reader.sorted_set("retry", page=last_set_page),
                "sorted_set(retry, count=1000)": lambda: reader.sorted_set("retry", count=1000),
                "sorted_set(dead, page=1)": lambda: reader.sorted_set("dead"),
                "sorted_set(retry, substr=...)": lambda: reader.sorted_set("retry", substr="boom 12"),
                "entry(retry, key)": lambda: reader.entry("retry", a_key),
                "find_entry(retry, key)": lambda: reader.find_entry("retry", a_key),
                "search_jid(jid)": lambda: reader.search_jid(f"{12:024x}"),
            }
            if hasattr(reader, "overview"):
                calls["overview(days=7)"] = lambda: reader.overview(7)
            redis.connection.AbstractConnection.send_packed_command = counting
            try:
                for name, call in calls.items():
                    call()  # warm: the script is cached after the first page
                    before = commands_served(admin)
                    counter["round_trips"] = 0
                    started = time.perf_counter()
                    call()
                    elapsed = (time.perf_counter() - started) * 1000
                    trips = counter["round_trips"]
                    commands = commands_served(admin) - before
                    results.setdefault(name, {})[size] = (trips, commands, elapsed)
                admin.script_flush()
                counter["round_trips"] = 0
                reader.busy()
                cold = counter["round_trips"]
            finally:
                redis.connection.AbstractConnection.send_packed_command = original
            print(f"cold script cache: busy() took {cold} round trips (NOSCRIPT, then EVAL)", file=sys.stderr)
    finally:
        server.cleanup()

    header = "| method | " + " | ".join(f"N={size:,}: round trips / commands / ms" for size in sizes) + " |"
    print(header)
    print("|---|" + "---|" * len(sizes))
    for name, by_size in results.items():
        cells = [f"{by_size[s][0]} / {by_size[s][1]} / {by_size[s][2]:.1f}" for s in sizes]
        print(f"| `{name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1000, 1_000_000])
