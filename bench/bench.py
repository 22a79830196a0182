#!/usr/bin/env python3
"""bench.py - sluice against nginx limit_req, same machine, same run.

Each scenario runs against sluice, nginx (limit_req in delay mode, burst as
the queue) with worker_processes 1 and with auto, and, where it means
something, a direct connection to the upstream; all on 127.0.0.1. Prints one
table per scenario, writes bench/results/results.json, PNG plots of upstream
arrivals for the burst scenarios, and (full runs) bench/RESULTS.md.
The download scenario adds HAProxy (http mode) as a column: a 1 GiB body
through each proxy, its throughput and each proxy's peak RSS.
Two scenarios add a piece between proxy and upstream: jitter puts a relay that
delays requests by a random 0..X ms in front of the upstream, https makes the
upstream speak TLS (a throwaway CA made with the openssl command line).

Usage: bench/bench.py [--quick] [--build DIR] [--keep] [SCENARIO...]
Started by bench/run.sh, which installs the tools and builds sluice first.
Standard library only; every process started here is stopped at the end.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analyze as A  # noqa: E402
from procs import (Procs, children, cpu_seconds, established, free_port,  # noqa: E402
                   make_pki, nginx_argv, nginx_conf, parse_wrk, port_open, rss_kb,
                   wait_for)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PROXIES = ["sluice", "nginx-1", "nginx-auto"]
COLUMNS = PROXIES + ["direct"]
OVERHEAD_ROUNDS = 3
TITLES = {"sluice": "sluice", "nginx-1": "nginx (1 worker)",
          "nginx-auto": "nginx (auto)", "direct": "direct",
          "sluice-jp": "sluice (jitter_proof)",
          "memory": "sluice, memory jobs", "redis": "sluice, Redis jobs",
          "shared-mem": "sluice, limits in memory",
          "shared-1": "sluice, shared_limit, 1 instance",
          "shared-3": "sluice, shared_limit, 3 instances",
          "plain": "sluice, no limit_key", "keyed": "sluice, a new key each",
          "haproxy": "HAProxy"}
SCENARIOS = ["burst", "overload", "overhead", "parking", "retry", "abandon",
             "redis", "jobs", "cpu", "jitter", "https", "keys", "download"]
JITTER_MS = [0, 5, 20]
# wrk connections per instance in the shared-limit scenario.
SHARED_CONNS = 64
JITTER_COLUMNS = ["sluice", "sluice-jp", "nginx-1"]
# The mock's log is the upstream's clock and the relay makes the jitter: as
# root both run at a real-time priority (as tests/integration/harness.py runs
# the mock), so that neither adds delays of its own while waiting for one of
# two busy cores. Both only react to events and cannot starve the machine.
RT_PRIORITY = (["chrt", "-f", "20"]
               if os.geteuid() == 0 and shutil.which("chrt") else [])


class Bench:
    """One benchmark run: tools, processes, and what was measured."""

    def __init__(self, opts):
        self.o = opts
        self.quick = opts.quick
        build = opts.build
        self.sluice_bin = os.path.join(build, "sluice")
        self.mock_bin = os.path.join(build, "tests", "tools", "mock_upstream")
        self.relay_bin = os.path.join(build, "tests", "tools", "jitter_relay")
        self.burst_bin = os.path.join(build, "tests", "tools", "burst")
        self.workdir = tempfile.mkdtemp(prefix="sluice-bench-")
        self.procs = Procs(self.workdir)
        self.out = os.path.join(BENCH, "results")
        self.results = {}
        self.checks = []
        self.text = []
        self.stub = True

    # ---- output ------------------------------------------------------------

    def say(self, line=""):
        print(line, flush=True)
        self.text.append(line)

    def progress(self, msg):
        print("  .. " + msg, file=sys.stderr, flush=True)

    def table(self, title, rows, data, goals, columns=COLUMNS, notes=()):
        """rows: (label, key, format); data: {column: {key: value}}; notes
        are printed under the table."""
        head = ["metric"] + [TITLES[c] for c in columns] + ["target"]
        body = []
        for label, key, fmt in rows:
            cells = [label]
            for c in columns:
                v = data.get(c, {}).get(key)
                cells.append("-" if v is None else fmt(v))
            cells.append(goals.get(key, ""))
            body.append(cells)
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        self.say()
        self.say(title)
        for r in [head] + body:
            self.say("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        for note in notes:
            self.say("  note: " + note)

    def check(self, scenario, what, ok, measured):
        self.checks.append({"scenario": scenario, "target": what, "ok": bool(ok),
                            "measured": measured})

    # ---- processes -----------------------------------------------------------

    def mock(self, name, *args, rt=False, log=True):
        """rt: at a real-time priority (as root); log: log every arrival."""
        port = free_port()
        log = os.path.join(self.workdir, name + ".log") if log else None
        argv = [self.mock_bin, "--listen", "127.0.0.1:%d" % port, "--max-seconds", "900"]
        p = self.procs.start(name, (RT_PRIORITY if rt else []) + argv +
                             (["--log", log] if log else []) + list(args))
        wait_for(lambda: port_open(port) or not p.alive(), 10, name)
        if not p.alive():
            raise RuntimeError("%s exited: %s" % (name, p.stderr_tail()))
        p.port, p.log = port, log
        return p

    def relay(self, name, to_port, max_ms, seed=1):
        """The jitter relay in front of to_port: each chunk a request sends is
        delayed by a random 0..max_ms ms; answers come back at once."""
        port = free_port()
        p = self.procs.start(name, RT_PRIORITY + [
            self.relay_bin, "--listen", str(port), "--to", "127.0.0.1:%d" % to_port,
            "--min-ms", "0", "--max-ms", str(max_ms), "--seed", str(seed),
            "--max-seconds", "900"])
        wait_for(lambda: port_open(port) or not p.alive(), 10, name)
        if not p.alive():
            raise RuntimeError("%s exited: %s" % (name, p.stderr_tail()))
        p.port = port
        return p

    def sluice(self, name, upstream, rate, burst=1, server="", queue="", route="",
               valgrind=None, start_timeout=15, ca=None):
        """ca: the upstream speaks TLS with a certificate this CA signed."""
        port, admin = free_port(), free_port()
        conf = os.path.join(self.workdir, name + ".conf")
        if ca:
            route = "ca_file = %s\n%s" % (ca, route)
        with open(conf, "w") as f:
            f.write("[server]\nlisten = 127.0.0.1:%d\nadmin_listen = 127.0.0.1:%d\n"
                    "access_log = off\nlog_level = warn\ndrain_timeout = 0\n%s\n"
                    "[queue]\n%s\n"
                    "[route bench]\nmatch = /\nupstream = %s://127.0.0.1:%d\n"
                    "rate = %s\nburst = %d\n%s\n"
                    % (port, admin, server, queue, "https" if ca else "http", upstream,
                       rate, burst, route))
        p = self.procs.start(name, (valgrind or []) + [self.sluice_bin, "-c", conf])
        wait_for(lambda: not p.alive() or (port_open(port) and port_open(admin)),
                 start_timeout, name)
        if not p.alive():
            raise RuntimeError("%s exited: %s" % (name, p.stderr_tail()))
        p.port, p.admin, p.pids = port, admin, lambda: [p.pid]
        return p

    def nginx(self, name, workers, http_body, port, nofile=8192, connections=4096,
              master=True, valgrind=None, start_timeout=15):
        tmp = os.path.join(self.workdir, name)
        os.makedirs(tmp, exist_ok=True)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(tmp, workers, http_body, nofile, connections, master))
        p = self.procs.start(name, nginx_argv(tmp, conf, valgrind))
        wait_for(lambda: not p.alive() or port_open(port), start_timeout, name)
        if not p.alive():
            raise RuntimeError("%s exited: %s %s" % (name, p.stderr_tail(),
                                                    _read(os.path.join(tmp, "error.log"))))
        p.port = port
        p.pids = (lambda: children(p.pid)) if master else (lambda: [p.pid])
        return p

    def nginx_proxy(self, name, workers, upstream, rate_rps, queue, ca=None, **kw):
        """nginx limit_req in delay mode: `burst` is the queue, no nodelay.
        ca: the upstream speaks TLS (see nginx_tls)."""
        port = free_port()
        stub = "  location = /_stub { stub_status; }\n" if self.stub else ""
        body = (
            "  limit_req_zone $server_name zone=z:10m rate=%dr/s;\n"
            "  limit_req_log_level notice;\n"
            "  upstream up { server 127.0.0.1:%d; keepalive 256; "
            "keepalive_requests 1000000; }\n"
            "  server {\n"
            "    listen 127.0.0.1:%d backlog=4096;\n"
            "    server_name sluicebench;\n"
            "    location / {\n"
            "      limit_req zone=z burst=%d;\n"
            "      proxy_pass %s://up;\n"
            "      proxy_http_version 1.1;\n"
            "      proxy_set_header Connection \"\";\n"
            "      proxy_read_timeout 300s;\n%s"
            "    }\n%s"
            "  }\n" % (rate_rps, upstream, port, queue, "https" if ca else "http",
                       nginx_tls(ca), stub))
        return self.nginx(name, workers, body, port, **kw)

    def static_upstream(self, name="static", pin=None):
        """A second nginx that answers 200 "ok" to everything (pin: taskset prefix)."""
        port = free_port()
        body = ("  server {\n    listen 127.0.0.1:%d backlog=4096;\n"
                "    location / { return 200 \"ok\"; }\n  }\n" % port)
        return self.nginx(name, 1, body, port, valgrind=pin)

    def target(self, kind, name, upstream, rate_rps, queue, sluice_server="",
               sluice_queue="", sluice_route="", sluice_burst=1, ca=None, **kw):
        """Starts one column's proxy; returns (proc or None, base url).
        ca: the upstream speaks TLS with a certificate this CA signed."""
        if kind == "direct":
            return None, "%s://127.0.0.1:%d" % ("https" if ca else "http", upstream)
        if kind == "sluice":
            p = self.sluice(name, upstream, "%d/s" % rate_rps, sluice_burst, sluice_server,
                            sluice_queue, sluice_route, ca=ca)
        else:
            p = self.nginx_proxy(name, 1 if kind == "nginx-1" else "auto", upstream,
                                 rate_rps, queue, ca=ca, **kw)
        return p, "http://127.0.0.1:%d" % p.port

    def stop_mock(self, mock):
        """A mock (or relay) that died mid-run invalidates the column: say so."""
        alive = mock.alive()
        self.stop(mock)
        if not alive:
            raise RuntimeError("%s exited early (status %s): %s"
                               % (mock.name, mock.p.returncode, mock.stderr_tail(500)))

    def stop(self, *procs):
        for p in procs:
            if p is not None:
                self.procs.stop(p)

    def burst_args(self, url, n, c, args, max_seconds, results):
        return [self.burst_bin, "--url", url, "-n", str(n), "-c", str(c), "--json",
                "--results", results, "--max-seconds", str(max_seconds)] + list(args)

    def burst(self, name, url, n, c, *args, max_seconds=120):
        """Runs the burst client; returns (summary, [(index, outcome, ms)])."""
        results = os.path.join(self.workdir, name + ".results")
        cp = subprocess.run(self.burst_args(url, n, c, args, max_seconds, results),
                            capture_output=True, text=True, timeout=max_seconds + 60)
        if cp.returncode != 0:
            raise RuntimeError("burst %s failed: %s" % (name, cp.stderr[-2000:]))
        return json.loads(cp.stdout.strip().splitlines()[-1]), A.read_results(results)

    def wrk(self, url, seconds, threads=2, conns=64, headers=(), script=None, pin=()):
        """pin: a command prefix (taskset) that keeps wrk on given cores."""
        argv = list(pin) + ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds,
                            "--latency"] + [a for h in headers for a in ("-H", h)]
        argv += (["-s", script] if script else []) + [url]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        if cp.returncode != 0:
            raise RuntimeError("wrk failed: %s" % cp.stderr[-2000:])
        return parse_wrk(cp.stdout)

    # ---- scenarios -------------------------------------------------------------

    def run(self, names):
        fns = {"burst": self.sc_burst, "overload": self.sc_overload,
               "overhead": self.sc_overhead, "parking": self.sc_parking,
               "retry": self.sc_retry, "abandon": self.sc_abandon,
               "redis": self.sc_redis, "jobs": self.sc_jobs, "cpu": self.sc_cpu,
               "jitter": self.sc_jitter, "https": self.sc_https, "keys": self.sc_keys,
               "download": self.sc_download}
        for name in names:
            t0 = time.monotonic()
            self.progress("scenario %s" % name)
            try:
                fns[name]()
            except Exception as e:  # one broken scenario must not hide the rest
                self.say("\n%s: FAILED: %s" % (name, e))
                self.results.setdefault(name, {})["error"] = str(e)
                self.check(name, "scenario ran", False, str(e))
            finally:
                self.procs.stop_all()
            self.progress("scenario %s took %.0f s" % (name, time.monotonic() - t0))

    def flow(self, kind, tag, rate, n, interval_us, queue, mock_args, burst_args=(),
             relay_ms=None, **kw):
        """One column of a queued-flow scenario: mock upstream, proxy, burst.
        relay_ms: the proxy reaches the mock through the jitter relay, both at
        a real-time priority. Returns (arrivals, summary, results)."""
        mock = self.mock("%s-mock-%s" % (tag, kind), *mock_args, rt=relay_ms is not None)
        proxy = relay = None
        try:
            upstream = mock.port
            if relay_ms is not None:
                relay = self.relay("%s-relay-%s" % (tag, kind), mock.port, relay_ms)
                upstream = relay.port
            proxy, url = self.target(kind, "%s-%s" % (tag, kind), upstream, rate,
                                     queue, **kw)
            summary, results = self.burst(
                "%s-burst-%s" % (tag, kind), url + "/items", n, n, "--seq",
                "--interval-us", str(interval_us), "--timeout", "300",
                *burst_args, max_seconds=400)
        finally:
            self.stop(proxy)
            if relay is not None:
                self.stop_mock(relay)
            self.stop_mock(mock)
        return A.read_arrivals(mock.log), summary, results

    def flow_metrics(self, arrivals, results, rate, n, proxied, early=None):
        times = [a[0] for a in arrivals]
        early = n if early is None else early
        outcomes = A.client_outcomes(results)
        ok_lat = [r[2] for r in results if r[1] == "200"]
        achieved = A.rate_over(times)
        return {
            "sent": n,
            "delivered": outcomes.get("200", 0),
            "errors": n - outcomes.get("200", 0),
            "rejected_503": outcomes.get("503", 0),
            "passed_429": outcomes.get("429", 0),
            "other_errors": n - sum(outcomes.get(k, 0) for k in ("200", "429", "503")),
            "outcomes": outcomes,
            "upstream_arrivals": len(arrivals),
            "upstream_429": sum(1 for a in arrivals if a[2] == 429),
            "max_1s": A.max_in_window(times, 1_000_000),
            "violations": A.window_violations(times, rate, 1_000_000),
            "achieved_rps": achieved,
            "utilization_pct": (100.0 * achieved / rate) if achieved and proxied else None,
            "inversions": A.inversions([a[1] for a in arrivals if a[1] is not None]),
            "inversions_early": A.inversions([a[1] for a in arrivals
                                              if a[1] is not None and a[1] < early]),
            "p50_ms": A.percentile(ok_lat, 0.50),
            "p99_ms": A.percentile(ok_lat, 0.99),
            "span_s": (max(times) - min(times)) / 1e6 if times else None,
        }

    def sc_burst(self):
        n, rate = (200 if self.quick else 500), 50
        data, series = {}, {}
        for kind in COLUMNS:
            self.progress("burst: %s" % kind)
            arr, _s, res = self.flow(kind, "burst", rate, n, 200, 100000,
                                     ["--rate", "%d/s" % rate])
            data[kind] = self.flow_metrics(arr, res, rate, n, kind != "direct")
            series[kind] = [a[0] for a in arr]
        self.results["burst"] = {"requests": n, "limit": "%d/s" % rate,
                                 "nginx_queue": 100000, "targets": data}
        goals = {"violations": "0", "utilization_pct": ">= 99.5",
                 "inversions": "0", "errors": "0"}
        self.table("1. Burst: %d requests at once (200 us apart), limit %d/s, burst 1; "
                   "upstream 429s beyond %d/s" % (n, rate, rate),
                   FLOW_ROWS, data, goals, notes=FLOW_NOTES)
        self.plot("burst", series, rate, "Burst: %d requests at once, limit %d/s" % (n, rate))
        s = data["sluice"]
        self.check("burst", "window violations 0", s["violations"] == 0, s["violations"])
        self.check("burst", "utilization >= 99.5%", (s["utilization_pct"] or 0) >= 99.5,
                   _f1(s["utilization_pct"]))
        self.check("burst", "delivered all %d" % n, s["delivered"] == n, s["delivered"])
        self.check("burst", "FIFO inversions 0", s["inversions"] == 0, s["inversions"])

    def sc_overload(self):
        secs = 2 if self.quick else 5
        offered, rate, queue = 400, 100, 1000
        n, data, series = offered * secs, {}, {}
        for kind in COLUMNS:
            self.progress("overload: %s" % kind)
            arr, _s, res = self.flow(kind, "overload", rate, n, 1_000_000 // offered,
                                     queue, ["--rate", "%d/s" % rate],
                                     sluice_queue="max_depth = %d\noverflow = backpressure"
                                     % queue)
            data[kind] = self.flow_metrics(arr, res, rate, n, kind != "direct", queue)
            series[kind] = [a[0] for a in arr]
        self.results["overload"] = {"offered_rps": offered, "seconds": secs, "limit":
                                    "%d/s" % rate, "queue": queue, "targets": data}
        goals = {"rejected_503": "0 (backpressure)", "violations": "0",
                 "utilization_pct": ">= 99.5"}
        self.table("2. Overload: %d req/s offered for %d s into %d/s; queue %d "
                   "(sluice max_depth, backpressure; nginx burst)" % (offered, secs, rate, queue),
                   FLOW_ROWS + [("FIFO inversions, first %d sent" % queue, "inversions_early",
                                 _d)], data, goals, notes=FLOW_NOTES + [
                       "nginx answers 503 past its burst; sluice (backpressure) stops "
                       "accepting while its queue is full, so later clients wait in the "
                       "kernel (accept queue, SYN retries) and can reach it out of send "
                       "order; inversions are counted in send order"])
        self.plot("overload", series, rate, "Overload: %d/s offered for %d s into %d/s"
                  % (offered, secs, rate))
        s = data["sluice"]
        self.check("overload", "dropped beyond queue 0", s["errors"] == 0,
                   "%d not delivered (%s)" % (s["errors"], s["outcomes"]))
        self.check("overload", "window violations 0", s["violations"] == 0, s["violations"])
        self.check("overload", "utilization >= 99.5%", (s["utilization_pct"] or 0) >= 99.5,
                   _f1(s["utilization_pct"]))

    def sc_overhead(self):
        """Each column measured in several rounds, interleaved, and reported by
        the median: on two cores shared by wrk, the proxy and the upstream, one
        5 s run moves by 10% from one run to the next."""
        secs, rounds = (2, 1) if self.quick else (5, OVERHEAD_ROUNDS)
        static = self.static_upstream()
        runs = {kind: [] for kind in COLUMNS}
        for r in range(rounds):
            for kind in COLUMNS:
                self.progress("overhead: %s, round %d of %d" % (kind, r + 1, rounds))
                proxy, url = self.target(kind, "overhead-%s-%d" % (kind, r), static.port,
                                         1000000, 1000000, sluice_burst=1000000,
                                         sluice_route="max_in_flight = 1024",
                                         sluice_server="max_connections = 10000")
                try:
                    runs[kind].append(self.wrk_round(proxy, url, secs))
                finally:
                    self.stop(proxy)
        self.stop(static)
        data = {kind: _median_runs(runs[kind]) for kind in COLUMNS}
        direct, ng = data["direct"], data["nginx-1"]
        for d in data.values():
            d["x_direct"] = _ratio(d["rps"], direct["rps"])
            d["x_nginx1"] = _ratio(d["rps"], ng["rps"])
            if d["p99_ms"] is not None and direct["p99_ms"] is not None:
                d["p99_added_ms"] = d["p99_ms"] - direct["p99_ms"]
        self.results["overhead"] = {"wrk": "-t2 -c64 -d%ds --latency" % secs,
                                    "rounds": rounds, "statistic": "median of the rounds",
                                    "limit": "1000000/s (nginx: limit_req 1000000r/s)",
                                    "targets": data}
        rows = [("requests/s (median)", "rps", _f0), ("requests/s, each round", "rps_runs",
                                                      _runs),
                ("x direct", "x_direct", _f2),
                ("x nginx (1 worker)", "x_nginx1", _f2),
                ("proxy CPU us / request", "cpu_us", _f2), ("latency p50 ms", "p50_ms", _f2),
                ("latency p99 ms", "p99_ms", _f2), ("p99 added ms", "p99_added_ms", _f2),
                ("socket errors", "errors", _d), ("non-2xx", "non2xx", _d)]
        notes = ["upstream: nginx, 1 worker, return 200 \"ok\"; sluice: rate 1000000/s, "
                 "burst 1000000, max_in_flight 1024; nginx: limit_req rate=1000000r/s "
                 "burst=1000000 (delay mode), keepalive upstream",
                 "proxy CPU us / request: user + system time of the proxy's processes "
                 "during the wrk run, per request served; steadier than req/s, which "
                 "also depends on how wrk, the proxy and the upstream share the cores"]
        goals = {"x_nginx1": ">= 1.00", "p99_added_ms": "<= nginx (1 worker)"}
        self.table("3. Overhead: wrk -t2 -c64 -d%ds, %d interleaved rounds (medians), limit "
                   "effectively unlimited, static nginx upstream (1 worker)" % (secs, rounds),
                   rows, data, goals, notes=notes)
        s = data["sluice"]
        self.check("overhead", "req/s >= 1.0x nginx (1 worker)", (s["x_nginx1"] or 0) >= 1.0,
                   "%s req/s = %sx nginx" % (_f0(s["rps"]), _f2(s["x_nginx1"] or 0)))
        if "p99_added_ms" in s and "p99_added_ms" in ng:
            self.check("overhead", "p99 added <= nginx (1 worker)",
                       s["p99_added_ms"] <= ng["p99_added_ms"],
                       "%.2f ms vs nginx %.2f ms" % (s["p99_added_ms"], ng["p99_added_ms"]))

    def wrk_round(self, proxy, url, secs):
        """wrk for secs after a 1 s warm-up (connections, caches, keepalive
        pools); adds the proxy's CPU time per request served."""
        self.wrk(url + "/", 1)
        cpu0 = self.proxy_cpu(proxy)
        run = self.wrk(url + "/", secs)
        if proxy is not None and run["rps"]:
            run["cpu_us"] = (self.proxy_cpu(proxy) - cpu0) * 1e6 / (run["rps"] * secs)
        return run

    @staticmethod
    def proxy_cpu(proxy):
        """CPU seconds used so far by a proxy's processes (nginx: its workers)."""
        return sum(cpu_seconds(p) for p in proxy.pids()) if proxy is not None else 0.0

    def sc_parking(self):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        sizes = [1000] if self.quick else [5000, 20000]
        self.results["parking"] = {"limit": "1/s", "nofile_hard": hard, "runs": {}}
        for want in sizes:
            n = min(want, hard - 300) if hard != resource.RLIM_INFINITY else want
            data = {}
            for kind in PROXIES:
                self.progress("parking %d: %s" % (n, kind))
                data[kind] = self.park(kind, n)
            self.results["parking"]["runs"][str(n)] = {"requested": want, "targets": data}
            note = "" if n == want else " (asked %d; RLIMIT_NOFILE hard limit %d)" % (want, hard)
            rows = [("clients parked", "parked", _d), ("RSS before KB", "rss_before_kb", _d),
                    ("RSS parked KB", "rss_after_kb", _d),
                    ("KB per parked request", "kb_per_parked", _f2)]
            self.table("4. Parking: %d clients parked at 1/s%s" % (n, note), rows, data,
                       {"kb_per_parked": "<= 4 (nginx ~9.8)"}, PROXIES, notes=[
                           "RSS of sluice / of all nginx workers once every connection is "
                           "established and RSS stops moving, minus RSS before; kernel socket "
                           "buffers are in neither"])
            s = data["sluice"]
            self.check("parking", "<= 4 KB per parked request (%d)" % n,
                       s["kb_per_parked"] is not None and s["kb_per_parked"] <= 4.0,
                       _f2(s["kb_per_parked"]) + " KB")

    def park(self, kind, n):
        """Parks n clients behind a 1/s limit and reads the proxy's RSS."""
        mock = self.mock("park%d-mock-%s" % (n, kind))
        proxy = client = None
        try:
            proxy, url = self.target(
                kind, "park%d-%s" % (n, kind), mock.port, 1, n + 1000,
                sluice_server="max_connections = %d\nclient_timeout = 600s" % (n + 1000),
                # nginx drains connections once fewer than 1/16 of them are free
                sluice_queue="timeout = 600s", connections=n * 16 // 15 + 1000,
                nofile=min(2 * n + 2000, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            self.burst("park%d-warm-%s" % (n, kind), url + "/warm", 1, 1, max_seconds=30)
            time.sleep(1.1)  # the 1/s token the warm-up took is back
            before = sum(rss_kb(p) for p in proxy.pids())
            results = os.path.join(self.workdir, "park%d-%s.results" % (n, kind))
            client = self.procs.start("park%d-burst-%s" % (n, kind), self.burst_args(
                url + "/items", n, n, ["--timeout", "600"], 900, results))
            t0 = time.monotonic()
            wait_for(lambda: established(proxy.port) >= n, 120, "%d connections" % n,
                     interval=0.25)
            # the limit lets one request a second through while we wait
            wait_for(lambda: (self.parked(kind, proxy) or 0) >= n - 2 - (time.monotonic() - t0),
                     120, "%d parked requests" % n, interval=0.5)
            after = self.settled_rss(proxy)
            parked = self.parked(kind, proxy)
            return {"parked": parked, "connections": established(proxy.port),
                    "rss_before_kb": before, "rss_after_kb": after,
                    "kb_per_parked": (after - before) / parked if parked else None}
        finally:
            self.stop(client, proxy, mock)

    def settled_rss(self, proxy, limit_s=30):
        """RSS once it stops moving (two readings 0.5 s apart within 0.5%)."""
        last = sum(rss_kb(p) for p in proxy.pids())
        for _ in range(int(limit_s / 0.5)):
            time.sleep(0.5)
            now = sum(rss_kb(p) for p in proxy.pids())
            if abs(now - last) <= 0.005 * max(now, 1):
                return now
            last = now
        return last

    def parked(self, kind, proxy):
        """Requests waiting in the proxy, by its own account."""
        if kind == "sluice":
            text = _http_get("http://127.0.0.1:%d/metrics" % proxy.admin)
            for line in text.splitlines():
                if line.startswith("sluice_queue_depth_total "):
                    return int(float(line.split()[1]))
            return None
        text = _http_get("http://127.0.0.1:%d/_stub" % proxy.port)
        for line in text.splitlines():
            if line.startswith("Reading:"):
                return int(line.split()[3]) - 1  # Writing, minus this request
        return None

    def sc_retry(self):
        n, rate, fails, pause = (50, 50, 5, 2) if self.quick else (100, 50, 20, 2)
        data = {}
        for kind in COLUMNS:
            self.progress("retry: %s" % kind)
            arr, _s, res = self.flow(kind, "retry", rate, n, 200, 100000,
                                     ["--fail-first", str(fails), "--fail-status", "429",
                                      "--retry-after", str(pause)])
            d = self.flow_metrics(arr, res, rate, n, kind != "direct")
            d["during_pause"] = A.arrivals_during_pause(arr, pause * 1_000_000)
            data[kind] = d
        self.results["retry"] = {"requests": n, "limit": "%d/s" % rate, "upstream":
                                 "first %d answered 429 Retry-After: %d" % (fails, pause),
                                 "targets": data}
        rows = [("delivered (200)", "delivered", _d),
                ("429 passed to clients", "passed_429", _d),
                ("other errors", "other_errors", _d),
                ("upstream arrivals", "upstream_arrivals", _d),
                ("upstream 429s", "upstream_429", _d),
                ("arrivals during announced pause", "during_pause", _d),
                ("completion s", "span_s", _f2), ("latency p99 ms", "p99_ms", _f0)]
        self.table("5. Upstream 429s: %d requests at %d/s; the upstream answers its first %d "
                   "with 429 Retry-After: %d" % (n, rate, fails, pause), rows, data,
                   {"passed_429": "0 (nginx %d of %d)" % (fails, n), "during_pause": "0"},
                   notes=["arrivals during announced pause: upstream arrivals less than "
                          "Retry-After seconds after a 429 that announced it"])
        s = data["sluice"]
        self.check("retry", "429s passed to clients 0", s["passed_429"] == 0,
                   "%d of %d" % (s["passed_429"], n))
        self.check("retry", "arrivals during announced pause 0", s["during_pause"] == 0,
                   s["during_pause"])

    def sc_abandon(self):
        n, rate, gone_after_ms = 100, 50, 1000
        data = {}
        for kind in PROXIES:
            self.progress("abandon: %s" % kind)
            data[kind] = self.abandon_run(kind, n, rate, gone_after_ms)
        self.results["abandon"] = {
            "clients": n, "limit": "%d/s" % rate,
            "abandon": "two clients started together, %d requests each, 2 ms apart: "
                       "/keep waits, /gone hangs up %d ms after sending"
                       % (n // 2, gone_after_ms), "targets": data}
        rows = [("delivered (200)", "delivered", _d),
                ("clients that hung up", "abandoned", _d),
                ("upstream arrivals", "upstream_arrivals", _d),
                ("  for clients already gone", "to_gone", _d),
                ("idle slots (tokens wasted)", "idle_slots", _d),
                ("completion s", "completion_s", _f2), ("ideal s", "ideal_s", _f2)]
        self.table("6. Abandon: %d clients at %d/s, half of them (interleaved) hang up "
                   "after %d ms" % (n, rate, gone_after_ms), rows, data,
                   {"idle_slots": "0 (nginx 39 of 50)", "completion_s": "= ideal"}, PROXIES,
                   notes=["idle slots: dispatch slots at the limit between the first upstream "
                          "arrival and the last delivered one, minus requests delivered; a "
                          "token spent on a gone client and a slot held for one and left "
                          "empty both count"])
        s = data["sluice"]
        self.check("abandon", "idle slots from abandoned clients 0", s["idle_slots"] <= 0,
                   "%d (completion %.2f s, ideal %.2f s)"
                   % (s["idle_slots"], s["completion_s"] or 0, s["ideal_s"]))

    def abandon_run(self, kind, n, rate, gone_after_ms):
        """Two burst clients, interleaved 1 ms apart: one waits, one hangs up."""
        mock = self.mock("abandon-mock-%s" % kind)
        proxy = keep = gone = None
        try:
            proxy, url = self.target(kind, "abandon-%s" % kind, mock.port, rate, 100000)
            common = ["--seq", "--interval-us", "2000", "--timeout", "120"]
            keep, keep_res = self.burst_start("abandon-keep-%s" % kind, url + "/keep",
                                              n // 2, common)
            time.sleep(0.001)
            gone, gone_res = self.burst_start(
                "abandon-gone-%s" % kind, url + "/gone", n // 2,
                common + ["--abandon-from", "0", "--abandon-after-ms", str(gone_after_ms)])
            for p in (keep, gone):
                wait_for(lambda p=p: not p.alive(), 200, p.name, interval=0.1)
                if p.p.returncode != 0:
                    raise RuntimeError("%s failed: %s" % (p.name, p.stderr_tail()))
            outcome = {("/keep", i): o for i, o, _ms in A.read_results(keep_res)}
            outcome.update({("/gone", i): o for i, o, _ms in A.read_results(gone_res)})
        finally:
            self.stop(keep, gone, proxy)
            self.stop_mock(mock)
        return abandon_metrics(A.read_arrivals(mock.log), outcome, rate)

    def burst_start(self, name, url, n, args, max_seconds=300):
        """The burst client in the background; returns (proc, results path)."""
        results = os.path.join(self.workdir, name + ".results")
        return self.procs.start(name, self.burst_args(url, n, n, args, max_seconds,
                                                      results)), results

    def sc_redis(self):
        """Shared limits ([redis] shared_limit = on): how many decisions per second
        one local Redis gives 1 and 3 sluice instances, beside the same route in
        memory mode, under wrk against a route whose limit never binds (so the
        decisions, not the limit, set the pace); and the script's own ceiling
        (EVALSHA from redis-benchmark, 50 clients, pipelined 16)."""
        secs = 2 if self.quick else 5
        static = self.static_upstream("shared-static")
        data = {}
        for mode, n in (("shared-mem", 1), ("shared-1", 1), ("shared-3", 3)):
            self.progress("shared limit: %s" % mode)
            data[mode] = self.shared_column(mode, n, static, secs)
        data["script"] = self.shared_script_ceiling(secs)
        self.stop(static)
        self.results["redis"] = {"wrk": "-t1 -c%d -d%ds per instance" % (SHARED_CONNS, secs),
                                 "load": os.getloadavg(), "targets": data}
        rows = [("dispatches per second, all instances", "rps", _f0),
                ("EVALSHA round trips per second", "decisions_per_s", _f0),
                ("dispatches decided per round trip", "per_decision", _f2),
                ("decision round trip p50 ms (metrics)", "rtt_p50_ms", _f2),
                ("latency p99 ms", "p99_ms", _f2),
                ("late grants dropped", "late", _d),
                ("errors + non-2xx", "bad", _d)]
        notes = ["route rate 1000000/s, burst 1000000, max_in_flight 256; upstream: nginx, "
                 "1 worker, return 200 \"ok\"; one private redis-server on loopback; wrk, "
                 "nginx, Redis and sluice share the two cores",
                 "a round trip asks for up to min(backlog, free in-flight, 64) dispatches and "
                 "the script grants what the limits allow, so under load one EVALSHA decides "
                 "many dispatches",
                 "the script alone, one dispatch per call (redis-benchmark, EVALSHA, -c 50 "
                 "-P 16): %s per second" % _f0(data["script"]["decisions_per_s"]),
                 "load average at the end: %.2f %.2f %.2f" % os.getloadavg()]
        self.table("7. Shared limits: dispatch decisions per second through one local Redis",
                   rows, data, {"rps": ">= 20000"},
                   columns=["shared-mem", "shared-1", "shared-3"], notes=notes)
        for mode in ("shared-1", "shared-3"):
            d = data[mode]
            self.check("redis", "%s: at least 20,000 dispatches decided per second" % mode,
                       (d["rps"] or 0) >= 20000, "%s/s" % _f0(d["rps"] or 0))

    def shared_column(self, mode, n, static, secs):
        """n instances on one Redis prefix (or one in memory), one wrk each, at once."""
        server, redis = "max_connections = 10000\n", None
        if mode != "shared-mem":
            redis = self.redis_server("shared-redis-%s" % mode)
            server += ("[redis]\nurl = redis://127.0.0.1:%d/0\nprefix = bench:\njobs = off\n"
                       "shared_limit = on\n" % redis.port)
        proxies = [self.sluice("shared-%s-%d" % (mode, i), static.port, "1000000/s", 1000000,
                               server, "max_depth = 1000000", "max_in_flight = 256")
                   for i in range(n)]
        for p in proxies:
            admin = "http://127.0.0.1:%d" % p.admin
            wait_for(lambda a=admin: '"status":"ok"' in _http_get(a + "/health"), 15, "health")
        before = [self.shared_counts(p) for p in proxies]
        runs = [None] * n

        def one(i, p):
            runs[i] = self.wrk("http://127.0.0.1:%d/x" % p.port, secs, threads=1,
                               conns=SHARED_CONNS)
        threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(proxies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = [self.shared_counts(p) for p in proxies]
        out = {"rps": sum(r["rps"] or 0 for r in runs),
               "p99_ms": max(r["p99_ms"] or 0 for r in runs),
               "bad": sum(r["errors"] + r["non2xx"] for r in runs)}
        if mode != "shared-mem":
            decisions = sum(a[0] - b[0] for a, b in zip(after, before))
            dispatched = sum(a[1] - b[1] for a, b in zip(after, before))
            out["decisions_per_s"] = decisions / secs
            out["per_decision"] = dispatched / decisions if decisions else None
            out["late"] = int(sum(a[2] - b[2] for a, b in zip(after, before)))
            out["rtt_p50_ms"] = self.shared_rtt_p50(proxies[0])
        self.stop(*proxies)
        self.stop(redis)
        return out

    def shared_counts(self, p):
        """(decisions, dispatches, late) of one instance, from its metrics."""
        text = _http_get("http://127.0.0.1:%d/metrics" % p.admin)
        decided = sum(_metric(text, 'sluice_shared_limit_decisions_total{result="%s"}' % r) or 0
                      for r in ("go", "wait", "error"))
        return (decided, _metric(text, 'sluice_dispatched_total{route="bench"}') or 0,
                _metric(text, 'sluice_shared_limit_decisions_total{result="late"}') or 0)

    def shared_rtt_p50(self, p):
        """The bucket bound under which half the decisions' round trips fell, in ms."""
        text = _http_get("http://127.0.0.1:%d/metrics" % p.admin)
        count = _metric(text, "sluice_shared_limit_roundtrip_seconds_count") or 0
        for le in ("0.001", "0.005", "0.01", "0.025", "0.05", "0.1"):
            v = _metric(text, 'sluice_shared_limit_roundtrip_seconds_bucket{le="%s"}' % le)
            if count and v is not None and v >= count / 2:
                return float(le) * 1000
        return None

    def shared_script_ceiling(self, secs):
        """EVALSHA of the script from redis-benchmark: Redis's own decisions per second."""
        redis = self.redis_server("shared-redis-script")
        with open(os.path.join(ROOT, "src", "shlimit.lua")) as f:
            text = f.read()
        cli = ["redis-cli", "-p", str(redis.port)]
        sha = subprocess.run(cli + ["SCRIPT", "LOAD", text], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        n = 20000 if self.quick else 100000
        # One route, k = 1, a limit that never binds: every call grants and records.
        argv = ["redis-benchmark", "-p", str(redis.port), "-c", "50", "-P", "16", "-n",
                str(n), "-q", "EVALSHA", sha, "3", "b:{r}:limit", "b:{r}:log", "b:{r}:turns",
                "0", "1", "1", "1", "0", "0", "50000", "86400000", "bench", "1",
                "1000000", "1000000", "5000"]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 120)
        self.stop(redis)
        m = re.search(r"([\d.]+) requests per second", cp.stdout)
        return {"decisions_per_s": float(m.group(1)) if m else None}

    def redis_server(self, name, pin=()):
        """A private redis-server on a free loopback port, no persistence files."""
        port = free_port()
        p = self.procs.start(name, list(pin) + [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.workdir])
        wait_for(lambda: not p.alive() or port_open(port), 15, name)
        if not p.alive():
            raise RuntimeError("%s exited: %s" % (name, p.stderr_tail()))
        p.port = port
        return p

    # Async intake: sluice is one thread, so it gets core 0 to itself and the
    # load generator (wrk, one thread), Redis and the upstream share core 1.
    # Unpinned, the scheduler moved them around and a run varied by 2x.
    JOBS_PIN_PROXY = ["taskset", "-c", "0"]
    JOBS_PIN_REST = ["taskset", "-c", "1"]
    JOBS_RATE = "100/s"
    JOBS_LUA = ('wrk.method = "POST"\n'
                'wrk.body = \'{"to":"user@example.com","text":"your order has shipped"}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                'wrk.headers["Prefer"] = "respond-async"\n')

    def jobs_column(self, mode, static, secs):
        """One mode, in three steps. Intake: the route is limited (100/s, the
        use case: work for a rate-limited API), so the accepted jobs wait (in
        the queue, or in Redis) and the 202 rate is the intake's alone. Then
        a reload lifts the limit and every accepted job runs: how long that
        takes. Then intake again while the jobs run as fast as they come."""
        pin = self.JOBS_PIN_PROXY if shutil.which("taskset") else []
        rest = self.JOBS_PIN_REST if pin else []
        server = "max_connections = 10000\n"
        if mode == "redis":
            redis = self.redis_server("jobs-redis", pin=rest)
            server += "[redis]\nurl = redis://127.0.0.1:%d/0\nprefix = bench:\n" % redis.port
        name = "jobs-" + mode
        proxy = self.sluice(name, static.port, self.JOBS_RATE, 1, server,
                            "max_depth = 1000000\nmax_bytes = 4g", "max_in_flight = 256",
                            valgrind=pin)
        conf = os.path.join(self.workdir, name + ".conf")
        script = os.path.join(self.workdir, "jobs.lua")
        with open(script, "w") as f:
            f.write(self.JOBS_LUA)
        admin = "http://127.0.0.1:%d" % proxy.admin
        wait_for(lambda: '"status":"ok"' in _http_get(admin + "/health"), 15, "health")
        url = "http://127.0.0.1:%d/job" % proxy.port

        def counts():
            st = json.loads(_http_get(admin + "/status"))["jobs"]
            return st["accepted"], st["queued"] + st["running"] + st.get("held", 0)

        def finished():
            """Jobs this instance ran to their end (the streams' own lengths are
            polled only every few seconds, too coarse to time the run)."""
            text = _http_get(admin + "/metrics")
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith('sluice_requests_total{route="bench",'))

        def drained():
            acc, live = counts()
            return live == 0 and finished() >= acc

        def children_cpu():
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return ru.ru_utime + ru.ru_stime

        def redis_cpu():
            return cpu_seconds(redis.pid) if mode == "redis" else 0.0

        def intake():
            cpu0, wrk0, redis0 = self.proxy_cpu(proxy), children_cpu(), redis_cpu()
            run = self.wrk(url, secs, threads=1, script=script, pin=rest)
            n = run["rps"] * secs if run["rps"] else None
            run["cpu_us"] = (self.proxy_cpu(proxy) - cpu0) * 1e6 / n if n else None
            # Is the load generator the limit? wrk is the only child waited for here.
            run["wrk_cpu_us"] = (children_cpu() - wrk0) * 1e6 / n if n else None
            run["redis_cpu_us"] = ((redis_cpu() - redis0) * 1e6 / n
                                   if n and mode == "redis" else None)
            return run

        run = intake()
        run["accepted"] = counts()[0]
        # Lift the limit (SIGHUP: parked jobs stay) and time until every job ran.
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(text.replace("rate = %s\nburst = 1\n" % self.JOBS_RATE,
                                 "rate = 1000000/s\nburst = 1000000\n"))
        t0 = time.monotonic()
        proxy.p.send_signal(signal.SIGHUP)
        wait_for(drained, 300, "jobs run")
        run["total_s"] = time.monotonic() - t0
        run["jobs_per_s"] = run["accepted"] / run["total_s"] if run["total_s"] else None
        # Intake while the jobs also run at once, on the same core.
        mixed = intake()
        wait_for(drained, 300, "jobs run")
        run["mixed_rps"] = mixed["rps"]
        run["mixed_cpu_us"] = mixed["cpu_us"]
        run["errors"] += mixed["errors"]
        run["non2xx"] += mixed["non2xx"]
        run["accepted_all"] = counts()[0]
        self.stop(proxy)
        if mode == "redis":
            self.stop(redis)
        return run

    def sc_jobs(self):
        """Async intake: how fast sluice answers Prefer: respond-async with 202, in
        memory and with Redis (each job stored before its 202), then how fast the
        accepted jobs run through an unlimited route to a static upstream."""
        secs = 2 if self.quick else 5
        pin = shutil.which("taskset") is not None
        static = self.static_upstream("jobs-static", pin=self.JOBS_PIN_REST if pin else None)
        data = {}
        for mode in ("memory", "redis"):
            self.progress("jobs: %s" % mode)
            data[mode] = self.jobs_column(mode, static, secs)
        self.stop(static)
        wrk = ("%swrk -t1 -c64 -d%ds --latency -s jobs.lua (POST, Prefer: respond-async)"
               % ("taskset -c 1 " if pin else "", secs))
        self.results["jobs"] = {"wrk": wrk, "pinned": pin, "targets": data}
        rows = [("202s per second (route at %s)" % self.JOBS_RATE, "rps", _f0),
                ("202 latency p50 ms", "p50_ms", _f2), ("202 latency p99 ms", "p99_ms", _f2),
                ("proxy CPU us / 202", "cpu_us", _f2),
                ("wrk CPU us / request (core 1)", "wrk_cpu_us", _f2),
                ("redis-server CPU us / 202 (core 1)", "redis_cpu_us", _f2),
                ("jobs accepted", "accepted", _d),
                ("then, limit lifted: all ran in s", "total_s", _f2),
                ("jobs run per second", "jobs_per_s", _f0),
                ("202s per second while jobs run", "mixed_rps", _f0),
                ("proxy CPU us / 202, jobs running", "mixed_cpu_us", _f2),
                ("socket errors", "errors", _d), ("non-2xx", "non2xx", _d)]
        notes = ["wrk: %s; POST of a 46-byte JSON body" % wrk,
                 ("pinned: sluice (one thread) alone on core 0; wrk (one thread), "
                  "redis-server and the upstream on core 1" if pin else
                  "not pinned: taskset is missing"),
                 "intake: route rate %s, so the jobs wait (in the queue, or in Redis) and the "
                 "202 rate is the intake's alone; queue 1000000 / 4g, max_in_flight 256"
                 % self.JOBS_RATE,
                 "then a reload (SIGHUP) sets the rate to 1000000/s and every accepted job "
                 "runs through nginx (1 worker, return 200 \"ok\"); then intake again with "
                 "the jobs running as they come, on the same core",
                 "Redis mode: one MULTI (record + XADD) per 202, acknowledged before the 202; "
                 "the jobs are read back with XREADGROUP, run, stored, acknowledged and "
                 "deleted",
                 "no nginx column: nginx has no asynchronous intake"]
        goals = {"rps": "memory >= 50000, Redis >= 20000 (issue 10)"}
        self.table("8. Async intake: 64 clients POST with Prefer: respond-async for %ds" % secs,
                   rows, data, goals, columns=["memory", "redis"], notes=notes)
        for mode, want in (("memory", 50000), ("redis", 20000)):
            rps = data[mode]["rps"] or 0
            self.check("jobs", "%s: at least %d 202s per second" % (mode, want), rps >= want,
                       "%.0f per second" % rps)
        for mode in ("memory", "redis"):
            d = data[mode]
            self.check("jobs", "%s: no errors, every 202 a job that ran" % mode,
                       d["errors"] == 0 and d["non2xx"] == 0 and d["accepted"] > 0,
                       "%s accepted, %d errors, %d non-2xx" % (d["accepted"], d["errors"],
                                                              d["non2xx"]))

    def sc_cpu(self):
        lo, hi = (100, 600) if self.quick else (200, 2200)
        static = self.static_upstream("cpu-static")
        data = {}
        for kind in ("sluice", "nginx-1"):
            self.progress("cpu: %s under callgrind" % kind)
            ir = {m: self.callgrind(kind, static.port, m) for m in (lo, hi)}
            data[kind] = {"ir_low": ir[lo], "ir_high": ir[hi],
                          "ir_per_request": (ir[hi] - ir[lo]) / (hi - lo)}
        self.stop(static)
        data["nginx-1"]["note"] = "master_process off (one process)"
        ratio = _ratio(data["sluice"]["ir_per_request"], data["nginx-1"]["ir_per_request"])
        data["sluice"]["x_nginx1"] = ratio
        self.results["cpu"] = {"method": "valgrind --tool=callgrind, Ir(%d) - Ir(%d) "
                               "requests, divided by %d" % (hi, lo, hi - lo),
                               "client": "burst -c 8 keep-alive", "targets": data}
        rows = [("instructions / request", "ir_per_request", _f0),
                ("x nginx (1 worker)", "x_nginx1", _f2),
                ("Ir, %d requests" % lo, "ir_low", _d), ("Ir, %d requests" % hi, "ir_high", _d)]
        self.table("8. CPU cost: instructions per proxied request (callgrind; %d - %d "
                   "requests over 8 keep-alive connections, static upstream)" % (hi, lo),
                   rows, data, {"ir_per_request": "<= nginx"}, ["sluice", "nginx-1"],
                   notes=["user-space instructions of the proxy process only (callgrind "
                          "Ir); nginx with master_process off"])
        self.check("cpu", "instructions per request <= nginx", (ratio or 99) <= 1.0,
                   "%s vs nginx %s (%sx)" % (_f0(data["sluice"]["ir_per_request"]),
                                             _f0(data["nginx-1"]["ir_per_request"]),
                                             _f2(ratio or 0)))

    def sc_keys(self):
        """limit_key with 100,000 keys, each sent once: what a key costs in
        memory (sluice's RSS and its own count) and in time (requests and
        limiter decisions per second, CPU per request, against the same
        requests on a route without keys), and how soon idle keys go."""
        n = 20000 if self.quick else 100000
        mock = self.mock("keys-mock")
        plain_route = ("[route plain]\nmatch = /plain\nupstream = http://127.0.0.1:%d\n"
                       "rate = 1000000/s\nmax_in_flight = 64\n" % mock.port)
        p = self.sluice("keys", mock.port, "0.04/s",
                        route="limit_key = header:X-Seq\nmax_keys = %d\nmax_in_flight = 64\n%s"
                        % (n, plain_route))
        url = "http://127.0.0.1:%d" % p.port
        data = {}
        try:
            self.burst("keys-warm", url + "/plain", 5000, 8, max_seconds=120)
            for kind, path in (("plain", "/plain"), ("keyed", "/k")):
                self.progress("keys: %d requests, %s" % (n, kind))
                rss0, cpu0 = rss_kb(p.pid), self.proxy_cpu(p)
                summary, _ = self.burst("keys-" + kind, url + path, n, 8, "--seq",
                                        max_seconds=600)
                if summary["status"].get("200") != n:
                    raise RuntimeError("keys %s: not all %d answered 200: %s"
                                       % (kind, n, summary))
                d = {"rps": summary["rate"],
                     "cpu_us": (self.proxy_cpu(p) - cpu0) * 1e6 / n,
                     "rss_added_kb": rss_kb(p.pid) - rss0}
                data[kind] = d
            k = data["keyed"]
            text = _http_get("http://127.0.0.1:%d/metrics" % p.admin)
            k["live"] = _metric(text, 'sluice_keys{route="bench"}')
            k["table_bytes"] = _metric(text, 'sluice_keys_bytes{route="bench"}')
            k["rss_per_key"] = k["rss_added_kb"] * 1024 / n
            k["table_per_key"] = k["table_bytes"] / n
            k["decisions_per_s"] = k["rps"]
            t0 = time.monotonic()
            wait_for(lambda: _metric(_http_get("http://127.0.0.1:%d/metrics" % p.admin),
                                     'sluice_keys{route="bench"}') == 0, 90,
                     "every key evicted", interval=0.5)
            k["evicted_after_s"] = time.monotonic() - t0
            k["x_plain_cpu"] = _ratio(k["cpu_us"], data["plain"]["cpu_us"])
        finally:
            self.stop(p, mock)
        self.results["keys"] = {"keys": n, "limit": "0.04/s per key (a key lives 25 s)",
                                "client": "burst -c 8 keep-alive, X-Seq: 0..n-1",
                                "targets": data}
        rows = [("requests/s", "rps", _f0), ("limiter decisions/s (one per request)",
                                              "decisions_per_s", _f0),
                ("proxy CPU us / request", "cpu_us", _f2),
                ("  x without keys", "x_plain_cpu", _f2),
                ("RSS added KB", "rss_added_kb", _d), ("live keys at the end", "live", _d),
                ("RSS bytes per key", "rss_per_key", _f1),
                ("keys table bytes per key", "table_per_key", _f1),
                ("s until every key evicted", "evicted_after_s", _f1)]
        self.table("9. Keys: %d requests over 8 keep-alive connections, each a new "
                   "limit_key value (0.04/s per key), and the same on a route without keys"
                   % n, rows, data, {"rss_per_key": "<= 64", "table_per_key": "<= 64"},
                   ["plain", "keyed"], notes=[
                       "a request of a new key creates it (hash, TAT, links), a request of "
                       "the route without keys only meets its limiter; keys are evicted 25 s "
                       "after their dispatch, by a timer (at most 1024 per event)"])
        k = data["keyed"]
        self.check("keys", "<= 64 bytes of RSS per key", k["rss_per_key"] <= 64,
                   _f1(k["rss_per_key"]) + " bytes")
        self.check("keys", "every key evicted after its window", k["evicted_after_s"] < 60,
                   _f1(k["evicted_after_s"]) + " s")

    def callgrind(self, kind, upstream, n):
        """Total instructions of one proxy process serving n requests."""
        out = os.path.join(self.workdir, "callgrind-%s-%d.out" % (kind, n))
        vg = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
        name = "cpu-%s-%d" % (kind, n)
        if kind == "sluice":
            p = self.sluice(name, upstream, "1000000/s", 1000000, route="max_in_flight = 64",
                            valgrind=vg, start_timeout=120)
        else:
            p = self.nginx_proxy(name, 1, upstream, 1000000, 1000000, master=False,
                                 valgrind=vg, start_timeout=120)
        try:
            summary, _res = self.burst(name + "-burst", "http://127.0.0.1:%d/" % p.port,
                                       n, 8, max_seconds=600)
            if summary["status"].get("200") != n:
                raise RuntimeError("%s: not all %d answered 200: %s" % (name, n, summary))
        finally:
            rc = self.procs.stop(p, timeout=120)
        if rc not in (0,):
            raise RuntimeError("%s exited %s under callgrind: %s" % (name, rc, p.stderr_tail()))
        return _callgrind_total(out)

    def sc_jitter(self):
        n, rate = (150 if self.quick else 500), 50
        runs = {kind: {} for kind in JITTER_COLUMNS}
        for ms in JITTER_MS:
            for kind in JITTER_COLUMNS:
                self.progress("jitter 0-%d ms: %s" % (ms, kind))
                runs[kind][str(ms)] = self.jitter_run(kind, ms, rate, n)
        self.results["jitter"] = {"requests": n, "limit": "%d/s" % rate,
                                  "jitter_ms": JITTER_MS, "nginx_queue": 100000,
                                  "realtime": bool(RT_PRIORITY), "targets": runs}
        data = {kind: {"%s@%s" % (key, ms): v for ms, d in by_ms.items()
                       for key, v in d.items()} for kind, by_ms in runs.items()}
        rows, goals = jitter_rows(n, rate)
        self.table("9. Jitter: %d requests at once, limit %d/s, burst 1; a relay delays each "
                   "request by a random 0-X ms on its way to the upstream, which 429s beyond "
                   "%d/s" % (n, rate, rate), rows, data, goals, JITTER_COLUMNS,
                   notes=JITTER_NOTES + ["the mock and the relay ran at %s" % (
                       "real-time priority (chrt -f 20)" if RT_PRIORITY
                       else "normal priority (not root)")])
        for ms in JITTER_MS:
            self.jitter_checks(runs["sluice-jp"][str(ms)], "jitter_proof", ms, 90.0)
        self.jitter_checks(runs["sluice"]["0"], "default", 0, 99.0)

    def jitter_run(self, kind, ms, rate, n):
        """One column at one jitter: a backlog of n at rate through the relay."""
        route = "jitter_proof = on" if kind == "sluice-jp" else ""
        arr, _s, res = self.flow("sluice" if kind == "sluice-jp" else kind,
                                 "jitter%d-%s" % (ms, kind), rate, n, 200, 100000,
                                 ["--rate", "%d/s" % rate], relay_ms=ms, sluice_route=route)
        d = self.flow_metrics(arr, res, rate, n, True)
        d["over_limit"] = max(0, d["max_1s"] - rate)
        return d

    def jitter_checks(self, d, mode, ms, utilization):
        what = "sluice %s at 0-%d ms jitter" % (mode, ms)
        self.check("jitter", "%s: 0 window violations" % what,
                   d["over_limit"] == 0 and d["upstream_429"] == 0,
                   "max %d in 1 s, %d answered 429" % (d["max_1s"], d["upstream_429"]))
        self.check("jitter", "%s: utilization >= %.0f%%" % (what, utilization),
                   (d["utilization_pct"] or 0) >= utilization, _f1(d["utilization_pct"]))

    def sc_https(self):
        """sc_overhead's measure with a TLS upstream: the mock with a
        certificate from a throwaway CA that every column trusts."""
        secs, rounds = (2, 1) if self.quick else (5, OVERHEAD_ROUNDS)
        ca, cert, key = make_pki(self.workdir)
        mock = self.mock("https-mock", "--tls-cert", cert, "--tls-key", key, log=False)
        runs = {kind: [] for kind in COLUMNS}
        for r in range(rounds):
            for kind in COLUMNS:
                self.progress("https: %s, round %d of %d" % (kind, r + 1, rounds))
                runs[kind].append(self.https_run(kind, r, mock, ca, secs))
        self.stop_mock(mock)
        data = {kind: _median_runs(runs[kind], HTTPS_KEYS) for kind in COLUMNS}
        for d in data.values():
            d["x_nginx1"] = _ratio(d["rps"], data["nginx-1"]["rps"])
            d["cpu_x_nginx1"] = _ratio(d["cpu_us"], data["nginx-1"]["cpu_us"])
        self.results["https"] = {"wrk": "-t2 -c64 -d%ds --latency" % secs, "rounds": rounds,
                                 "statistic": "median of the rounds",
                                 "upstream": "mock_upstream over TLS, test CA",
                                 "targets": data}
        rows = [("requests/s (median)", "rps", _f0), ("requests/s, each round", "rps_runs",
                                                      _runs),
                ("x nginx (1 worker)", "x_nginx1", _f2),
                ("proxy CPU us / request", "cpu_us", _f2),
                ("  x nginx (1 worker)", "cpu_x_nginx1", _f2),
                ("latency p50 ms", "p50_ms", _f2), ("latency p99 ms", "p99_ms", _f2),
                ("TLS handshakes / 1,000 requests", "hs_per_k", _f2),
                ("  at the upstream (mock)", "mock_hs_per_k", _f2),
                ("socket errors", "errors", _d), ("non-2xx", "non2xx", _d)]
        self.table("10. HTTPS upstream: wrk -t2 -c64 -d%ds, %d interleaved rounds (medians), "
                   "limit effectively unlimited, TLS mock upstream" % (secs, rounds),
                   rows, data, {"x_nginx1": ">= 0.90", "hs_per_k": "<= 5"},
                   notes=HTTPS_NOTES)
        s = data["sluice"]
        self.check("https", "req/s >= 0.9x nginx (1 worker)", (s["x_nginx1"] or 0) >= 0.9,
                   "%s req/s = %sx nginx" % (_f0(s["rps"] or 0), _f2(s["x_nginx1"])))
        self.check("https", "TLS handshakes per 1,000 requests <= 5",
                   s["hs_per_k"] is not None and s["hs_per_k"] <= 5, _f2(s["hs_per_k"]))

    def https_run(self, kind, rnd, mock, ca, secs):
        """One wrk round of one column against the TLS mock, whose counters
        are reset first: its arrivals and handshakes are this column's."""
        _https(mock.port, ca, "/_mock/reset", post=True)
        proxy, url = self.target(kind, "https-%s-%d" % (kind, rnd), mock.port, 1000000,
                                 1000000, ca=ca, sluice_burst=1000000,
                                 sluice_route="max_in_flight = 1024",
                                 sluice_server="max_connections = 10000")
        try:
            run = self.wrk_round(proxy, url, secs)
            stats = json.loads(_https(mock.port, ca, "/_mock/stats"))
            if kind == "sluice":
                run["handshakes"] = _metric(_http_get("http://127.0.0.1:%d/metrics"
                                                      % proxy.admin),
                                            "sluice_upstream_tls_handshakes_total")
        finally:
            self.stop(proxy)
        run["arrivals"] = stats["arrivals"]
        run["mock_handshakes"] = stats["tls_handshakes"] - 1  # the stats request's own
        run["mock_hs_per_k"] = _per_k(run["mock_handshakes"], run["arrivals"])
        run["hs_per_k"] = _per_k(run.get("handshakes"), run["arrivals"])
        return run

    # ---- download: one large body through each proxy ----------------------------

    def haproxy(self, name, upstream):
        """HAProxy in http mode in the foreground (-db), one backend server."""
        port = free_port()
        conf = os.path.join(self.workdir, name + ".cfg")
        with open(conf, "w") as f:
            f.write("global\n  maxconn 4096\n"
                    "defaults\n  mode http\n  timeout connect 5s\n"
                    "  timeout client 300s\n  timeout server 300s\n"
                    "frontend fe\n  bind 127.0.0.1:%d\n  default_backend be\n"
                    "backend be\n  server up 127.0.0.1:%d\n" % (port, upstream))
        p = self.procs.start(name, ["haproxy", "-db", "-f", conf])
        wait_for(lambda: not p.alive() or port_open(port), 15, name)
        if not p.alive():
            raise RuntimeError("%s exited: %s" % (name, p.stderr_tail()))
        p.port, p.pids = port, lambda: [p.pid]
        return p

    def download_proxy(self, kind, name, upstream):
        """One column's proxy in front of the mock, plain: no limit in the way."""
        if kind == "direct":
            return None, "http://127.0.0.1:%d" % upstream
        if kind == "sluice":
            p = self.sluice(name, upstream, "1000000/s", 1000000,
                            route="max_in_flight = 1024\ntimeout = 600s")
        elif kind == "haproxy":
            p = self.haproxy(name, upstream)
        else:
            port = free_port()
            # nginx's defaults: proxy_buffering on, so a body the client does
            # not take at once goes to temp files (up to 1024m), not memory.
            body = ("  server {\n    listen 127.0.0.1:%d;\n    location / {\n"
                    "      proxy_pass http://127.0.0.1:%d;\n"
                    "      proxy_http_version 1.1;\n      proxy_read_timeout 300s;\n"
                    "    }\n  }\n" % (port, upstream))
            p = self.nginx(name, 1, body, port)
            p.tmp = os.path.join(self.workdir, name)
        return p, "http://127.0.0.1:%d" % p.port

    def curl_get(self, url, size, timeout=600):
        """curl -o /dev/null: (status, bytes, seconds, seconds to first byte)."""
        cp = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", str(timeout),
                             "-H", "X-Mock-Body-Size: %d" % size, "-w",
                             "%{http_code} %{size_download} %{time_total} "
                             "%{time_starttransfer}", url],
                            capture_output=True, text=True, timeout=timeout + 30)
        code, got, total, first = cp.stdout.split()
        return int(code), int(got), float(total), float(first)

    def download_run(self, kind, rnd, mock, size):
        proxy, url = self.download_proxy(kind, "download-%s-%d" % (kind, rnd), mock.port)
        try:
            self.curl_get(url + "/warm", 100000)
            rss0 = sum(rss_kb(pid) for pid in proxy.pids()) if proxy else None
            code, got, total, first = self.curl_get(url + "/big", size)
            hwm = sum(_hwm_kb(pid) for pid in proxy.pids()) if proxy else None
            temp = None
            if kind == "nginx-1":
                temp = _read(os.path.join(proxy.tmp, "error.log")).count(
                    "buffered to a temporary file")
        finally:
            self.stop(proxy)
        if (code, got) != (200, size):
            raise RuntimeError("%s: status %d, %d of %d bytes" % (kind, code, got, size))
        run = {"seconds": total, "mb_s": size / total / 1e6, "ttfb_ms": first * 1000}
        if hwm is not None:
            run["hwm_mib"] = hwm / 1024
            run["added_mib"] = (hwm - rss0) / 1024
        if temp is not None:
            run["temp_files"] = temp
        return run

    def sc_download(self):
        """A body of 1 GiB (256 MiB --quick) generated by the mock as it is
        written, fetched with curl -o /dev/null directly and through each
        proxy; each proxy started afresh per round so VmHWM is this body's."""
        size, rounds = (256 << 20, 1) if self.quick else (1 << 30, 3)
        columns = ["sluice", "nginx-1", "haproxy", "direct"]
        if shutil.which("haproxy") is None:
            columns.remove("haproxy")
        mock = self.mock("download-mock", log=False)
        runs = {kind: [] for kind in columns}
        for r in range(rounds):
            for kind in columns:
                self.progress("download: %s, round %d of %d" % (kind, r + 1, rounds))
                runs[kind].append(self.download_run(kind, r, mock, size))
        self.stop_mock(mock)
        data = {}
        for kind in columns:
            d = {}
            for key in runs[kind][0]:
                d[key] = statistics.median(x[key] for x in runs[kind])
            d["mb_s_runs"] = [x["mb_s"] for x in runs[kind]]
            d["hwm_max_mib"] = max((x.get("hwm_mib") or 0) for x in runs[kind]) or None
            data[kind] = d
        for d in data.values():
            d["x_direct"] = _ratio(d["mb_s"], data["direct"]["mb_s"])
        self.results["download"] = {"size": size, "rounds": rounds, "client": "curl -o /dev/null",
                                    "statistic": "median of the rounds; peak RSS: the largest",
                                    "targets": data}
        rows = [("MB/s (median)", "mb_s", _f0), ("MB/s, each round", "mb_s_runs",
                                                        lambda v: "/".join("%.0f" % x for x in v)),
                ("x direct", "x_direct", _f2), ("seconds", "seconds", _f2),
                ("time to first byte ms", "ttfb_ms", _f1),
                ("peak RSS MiB (VmHWM, largest)", "hwm_max_mib", _f1),
                ("  added by the download MiB", "added_mib", _f1),
                ("nginx: bodies buffered to temp files", "temp_files", _d)]
        notes = ["upstream: mock_upstream, X-Mock-Body-Size (pattern generated as written, "
                 "Content-Length), no arrival log; client: curl -o /dev/null on 127.0.0.1",
                 "sluice: rate 1000000/s, max_in_flight 1024, timeout 600s; nginx: 1 worker, "
                 "plain proxy_pass with its defaults (proxy_buffering on: what the client has "
                 "not taken yet goes to temp files, up to proxy_max_temp_file_size 1024m, "
                 "counted from its error log); HAProxy: http mode, defaults",
                 "peak RSS: VmHWM of the proxy's processes (nginx: its worker), each proxy "
                 "started afresh per round; added: VmHWM minus VmRSS after a 100 kB warm-up"]
        goals = {"x_direct": ">= 0.50", "hwm_max_mib": "<= nginx (1 worker)"}
        self.table("11. Download: %d MiB through each proxy, %d interleaved rounds (medians)"
                   % (size >> 20, rounds), rows, data, goals, columns=columns, notes=notes)
        s, ng = data["sluice"], data["nginx-1"]
        self.check("download", "throughput >= 0.5x direct", (s["x_direct"] or 0) >= 0.5,
                   "%s MB/s = %sx direct" % (_f0(s["mb_s"]), _f2(s["x_direct"] or 0)))
        self.check("download", "peak RSS <= nginx (1 worker)",
                   s["hwm_max_mib"] <= ng["hwm_max_mib"],
                   "%.1f MiB vs nginx %.1f MiB" % (s["hwm_max_mib"], ng["hwm_max_mib"]))

    # ---- plots -------------------------------------------------------------------

    def plot(self, name, series, rate, title):
        """Cumulative upstream arrivals over time, one line per column; below,
        how far each line runs ahead of (+) or behind (-) the limit."""
        if shutil.which("gnuplot") is None:
            self.say("  (no gnuplot: %s.png not drawn)" % name)
            return
        top, low = [], []
        for kind in COLUMNS:
            times = series.get(kind) or []
            if not times:
                continue
            path = os.path.join(self.out, "%s-%s.dat" % (name, kind))
            with open(path, "w") as f:
                for t, c in A.cumulative(times, min(times)):
                    f.write("%.6f %d %.3f\n" % (t, c, c - 1 - rate * t))
            top.append("'%s' using 1:2 with steps lw 2 title '%s'" % (path, TITLES[kind]))
            low.append("'%s' using 1:3 with steps lw 2 notitle" % path)
        top.append("1 + %d*x with lines dt 2 lc rgb 'black' title 'limit %d/s'" % (rate, rate))
        low.append("0 with lines dt 2 lc rgb 'black' notitle")
        png = os.path.join(self.out, name + ".png")
        script = "\n".join([
            "set terminal pngcairo size 1000,800",
            "set output '%s'" % png,
            "set multiplot layout 2,1 title '%s'" % title,
            "set key left top", "set grid", "set xrange [0:*]",
            "set ylabel 'upstream arrivals (cumulative)'", "set yrange [0:*]",
            "plot " + ", \\\n  ".join(top),
            "set xlabel 'seconds since the first upstream arrival'",
            "set ylabel 'arrivals ahead of the limit'", "set yrange [-10<*:*<5]",
            "plot " + ", \\\n  ".join(low),
            "unset multiplot", ""])
        cp = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True,
                            timeout=60)
        if cp.returncode != 0:
            self.say("  (gnuplot failed: %s)" % cp.stderr.strip()[-300:])
        else:
            self.say("  plot: %s" % os.path.relpath(png, ROOT))

    # ---- report --------------------------------------------------------------------

    def machine(self):
        def cmd(argv):
            try:
                cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                return (cp.stdout + cp.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return None
        model = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
                "nginx": cmd(["nginx", "-v"]),
                "wrk": (cmd(["wrk", "-v"]) or "").split(" Copyright")[0],
                "valgrind": cmd(["valgrind", "--version"]),
                "sluice": cmd([self.sluice_bin, "-V"]),
                "memory_mb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20}

    def report(self, names, started):
        missed = [c for c in self.checks if not c["ok"]]
        self.say()
        self.say("Targets sluice misses: %s" % ("none" if not missed else len(missed)))
        for c in missed:
            self.say("  - %s: %s (measured: %s)" % (c["scenario"], c["target"], c["measured"]))
        doc = {"date": started, "quick": self.quick, "scenarios": names,
               "machine": self.machine(), "results": self.results, "checks": self.checks,
               "seconds": round(time.monotonic() - self.t0, 1)}
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
        self.say("\nwrote %s" % os.path.relpath(os.path.join(self.out, "results.json"), ROOT))
        if not self.quick and names == SCENARIOS:
            self.write_summary(doc)
        return 0 if not any(c["target"] == "scenario ran" for c in missed) else 1

    def write_summary(self, doc):
        m = doc["machine"]
        lines = ["# sluice vs nginx limit_req: latest full run", "",
                 "Written by `bench/run.sh` on %s (%s s)." % (doc["date"], doc["seconds"]), "",
                 "Machine: %s CPUs, %s, %s MB, Linux %s; %s; %s; %s." % (
                     m["nproc"], m["cpu"], m["memory_mb"], m["kernel"], m["nginx"],
                     m["wrk"], m["sluice"]), "", "```"]
        lines += self.text
        lines += ["```", ""]
        with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
            f.write("\n".join(lines))
        self.say("wrote bench/RESULTS.md")


FLOW_ROWS = [
    ("delivered (200)", "delivered", lambda v: "%d" % v),
    ("not delivered", "errors", lambda v: "%d" % v),
    ("  rejected 503", "rejected_503", lambda v: "%d" % v),
    ("  429 passed through", "passed_429", lambda v: "%d" % v),
    ("  other (timeouts, 5xx)", "other_errors", lambda v: "%d" % v),
    ("upstream arrivals", "upstream_arrivals", lambda v: "%d" % v),
    ("  answered 429 by upstream", "upstream_429", lambda v: "%d" % v),
    ("max arrivals in any 1 s", "max_1s", lambda v: "%d" % v),
    ("window violations", "violations", lambda v: "%d" % v),
    ("achieved rate /s", "achieved_rps", lambda v: "%.2f" % v),
    ("utilization %", "utilization_pct", lambda v: "%.2f" % v),
    ("FIFO inversions", "inversions", lambda v: "%d" % v),
    ("latency p50 ms (200s)", "p50_ms", lambda v: "%.0f" % v),
    ("latency p99 ms (200s)", "p99_ms", lambda v: "%.0f" % v),
    ("upstream span s", "span_s", lambda v: "%.2f" % v),
]


def jitter_rows(n, rate):
    """Table rows and targets of the jitter scenario, per jitter value."""
    rows, goals = [], {}
    for ms in JITTER_MS:
        rows += [("0-%d ms: delivered (200) of %d" % (ms, n), "delivered@%d" % ms, _d),
                 ("  arrivals over %d in the fullest 1 s" % rate, "over_limit@%d" % ms, _d),
                 ("  answered 429 by upstream", "upstream_429@%d" % ms, _d),
                 ("  utilization %", "utilization_pct@%d" % ms, _f2)]
        who = "both sluice modes" if ms == 0 else "jitter_proof"
        goals["over_limit@%d" % ms] = goals["upstream_429@%d" % ms] = "0 (%s)" % who
        goals["utilization_pct@%d" % ms] = (">= 99 (default), >= 90 (jitter_proof)"
                                            if ms == 0 else ">= 90 (jitter_proof)")
    return rows, goals


JITTER_NOTES = [
    "the relay (tests/tools/jitter_relay, seed 1) delays each chunk from proxy to "
    "upstream by a uniform random 0-X ms, keeping each connection's byte order; answers "
    "come back at once",
    "sluice: window_guard 5ms (default); jitter_proof = on dates each dispatch by its "
    "answer. nginx: limit_req rate=50r/s burst=100000 (delay mode), keepalive upstream",
    "arrivals over the limit: the most upstream arrivals (any status) in any 1 s window of the "
    "mock's clock, minus the limit; utilization: upstream arrivals per second from the "
    "first to the last, over the limit",
]

HTTPS_KEYS = ("hs_per_k", "mock_hs_per_k")

HTTPS_NOTES = [
    "upstream: mock_upstream with --tls-cert (EC P-256, a throwaway CA), no arrival log; "
    "sluice: upstream = https://, ca_file = the CA, rate 1000000/s, max_in_flight 1024; "
    "nginx: proxy_pass https:// to a keepalive upstream, proxy_ssl_session_reuse on, "
    "proxy_ssl_verify on with the CA (name localhost), TLSv1.2 and TLSv1.3; "
    "direct: wrk over TLS to the mock",
    "TLS handshakes: sluice_upstream_tls_handshakes_total over the proxy's life (warm-up "
    "included) per 1,000 upstream arrivals; at the upstream: the mock's completed "
    "handshakes (resumed ones too) per 1,000 arrivals, for every column",
]


def nginx_tls(ca):
    """nginx directives for an https:// upstream whose certificate ca signed."""
    if not ca:
        return ""
    return ("      proxy_ssl_session_reuse on;\n"
            "      proxy_ssl_verify on;\n"
            "      proxy_ssl_trusted_certificate %s;\n"
            "      proxy_ssl_name localhost;\n"
            "      proxy_ssl_protocols TLSv1.2 TLSv1.3;\n" % ca)


def abandon_metrics(arrivals, outcome, rate):
    """outcome: {(path, index): "200" | "abandoned" | ...}.
    Idle slots: dispatch slots at the limit between the first upstream arrival
    and the last one a client received, minus the requests clients received -
    a slot spent on a client already gone, or held for one and left empty,
    both count. Ideal completion: (delivered - 1) / rate."""
    got = [a[0] for a in arrivals if outcome.get((a[3], a[1])) == "200"]
    delivered = sum(1 for o in outcome.values() if o == "200")
    t0 = min(a[0] for a in arrivals) if arrivals else 0
    span = (max(got) - t0) / 1e6 if got else None
    return {"delivered": delivered,
            "abandoned": sum(1 for o in outcome.values() if o == "abandoned"),
            "upstream_arrivals": len(arrivals),
            "to_gone": sum(1 for a in arrivals if outcome.get((a[3], a[1])) == "abandoned"),
            "idle_slots": (int(round(span * rate)) + 1 - delivered) if got else None,
            "completion_s": span, "ideal_s": max(delivered - 1, 0) / rate}


FLOW_NOTES = [
    "window violations: upstream arrivals (any status) that made some 1 s window hold "
    "more than the limit, on the upstream's clock; the mock answers 429 only past its "
    "own count of admitted requests, so it rejects fewer",
]


def _hwm_kb(pid):
    """VmHWM (peak RSS) of pid in KiB, 0 when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""


def _http_get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode("utf-8", "replace")


def _https(port, ca, path, post=False):
    """GET (or an empty POST) to a control endpoint of the TLS mock."""
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (port, path),
                                 data=b"" if post else None)
    ctx = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        return r.read().decode("utf-8", "replace")


def _metric(text, name):
    """The sum of a metric's samples (every label set) in Prometheus text."""
    total = None
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total


def _per_k(count, requests):
    return 1000.0 * count / requests if count is not None and requests else None


def _callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in %s" % path)


def _metric(text, series):
    """The value of one exact series line of a Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _median_runs(runs, extra=()):
    """Per figure, the median of the runs (errors add up); rps_runs keeps them all."""
    out = {"rps_runs": [r["rps"] for r in runs]}
    for key in ("rps", "p50_ms", "p99_ms", "cpu_us") + tuple(extra):
        vals = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.median(vals) if vals else None
    for key in ("errors", "non2xx"):
        out[key] = sum(r[key] for r in runs)
    return out


def _runs(v):
    return "/".join("%.0fk" % (x / 1000) for x in v if x is not None)


def _d(v):
    return "%d" % v


def _f0(v):
    return "%.0f" % v


def _f1(v):
    return "-" if v is None else "%.1f" % v


def _f2(v):
    return "-" if v is None else "%.2f" % v


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help="one or more of: " + " ".join(SCENARIOS) + " (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller, shorter runs")
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"),
                    help="build directory with sluice and the test tools")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    opts = ap.parse_args(argv)
    names = opts.scenarios or list(SCENARIOS)
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        ap.error("unknown scenario %s; choose from %s" % (", ".join(bad), " ".join(SCENARIOS)))
    names = [n for n in SCENARIOS if n in names]

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    b = Bench(opts)
    b.t0 = time.monotonic()
    os.makedirs(b.out, exist_ok=True)
    b.stub = "stub_status" in subprocess.run(["nginx", "-V"], capture_output=True,
                                             text=True).stderr
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        b.say("sluice vs nginx limit_req on %s (%d CPUs)%s" % (
            b.machine()["cpu"], os.cpu_count(), ", quick mode" if opts.quick else ""))
        b.run(names)
        rc = b.report(names, started)
    except KeyboardInterrupt:
        rc = 130
    finally:
        b.procs.stop_all()
        if opts.keep:
            print("work directory kept: %s" % b.workdir, file=sys.stderr)
        else:
            shutil.rmtree(b.workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
