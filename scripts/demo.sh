#!/usr/bin/env bash
# The demo: a burst of requests through sluice to a mock API that allows
# RATE requests per second and answers 429 beyond that. Shows every request
# delivered, none rejected by the API, at the limit.
# Usage: scripts/demo.sh [REQUESTS] [RATE]     (defaults: 300 requests, 20/s)
#        scripts/demo.sh batch [ITEMS] [RATE]  the same as one POST /_sluice/batch
#        scripts/demo.sh jobs [JOBS] [RATE]    durable async jobs in Redis (200, 20/s):
#        sluice is killed with SIGKILL halfway and restarted; every job still completes.
#        scripts/demo.sh shared [REQUESTS] [RATE]  three sluice instances share one limit
#        through Redis (300, 30/s): a third of the burst into each, the API sees RATE in all.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=burst
if [ "${1:-}" = batch ] || [ "${1:-}" = jobs ] || [ "${1:-}" = shared ]; then
  mode=$1
  shift
fi
n=${1:-$([ $mode = jobs ] && echo 200 || echo 300)}
rate=${2:-$([ $mode = shared ] && echo 30 || echo 20)}

scripts/deps.sh
echo "building..." >&2
scripts/build.sh build -DCMAKE_BUILD_TYPE=RelWithDebInfo

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on port $1" >&2
  return 1
}

# sluice's config for the demo in FILE: listening on PORT, one route to the
# mock API at the demo's rate, and the [redis] section REDIS if given.
write_conf() {
  local file=$1 port=$2 redis=${3:-}
  cat >"$file" <<CONF
[server]
listen = 127.0.0.1:$port
admin_listen =
access_log = off
$redis
[route api]
match = /
upstream = http://127.0.0.1:$api
rate = $rate/s
CONF
}

# Durable jobs: a private redis-server (no files), N async jobs, SIGKILL and restart.
demo_jobs() {
  local redis sluice_pid
  redis=$(free_port)
  redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
  pids+=($!)
  build/tests/tools/mock_upstream --listen "127.0.0.1:$api" --rate "$rate/s" \
    --log "$work/arrivals.log" --max-seconds 600 2>"$work/mock.err" &
  pids+=($!)
  write_conf "$work/sluice.conf" "$proxy" "
[redis]
url = redis://127.0.0.1:$redis/0
prefix = demo:
claim_after = 2s
"
  wait_port "$redis"
  wait_port "$api"
  build/sluice -c "$work/sluice.conf" 2>"$work/sluice.err" &
  sluice_pid=$!
  wait_port "$proxy"
  echo "mock API: at most $rate requests/s; sluice keeps async jobs in Redis (port $redis)"
  python3 - "$proxy" "$n" "$work/ids" <<'PY'
import http.client, json, sys, time
port, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
t0, ids = time.monotonic(), []
for i in range(n):
    c.request("POST", "/v1/orders?seq=%d" % i, body=b'{"n":%d}' % i,
              headers={"Prefer": "respond-async", "Content-Type": "application/json"})
    r = c.getresponse()
    body = r.read()
    assert r.status == 202, (r.status, body)
    ids.append(json.loads(body)["id"])
print("submitted %d jobs: %d x 202 Accepted in %.2f s" % (n, n, time.monotonic() - t0))
open(out, "w").write("\n".join(ids))
PY
  sleep 3
  echo "killing sluice with SIGKILL after 3 s ($(wc -l <"$work/arrivals.log") jobs reached the API)..."
  kill -9 "$sluice_pid"
  wait "$sluice_pid" 2>/dev/null || true
  build/sluice -c "$work/sluice.conf" 2>>"$work/sluice.err" &
  pids+=($!)
  wait_port "$proxy"
  echo "restarted; it claims the dead instance's jobs after claim_after (2 s)"
  python3 - "$proxy" "$n" "$work/ids" "$work/arrivals.log" "$rate" <<'PY'
import http.client, json, sys, time
port, n, ids, log, rate = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3]).read().split(), sys.argv[4], float(sys.argv[5])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
done, deadline = {}, time.monotonic() + n / rate + 60
while len(done) < n and time.monotonic() < deadline:
    for i in ids:
        if i in done:
            continue
        c.request("GET", "/_sluice/jobs/" + i)
        doc = json.loads(c.getresponse().read())
        if doc.get("state") in ("done", "failed"):
            done[i] = doc
    time.sleep(0.5)
