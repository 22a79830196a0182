"""Shared limits ([redis] shared_limit = on): several sluice instances on one
Redis prefix keep one strict limit together, decided by one Lua script on
Redis's clock. Each test starts its own redis-server on a loopback port (no
persistence files). Every timing check reads the mock upstream's log (its
own clock), never the test process's clock.

The script is also run on its own (test_script_*), through a minimal RESP
client: thousands of decisions, every instant checked against every limit."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import (Proc, SluiceTestCase, free_port, max_in_window, port_open, read_arrivals,
                     route, wait_for)

REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src",
                      "shlimit.lua")
SEC = 1_000_000
GUARD = 5_000          # the default window_guard


class Resp:
    """Just enough RESP for EVAL: arrays of bulk strings out, replies in."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.s.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)

    def close(self):
        self.f.close()
        self.s.close()


@unittest.skipUnless(os.path.exists(REDIS_BIN), "redis-server is not installed")
class SharedLimitTest(SluiceTestCase):

    def start_redis(self, port=None):
        port = port or free_port()
        argv = [REDIS_BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.workdir]
        proc = Proc("redis", argv, self.workdir)
        self.procs.insert(0, proc)      # stopped last
        wait_for(lambda: port_open(port), what="redis-server on %d" % port)
        proc.port = port
        self.redis = proc
        return proc

    def redis_cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.redis.port)] + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def start_instances(self, mock, n, rate="30/s", extra=""):
        redis = ("access_log = off\n[redis]\nurl = redis://127.0.0.1:%d/0\nprefix = t:\n"
                 "jobs = off\nshared_limit = on\n" % self.redis.port)
        out = []
        for i in range(n):
            s = self.start_sluice(route(upstream_port=mock.port, rate=rate, extra=extra),
                                  server=redis, name="sluice%d" % i)
            out.append(s)
        for s in out:
            wait_for(lambda s=s: self.request(s.admin, "GET", "/health")[0] == 200,
                     timeout=10, what="sluice connected to redis")
        return out

    def bursts(self, instances, n, timeout=120):
        """n requests into each instance at once (path /s<i>); [(summary, rows)]."""
        results = [None] * len(instances)

        def run(i, s):
            results[i] = self.burst("http://127.0.0.1:%d/s%d" % (s.port, i), n, n,
                                    "--timeout", str(timeout), timeout=timeout)
        threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(instances)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=timeout + 60)
        self.assertTrue(all(r is not None for r in results), "a burst did not finish")
        return results

    def assert_all_2xx(self, results, n):
        for summary, rows in results:
            self.assertEqual(summary["total"], n, summary)
            self.assertEqual(summary["status"], {"200": n}, summary)

    def arrivals(self, mock):
        """(instant_us, instance index) of every request the mock admitted."""
        out = []
        for row in read_arrivals(mock.log):
            if row[3] == 200 and row[4].startswith("/s"):
                out.append((row[0], int(row[4][2:].split("?")[0].split("/")[0])))
        return sorted(out)

    def metric(self, s, name, **labels):
        status, _, body = self.request(s.admin, "GET", "/metrics")
        self.assertEqual(status, 200)
        return self.metric_value(body.decode(), name, **labels)

    # --- the script alone --------------------------------------------------

    def script_args(self, key, epoch, k, units, limits, burst=1, who="a"):
        n0, p0 = limits[0]
        interval = -(-p0 // n0)
        args = ["t:{%s}:limit" % key, "t:{%s}:log" % key, "t:{%s}:turns" % key, epoch, k,
                units, interval, (burst - 1) * interval, min(interval // 4, 5000), 50_000,
                86_400_000, who, len(limits)]
        for n, p in limits:
            args += [n, p, GUARD]
        return args

    def run_script(self, duration_s, limits, burst, clients=3, max_units=1):
        """Decisions from `clients` askers for duration_s; every dispatch instant."""
        with open(SCRIPT, "rb") as f:
            text = f.read()
        conns = [Resp(self.redis.port) for _ in range(clients)]
        sha = conns[0].call("SCRIPT", "LOAD", text)
        rng = random.Random(7)
        instants = []          # (instant_us, units)
        epoch = "0"
        end = time.monotonic() + duration_s
        calls = 0
        while time.monotonic() < end:
            who = calls % clients
            c = conns[who]
            k, units = rng.randint(1, 8), rng.randint(1, max_units)
            granted, wait, ep, now = c.call("EVALSHA", sha, 3,
                                            *self.script_args("p", epoch, k, units, limits,
                                                              burst, who="i%d" % who))
            epoch = str(ep)
            self.assertLessEqual(granted, k)
            self.assertTrue(granted > 0 or wait > 0)
            instants += [(now, units)] * granted
            calls += 1
        for c in conns:
            c.close()
        return instants, calls

    def assert_limits(self, instants, limits, guard=GUARD):
        """No half-open window of P + guard holds more than n units."""
        times = sorted(t for t, u in instants for _ in range(u))
        for n, p in limits:
            self.assertLessEqual(max_in_window(times, p + guard), n,
                                 "limit %d per %dus broken" % (n, p))

    def test_script_holds_every_limit(self):
        self.start_redis()
        limits = [(20, 200_000), (50, SEC)]
        instants, calls = self.run_script(2.5, limits, burst=4, max_units=3)
        self.assertGreater(calls, 200)
        self.assert_limits(instants, limits)
        units = sum(u for _, u in instants)
        # Busy askers use the quota: 50 per second.
        self.assertGreaterEqual(units, 50 * 2 * 0.9)
        # Keys of one route share a hash tag, and expire when unused.
        self.assertGreater(int(self.redis_cli("PTTL", "t:{p}:log")), 0)
        self.assertGreater(int(self.redis_cli("PTTL", "t:{p}:limit")), 0)
        self.assertGreater(int(self.redis_cli("PTTL", "t:{p}:turns")), 0)
        self.assertLessEqual(int(self.redis_cli("LLEN", "t:{p}:log")), 50)

    def test_script_turns_are_fair(self):
        """Three askers that each come back when told: equal shares."""
        self.start_redis()
        with open(SCRIPT, "rb") as f:
            text = f.read()
        c = Resp(self.redis.port)
        sha = c.call("SCRIPT", "LOAD", text)
        limits = [(100, SEC)]
        due = {"i0": 0, "i1": 0, "i2": 0}   # on Redis's clock
        got = {"i0": 0, "i1": 0, "i2": 0}
        epoch, now = "0", 0
        end = time.monotonic() + 2.0
        try:
            while time.monotonic() < end:
                for who in sorted(due, key=due.get):
                    if due[who] > now:
                        continue
                    granted, wait, ep, now = c.call(
                        "EVALSHA", sha, 3, *self.script_args("f", epoch, 4, 1, limits, who=who))
                    epoch = str(ep)
                    got[who] += granted
                    due[who] = now + wait
                time.sleep(0.001)
                sec, usec = c.call("TIME")
                now = int(sec) * SEC + int(usec)
        finally:
            c.close()
        total = sum(got.values())
        self.assertGreater(total, 150)
        for who, n in got.items():
            self.assertLess(abs(n / total - 1 / 3), 0.2 / 3, got)

    def test_script_lower_limit_and_lost_data(self):
        """A lower limit waits for the old history; after Redis lost its data,
        an asker that saw the epoch is held for the longest window."""
        self.start_redis()
        with open(SCRIPT, "rb") as f:
            text = f.read()
        c = Resp(self.redis.port)
        try:
            sha = c.call("SCRIPT", "LOAD", text)
            high = [(10, SEC)]
            got = c.call("EVALSHA", sha, 3, *self.script_args("q", "0", 8, 1, high, burst=8))
            self.assertEqual(got[0:2], [8, 0])
            epoch = got[2]
            # Reloaded to 5/s: the 8 just sent count; the next waits a window.
            low = [(5, SEC)]
            got = c.call("EVALSHA", sha, 3, *self.script_args("q", epoch, 1, 1, low, burst=1))
            self.assertEqual(got[0], 0)
            self.assertGreaterEqual(got[1], SEC + GUARD - 50_000)
            # Redis loses everything: the first asker that knew the epoch holds the route.
            c.call("FLUSHALL")
            got = c.call("EVALSHA", sha, 3, *self.script_args("q", epoch, 1, 1, high, burst=8))
            self.assertNotEqual(got[2], epoch)
            self.assertEqual(got[0], 0)
            self.assertGreaterEqual(got[1], SEC + GUARD)    # a whole window
            # A fresh start (nobody saw an epoch) is not held...
            c.call("FLUSHALL")
            got = c.call("EVALSHA", sha, 3, *self.script_args("q", "0", 1, 1, high, burst=8))
            self.assertEqual(got[0:2], [1, 0])
            fresh = got[2]
            # ...until an asker that saw the lost epoch comes: from then on
            # nothing goes before the new state is a whole window old.
            got = c.call("EVALSHA", sha, 3, *self.script_args("q", epoch, 1, 1, high, burst=8))
            self.assertEqual(got[0], 0)
            self.assertEqual(got[3] + got[1], fresh + SEC + GUARD)
            got = c.call("EVALSHA", sha, 3, *self.script_args("q", fresh, 1, 1, high, burst=8,
                                                              who="b"))
            self.assertEqual(got[0], 0)
            # k = 0 records a dispatch that left late: one more instant, now,
            # whatever the limits say, and no turn.
            before = int(self.redis_cli("LLEN", "t:{q}:log"))
            got = c.call("EVALSHA", sha, 3, *self.script_args("q", fresh, 0, 2, high, burst=8))
            self.assertEqual(got[0:2], [0, 0])
            self.assertEqual(int(self.redis_cli("LLEN", "t:{q}:log")), before + 2)
            self.assertEqual(self.redis_cli("LINDEX", "t:{q}:log", "-1"), str(got[3]))
            # NOSCRIPT after a flush of the script cache.
            c.call("SCRIPT", "FLUSH")
            with self.assertRaises(RuntimeError) as e:
                c.call("EVALSHA", sha, 3, *self.script_args("q", "0", 1, 1, high))
            self.assertIn("NOSCRIPT", str(e.exception))
        finally:
            c.close()

    # --- sluice instances --------------------------------------------------

    def test_three_instances_share_one_limit(self):
        n = 100
        self.start_redis()
        mock = self.start_mock("--rate", "30/s")
        instances = self.start_instances(mock, 3, extra="burst = 1\nquota = 600/m\n")
        results = self.bursts(instances, n)
        self.assert_all_2xx(results, n)
        stats = self.mock_stats(mock)
        self.assertLessEqual(stats["max_in_window"], 30, stats)
        arr = self.arrivals(mock)
        self.assertEqual(len(arr), 3 * n)
        times = [t for t, _ in arr]
        self.assertLessEqual(max_in_window(times, SEC), 30)
        rate = (len(times) - 1) / ((times[-1] - times[0]) / 1e6)
        self.assertGreaterEqual(rate, 0.95 * 30, "combined rate %.2f/s" % rate)
        # Equal backlogs, equal shares: while all three had a backlog (the
        # first 8 s of arrivals, 240 of them), each within 20% of a third.
        t0 = times[0]
        early = [i for t, i in arr if t - t0 < 8 * SEC]
        for i in range(3):
            share = early.count(i) / len(early)
            self.assertLess(abs(share - 1 / 3), 0.2 / 3,
                            "instance %d had %d of %d" % (i, early.count(i), len(early)))
        # About one round trip per dispatch: a grant also books the next turn
        # (a turn that comes before the limits allow costs one more).
        for s in instances:
            go = self.metric(s, "sluice_shared_limit_decisions_total", result="go")
            wait = self.metric(s, "sluice_shared_limit_decisions_total", result="wait")
            err = self.metric(s, "sluice_shared_limit_decisions_total", result="error")
            self.assertEqual(err, 0)
            self.assertEqual(self.metric(s, "sluice_dispatched_total", route="default"), n)
            self.assertLessEqual(go + wait, 1.5 * n)
            self.assertGreater(self.metric(s, "sluice_shared_limit_roundtrip_seconds_count"),
                               0)
            self.assertEqual(self.metric(s, "sluice_shared_limit_up"), 1)
        # Keys carry the route's hash tag and expire when unused.
        self.assertGreater(int(self.redis_cli("PTTL", "t:{default}:log")), 0)
        self.assertGreater(int(self.redis_cli("PTTL", "t:{default}:limit")), 0)

    def test_quota_beside_the_rate(self):
        per = 30
        self.start_redis()
        mock = self.start_mock("--rate", "30/s")
        # 22.5/s is 45 per 2 s: it binds after 45 dispatches at the rate.
        instances = self.start_instances(mock, 3, extra="burst = 1\nquota = 22.5/s\n")
        results = self.bursts(instances, per)
        self.assert_all_2xx(results, per)
        arr = self.arrivals(mock)
        times = [t for t, _ in arr]
        self.assertEqual(len(times), 3 * per)
        self.assertLessEqual(max_in_window(times, SEC), 30)
        self.assertLessEqual(max_in_window(times, 2 * SEC), 45)
        # The quota binds: 45 at the rate, then the rest once the first left its window...
        t0 = times[0]
        gap = max(b - a for a, b in zip(times, times[1:]))
        self.assertGreater(gap, 400_000, "the quota never held anything back")
        # ...and not much later than it allows (2 s + guard after the first).
        second = times[45]
        self.assertGreaterEqual(second - t0, 2 * SEC)
        self.assertLess(second - t0, 2 * SEC + 150_000,
                        "the quota's second window started late: %d us" % (second - t0))

    def test_script_flushed_is_sent_again(self):
        self.start_redis()
        mock = self.start_mock("--rate", "50/s")
        (s,) = self.start_instances(mock, 1, rate="50/s")
        self.assertEqual(self.request(s.port, "GET", "/s0/a")[0], 200)
        self.redis_cli("SCRIPT", "FLUSH")
        for i in range(5):
            self.assertEqual(self.request(s.port, "GET", "/s0/b%d" % i)[0], 200)
        self.assertEqual(self.metric(s, "sluice_shared_limit_decisions_total", result="error"),
                         0)
        status = json.loads(self.request(s.admin, "GET", "/status")[2])
        self.assertTrue(status["shared_limit"]["up"])
        self.assertGreaterEqual(status["shared_limit"]["decisions"]["go"], 6)

    def test_reload_lowers_the_shared_limit(self):
        """Each instance takes the new limit as it reloads; the instants already
        in Redis count against it, so the switch lets no burst through."""
        n = 60
        self.start_redis()
        mock = self.start_mock()
        instances = self.start_instances(mock, 2, rate="30/s")
        results = [None]

        def run():
            results[0] = self.bursts(instances, n)
        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: len(read_arrivals(mock.log)) >= 40, timeout=20, what="under way")
        for s in instances:
            with open(s.config) as f:
                text = f.read()
            with open(s.config, "w") as f:
                f.write(text.replace("rate = 30/s", "rate = 10/s"))
        for s in instances:
            before = self.metric(s, "sluice_config_reloads_total")
            s.p.send_signal(signal.SIGHUP)
            wait_for(lambda s=s: self.metric(s, "sluice_config_reloads_total") == before + 1,
                     timeout=10, what="reload applied")
        # Every dispatch counted now or later was decided under 10/s.
        sent_after = int(sum(self.metric(s, "sluice_dispatched_total", route="default")
                             for s in instances))
        t.join(timeout=60)
        self.assertIsNotNone(results[0], "the bursts did not finish")
        self.assert_all_2xx(results[0], n)
        times = [t for t, _ in self.arrivals(mock)]
        self.assertEqual(len(times), 2 * n)
        self.assertLessEqual(max_in_window(times, SEC), 30)
        # Each dispatch decided under the new limit found at most 9 others,
        # old ones included, in the second before it.
        for j in range(sent_after, len(times)):
            recent = sum(1 for x in times[:j + 1] if times[j] - x < SEC)
            self.assertLessEqual(recent, 10, "arrival %d had %d in its second" % (j, recent))
        after = times[sent_after:]
        self.assertGreater(len(after), 20)
        self.assertGreater(after[20] - after[0], 1.9 * SEC, "faster than 10/s after reload")

    def test_redis_restarted_mid_burst(self):
        n = 60
        self.start_redis()
        port = self.redis.port
        mock = self.start_mock("--rate", "30/s")
        instances = self.start_instances(mock, 3)
        results = [None]
        health = {"down": set(), "up_again": set()}

        def run():
            results[0] = self.bursts(instances, n)
        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: len(read_arrivals(mock.log)) >= 40, timeout=20,
                 what="the burst under way")
        self.redis.stop(signal.SIGKILL)         # its data (no persistence) is gone
        self.procs.remove(self.redis)
        try:
            for i, s in enumerate(instances):
                wait_for(lambda s=s: self.request(s.admin, "GET", "/health")[0] == 503,
                         timeout=5, what="/health 503 while redis is away")
                status, _, body = self.request(s.admin, "GET", "/health")
                if status == 503 and "shared_limit" in json.loads(body)["reason"]:
                    health["down"].add(i)
            time.sleep(3)
        finally:
            self.start_redis(port)
        for i, s in enumerate(instances):
            wait_for(lambda s=s: self.request(s.admin, "GET", "/health")[0] == 200,
                     timeout=15, what="/health 200 once redis is back")
            health["up_again"].add(i)
        t.join(timeout=150)
        self.assertIsNotNone(results[0], "the bursts did not finish")
        self.assertEqual(health["down"], {0, 1, 2})
        self.assertEqual(health["up_again"], {0, 1, 2})
        self.assert_all_2xx(results[0], n)
        times = [t for t, _ in self.arrivals(mock)]
        self.assertEqual(len(times), 3 * n, "a request was lost or sent twice")
        self.assertLessEqual(max_in_window(times, SEC), 30)
        self.assertLessEqual(self.mock_stats(mock)["max_in_window"], 30)
        # Nothing went while Redis was away (3 s), and after it came back
        # empty the route was held for a window: one gap of at least 3 s.
        gap = max(b - a for a, b in zip(times, times[1:]))
        self.assertGreaterEqual(gap, 3 * SEC)
        for s in instances:
            self.assertGreater(self.metric(s, "sluice_shared_limit_blocked_seconds_total"), 2)
            self.assertGreaterEqual(self.metric(s, "sluice_shared_limit_reconnects_total"), 1)


if __name__ == "__main__":
    unittest.main()