rows = [l.split() for l in open(log)]
seqs = [r[4].rsplit("seq=", 1)[1] for r in rows]
states = [d["state"] for d in done.values()]
times = sorted(int(r[0]) for r in rows)
best, j = 0, 0
for k in range(len(times)):
    while times[k] - times[j] >= 1_000_000:
        j += 1
    best = max(best, k - j + 1)
print()
print("jobs:     %d submitted, %d done, %d failed, %d unfinished"
      % (n, states.count("done"), states.count("failed"), n - len(done)))
print("API saw:  %d requests for %d distinct jobs (%d run twice: held by the killed instance)"
      % (len(seqs), len(set(seqs)), len(seqs) - len(set(seqs))))
print("          at most %d in any 1 s window (limit %g), %d answered 429"
      % (best, rate, sum(1 for r in rows if r[3] == "429")))
ok = states.count("done") == n and len(set(seqs)) == n
print("\nresult: %s" % ("every accepted job completed across a SIGKILL, none lost"
                        if ok else "NOT every job completed"))
sys.exit(0 if ok else 1)
PY
}

# Three instances, one Redis, one limit: a third of the burst into each at once.
demo_shared() {
  local redis ports=() i
  redis=$(free_port)
  redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
  pids+=($!)
  build/tests/tools/mock_upstream --listen "127.0.0.1:$api" --rate "$rate/s" \
    --log "$work/arrivals.log" --max-seconds 600 2>"$work/mock.err" &
  pids+=($!)
  wait_port "$redis"
  wait_port "$api"
  for i in 1 2 3; do
    ports+=("$(free_port)")
    write_conf "$work/sluice$i.conf" "${ports[$((i - 1))]}" "
[redis]
url = redis://127.0.0.1:$redis/0
prefix = demo:
jobs = off
shared_limit = on
"
    build/sluice -c "$work/sluice$i.conf" 2>"$work/sluice$i.err" &
    pids+=($!)
  done
  for i in 0 1 2; do wait_port "${ports[$i]}"; done
  echo "mock API: at most $rate requests/s; three sluice instances share that limit through Redis"
  echo "sending $n requests at once, a third into each instance..."
  local bursts=()
  for i in 0 1 2; do
    build/tests/tools/burst --url "http://127.0.0.1:${ports[$i]}/v1/items" -n $((n / 3)) \
      -c $((n / 3)) --interval-us 200 --json --max-seconds 600 >"$work/burst$i.json" &
    bursts+=($!)
  done
  wait "${bursts[@]}"
  python3 - "$work" "$rate" <<'PY'
import json, sys
work, rate = sys.argv[1], float(sys.argv[2])
sums = [json.loads(open("%s/burst%d.json" % (work, i)).read().splitlines()[-1]) for i in range(3)]
rows = [l.split() for l in open(work + "/arrivals.log")]
times = sorted(int(r[0]) for r in rows)
codes = [int(r[3]) for r in rows]
best, j = 0, 0
for i in range(len(times)):
    while times[i] - times[j] >= 1_000_000:
        j += 1
    best = max(best, i - j + 1)
span = (times[-1] - times[0]) / 1e6 if len(times) > 1 else 0
total = sum(s["total"] for s in sums)
ok200 = sum(s["status"].get("200", 0) for s in sums)
print()
print("clients:  %d sent, %d x 200 (%s per instance)"
      % (total, ok200, " / ".join(str(s["status"].get("200", 0)) for s in sums)))
print("API saw:  %d requests, %d answered 429" % (len(codes), codes.count(429)))
print("          at most %d in any 1 s window (limit %g, shared by 3 instances)" % (best, rate))
if span:
    print("          achieved %.2f req/s over %.2f s (%.1f%% of the limit)"
          % ((len(times) - 1) / span, span, 100 * (len(times) - 1) / span / rate))
ok = ok200 == total and codes.count(429) == 0 and best <= rate
print("\nresult: %s" % ("one limit held across three instances, every request delivered"
                        if ok else "NOT every request was delivered within the limit"))
sys.exit(0 if ok else 1)
PY
}

api=$(free_port)
proxy=$(free_port)
if [ $mode = shared ]; then
  demo_shared
  exit $?
fi
if [ $mode = jobs ]; then
  demo_jobs
  exit $?
fi
build/tests/tools/mock_upstream --listen "127.0.0.1:$api" --rate "$rate/s" \
  --log "$work/arrivals.log" --max-seconds 600 2>"$work/mock.err" &
pids+=($!)
write_conf "$work/sluice.conf" "$proxy"
build/sluice -c "$work/sluice.conf" 2>"$work/sluice.err" &
pids+=($!)
wait_port "$api"
wait_port "$proxy"

echo "mock API: at most $rate requests/s, 429 beyond that"
if [ "$mode" = batch ]; then
  echo "sending one batch of $n requests through sluice (limit $rate/s)..."
  # One POST /_sluice/batch; its answer is summarised like the burst client's.
  python3 - "http://127.0.0.1:$proxy/_sluice/batch" "$n" >"$work/burst.json" <<'PY'
import json, sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
doc = {"requests": [{"path": "/v1/items", "headers": {"X-Seq": str(i)}} for i in range(n)]}
req = urllib.request.Request(url, data=json.dumps(doc).encode(),
                             headers={"Content-Type": "application/json"})
t0 = time.monotonic()
with urllib.request.urlopen(req, timeout=600) as resp:
    answer = json.load(resp)
elapsed = time.monotonic() - t0
status = {}
for r in answer["responses"]:
    status[str(r["status"])] = status.get(str(r["status"]), 0) + 1
waits = sorted(r["queue_ms"] for r in answer["responses"])
pick = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))] if waits else 0
print(json.dumps({"total": n, "status": status, "timeout": 0, "error": 0, "batch_s": elapsed,
                  "queue_ms": {"p50": pick(0.5), "p99": pick(0.99),
                               "max": waits[-1] if waits else 0}}))
PY
else
  echo "sending a burst of $n requests at once through sluice (limit $rate/s)..."
  build/tests/tools/burst --url "http://127.0.0.1:$proxy/v1/items" -n "$n" -c "$n" --seq \
    --interval-us 200 --json --max-seconds 600 >"$work/burst.json"
fi

python3 - "$work/burst.json" "$work/arrivals.log" "$rate" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
rows = [l.split() for l in open(sys.argv[2])]
rate = float(sys.argv[3])
times = sorted(int(r[0]) for r in rows)
codes = [int(r[3]) for r in rows]
best, j = 0, 0
for i in range(len(times)):
    while times[i] - times[j] >= 1_000_000:
        j += 1
    best = max(best, i - j + 1)
span = (times[-1] - times[0]) / 1e6 if len(times) > 1 else 0
seqs = [int(r[1]) for r in rows]
print()
print("clients:  %d sent, %s" % (summary["total"], ", ".join(
    "%s x %s" % (n, s) for s, n in sorted(summary["status"].items()))))
print("          timeouts %d, errors %d" % (summary["timeout"], summary["error"]))
print("API saw:  %d requests, %d answered 429" % (len(codes), codes.count(429)))
print("          at most %d in any 1 s window (limit %g)" % (best, rate))
if span:
    print("          achieved %.2f req/s over %.2f s (%.1f%% of the limit)"
          % ((len(times) - 1) / span, span, 100 * (len(times) - 1) / span / rate))
print("          in arrival order: %s" % ("yes" if seqs == sorted(seqs) else "no"))
if "batch_s" in summary:
    print("batch:    one POST /_sluice/batch, answered after %.2f s" % summary["batch_s"])
    print("item queue time: p50 %.0f ms, p99 %.0f ms, max %.0f ms"
          % (summary["queue_ms"]["p50"], summary["queue_ms"]["p99"], summary["queue_ms"]["max"]))
else:
    print("client latency: p50 %.0f ms, p99 %.0f ms, max %.0f ms"
          % (summary["latency_ms"]["p50"], summary["latency_ms"]["p99"],
             summary["latency_ms"]["max"]))
ok = summary["status"].get("200", 0) == summary["total"] and codes.count(429) == 0
print("\nresult: %s" % ("every request delivered at the limit, none rejected by the API"
                        if ok else "NOT all requests were delivered"))
sys.exit(0 if ok else 1)
PY
