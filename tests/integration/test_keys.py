"""Per-key limits (issue 14 items 1, 4, 5): with limit_key every key value
gets the route's limits for itself, measured per key at the upstream (the
key travels in the query, so the mock's log line shows it); no key waits
behind another's backlog; 100,000 keys cost at most 64 bytes each and are
evicted once their windows pass; the cap answers 503 too_many_keys; key
values appear in no log, metric or status. Also: the limit the upstream
announces is compared with the route's."""

import json
import signal
import subprocess
import time
import urllib.parse

from harness import (BURST_BIN, SluiceTestCase, max_in_window, read_arrivals, route,
                     wait_for)


def key_of(path):
    """The `key` query parameter of a logged path?query."""
    query = urllib.parse.urlparse(path).query
    return urllib.parse.parse_qs(query).get("key", [None])[0]


def max_units_in_window(arrivals, window_us):
    """Largest sum of units in any [t, t + window) over (instant, units) pairs."""
    arrivals = sorted(arrivals)
    best, total, j = 0, 0, 0
    for i in range(len(arrivals)):
        total += arrivals[i][1]
        while arrivals[i][0] - arrivals[j][0] >= window_us:
            total -= arrivals[j][1]
            j += 1
        best = max(best, total)
    return best


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def sanitized(pid):
    """AddressSanitizer builds keep their own shadow memory: RSS says nothing there."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


class KeysTest(SluiceTestCase):

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.sluice.port, path)

    def status(self):
        code, _, body = self.admin_get("/status")
        self.assertEqual(code, 200)
        return json.loads(body)

    def start_bursts(self, specs):
        """Start one burst per (path, n, c, extra args); returns the Popen list."""
        procs = []
        for path, n, c, extra in specs:
            argv = [BURST_BIN, "--url", self.url(path), "-n", str(n), "-c", str(c), "--json",
                    "--max-seconds", "120"] + list(extra)
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.addCleanup(lambda p=p: p.poll() is None and (p.kill(), p.wait()))
            procs.append(p)
        return procs

    def finish(self, procs):
        summaries = []
        for p in procs:
            out, err = p.communicate(timeout=150)
            self.assertEqual(p.returncode, 0, err)
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        return summaries

    def by_key(self, arrivals):
        keys = {}
        for a in arrivals:
            keys.setdefault(key_of(a[4]), []).append(a)
        return keys

    # --- strict per key, full utilization, no key behind another ----------

    def test_twenty_keys_each_at_its_own_limit(self):
        """20 keys, each a burst of 50 at 5/s: per key, never more than 5 in
        any second at the upstream and >= 95% of 5/s; all keys run at once."""
        mock = self.start_mock()
        # 100 arrivals a second over 20 keys at one mock that writes a log
        # line for each: on two loaded cores its timestamps jitter by up to
        # 3 ms, the default guard. A 10 ms guard costs 1% of each key's rate.
        self.start_sluice(route(upstream_port=mock.port, rate="5/s",
                                extra="limit_key = query:key\nmax_in_flight = 100\n"
                                      "window_guard = 10ms\n"))
        keys = ["k%02d" % i for i in range(20)]
        t0 = time.monotonic()
        procs = self.start_bursts([("/k?key=%s" % k, 50, 10, ()) for k in keys])
        for s in self.finish(procs):
            self.assertEqual(s["status"], {"200": 50}, s)
        elapsed = time.monotonic() - t0
        per_key = self.by_key(read_arrivals(mock.log))
        self.assertEqual(sorted(per_key), keys)
        worst = 1.0
        for k in keys:
            times = [a[0] for a in per_key[k]]
            self.assertEqual(len(times), 50)
            self.assertEqual([a[3] for a in per_key[k]], [200] * 50)
            self.assertLessEqual(max_in_window(times, 1_000_000), 5,
                                 "key %s: 6 arrivals within %.1f ms" % (
                                     k, min(b - a for a, b in zip(times, times[5:])) / 1000))
            utilization = 49 / ((times[-1] - times[0]) / 1e6) / 5
            worst = min(worst, utilization)
            self.assertGreaterEqual(utilization, 0.95, "key %s" % k)
        print("\n20 keys x 50 at 5/s: worst key utilization %.1f%%, %.1f s in all"
              % (100 * worst, elapsed))
        # Every key ran at once: 20 x 10 s in about 10 s, not 200.
        self.assertLess(elapsed, 20)
        st = self.status()["routes"][0]["keys"]
        self.assertEqual(st["limit_key"], "query:key")
        self.assertTrue(st["compact"])

    def test_no_key_waits_behind_another(self):
        """Key a has a backlog at 1/s; single requests of other keys, arriving
        while a's next instant is still ahead, go at once."""
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="1/s",
                                extra="limit_key = header:X-Key\n"))
        procs = self.start_bursts([("/a", 5, 5, ("-H", "X-Key: a"))])
        wait_for(lambda: len(read_arrivals(mock.log)) >= 1, what="a's first dispatch")
        latencies = {}
        for k, delay in (("b", 0.3), ("c", 0.2), ("d", 0.2)):
            time.sleep(delay)
            t = time.monotonic()
            code, _, _ = self.request(self.sluice.port, "GET", "/" + k, headers={"X-Key": k})
            latencies[k] = time.monotonic() - t
            self.assertEqual(code, 200)
        self.assertEqual(self.finish(procs)[0]["status"], {"200": 5})
        print("\nother keys' latency behind a's backlog: %s"
              % ", ".join("%s %.0f ms" % (k, v * 1000) for k, v in sorted(latencies.items())))
        # Behind a's head they would wait for a's next second (300-700 ms).
        for k, v in latencies.items():
            self.assertLess(v, 0.25, "key %s waited %.0f ms behind key a" % (k, v * 1000))
        times = [a[0] for a in read_arrivals(mock.log) if a[4] == "/a"]
        self.assertLessEqual(max_in_window(times, 1_000_000), 1)

    def test_a_429_pauses_only_its_key(self):
        """The upstream answers key a 429 with Retry-After: 2: a waits 2 s
        before its retry; key b's requests meanwhile go at once."""
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="100/s",
                                extra="limit_key = header:X-Key\n"))
        a = self.start_bursts([("/a", 1, 1, ("-H", "X-Key: a", "-H", "X-Mock-Status: 429",
                                             "-H", "X-Mock-Header: Retry-After: 2",
                                             "-H", "X-Sluice-Deadline: 3s"))])
        wait_for(lambda: len(read_arrivals(mock.log)) >= 1, what="a's first attempt")
        time.sleep(0.2)
        t = time.monotonic()
        for i in range(3):
            code, _, _ = self.request(self.sluice.port, "GET", "/b%d" % i, headers={"X-Key": "b"})
            self.assertEqual(code, 200)
        b_s = time.monotonic() - t
        self.assertEqual(self.finish(a)[0]["status"], {"429": 1})
        arrivals = read_arrivals(mock.log)
        times_a = [x[0] for x in arrivals if x[4] == "/a"]
        print("\nkey b behind key a's 429 pause: 3 requests in %.0f ms" % (b_s * 1000))
        self.assertLess(b_s, 0.5, "key b waited for key a's pause")
        self.assertEqual(len(times_a), 2)
        self.assertGreaterEqual(times_a[1] - times_a[0], 1_990_000, "a's pause not honoured")
        self.assertEqual(self.metric_value(self.metrics(), "sluice_route_pauses_total",
                                           route="default"), 0)

    def test_cost_holds_per_key_in_units(self):
        """Requests of cost 1 and 3 mixed per key: no second holds more than 5
        units of one key, with compact keys and with full limiters (burst 3)."""
        for extra in ("", "burst = 3\n"):
            with self.subTest(extra=extra.strip() or "compact"):
                mock = self.start_mock(name="mock%d" % len(self.procs))
                self.start_sluice(route(upstream_port=mock.port, rate="5/s",
                                        extra="limit_key = query:key\nmax_cost = 3\n" + extra),
                                  name="sluice%d" % len(self.procs))
                specs = []
                for k in ("a", "b"):
                    specs.append(("/c?key=%s&c=1" % k, 10, 10, ()))
                    specs.append(("/c?key=%s&c=3" % k, 5, 5, ("-H", "X-Sluice-Cost: 3")))
                for s in self.finish(self.start_bursts(specs)):
                    self.assertEqual(s["status"].get("200"), s["total"], s)
                per_key = self.by_key(read_arrivals(mock.log))
                for k in ("a", "b"):
                    units = [(a[0], int(urllib.parse.parse_qs(
                        urllib.parse.urlparse(a[4]).query)["c"][0])) for a in per_key[k]]
                    self.assertEqual(sum(u for _, u in units), 25)
                    self.assertLessEqual(max_units_in_window(units, 1_000_000), 5,
                                         "key %s (%s)" % (k, extra.strip() or "compact"))
                self.assertEqual(self.metric_value(self.metrics(),
                                                   "sluice_units_dispatched_total",
                                                   route="default"), 50)

    # --- memory, eviction, the cap ------------------------------------------

    def test_hundred_thousand_keys(self):
        """100,000 keys sent once each: at most 64 bytes of RSS per key, and
        every key evicted once its window (1 per 25 s) has passed."""
        mock = self.start_mock()
        s = self.start_sluice(
            route(name="warm", match="/w", upstream_port=mock.port, rate="100000/s") +
            route(name="keys", match="/k", upstream_port=mock.port, rate="0.04/s",
                  extra="limit_key = header:X-Seq\n"),
            server="access_log = off\n")
        # The same traffic on a route without keys first: buffers and pools warm.
        summary, _ = self.burst(self.url("/w"), 5000, 8)
        self.assertEqual(summary["status"], {"200": 5000}, summary)
        before = vm_rss_kb(s.p.pid)
        t0 = time.monotonic()
        summary, _ = self.burst(self.url("/k"), 100_000, 8, "--seq", timeout=200)
        self.assertEqual(summary["status"], {"200": 100_000}, summary)
        sent_s = time.monotonic() - t0
        after = vm_rss_kb(s.p.pid)
        text = self.metrics()
        live = self.metric_value(text, "sluice_keys", route="keys")
        table = self.metric_value(text, "sluice_keys_bytes", route="keys")
        per_key = (after - before) * 1024 / 100_000
        print("\n100,000 keys in %.1f s: RSS +%d KiB (%.1f bytes per key), table %.1f bytes "
              "per key, %d live at the end" % (sent_s, after - before, per_key,
                                               table / 100_000, live))
        if sent_s < 24:
            self.assertGreaterEqual(live, 100_000, "keys evicted before their window passed")
        if not sanitized(s.p.pid):
            self.assertLessEqual(per_key, 64)
        self.assertLessEqual(table / 100_000, 64)
        # Evicted after their windows: live keys fall to 0.
        wait_for(lambda: self.metric_value(self.metrics(), "sluice_keys", route="keys") == 0,
                 timeout=40, interval=0.5, what="every key evicted")
        self.assertEqual(self.metric_value(self.metrics(), "sluice_key_evictions_total",
                                           route="keys"), 100_000)

    def test_max_keys(self):
        """At max_keys a new key is answered 503 too_many_keys with Retry-After,
        until an idle key's window has passed."""
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="1/s",
                                extra="limit_key = header:X-Key\nmax_keys = 2\n"))
        procs = self.start_bursts([("/a", 3, 3, ("-H", "X-Key: a")),
                                   ("/b", 3, 3, ("-H", "X-Key: b"))])
        wait_for(lambda: self.status()["routes"][0]["keys"]["live"] == 2, what="two live keys")
        code, headers, body = self.request(self.sluice.port, "GET", "/c", headers={"X-Key": "c"})
        self.assert_sluice_error(code, headers, body, 503, "too_many_keys")
        self.assertGreaterEqual(int(headers["retry-after"]), 1)
        # The default bucket (no key) is not a key: it still comes in.
        code, _, _ = self.request(self.sluice.port, "GET", "/none")
        self.assertEqual(code, 200)
        for s in self.finish(procs):
            self.assertEqual(s["status"], {"200": 3}, s)
        # a and b idle; once their windows pass, c gets a's or b's place.
        wait_for(lambda: self.request(self.sluice.port, "GET", "/c",
                                      headers={"X-Key": "c"})[0] == 200,
                 timeout=5, interval=0.2, what="c admitted")
        text = self.metrics()
        self.assertGreaterEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                                  outcome="too_many_keys"), 1)
        self.assertGreaterEqual(self.metric_value(text, "sluice_key_evictions_total",
                                                  route="default"), 1)

    # --- privacy, reload ----------------------------------------------------

    def test_key_values_are_never_shown(self):
        mock = self.start_mock()
        secret = "s3cr3t-VALUE-42"
        self.start_sluice(route(upstream_port=mock.port, rate="100/s",
                                extra="limit_key = header:X-Api-Key\n") +
                          route(name="q", match="/q", upstream_port=mock.port, rate="100/s",
                                extra="limit_key = query:token\n"),
                          server="log_level = debug\n")
        for i in range(3):
            code, _, _ = self.request(self.sluice.port, "GET", "/p%d" % i,
                                      headers={"X-Api-Key": secret})
            self.assertEqual(code, 200)
            code, _, _ = self.request(self.sluice.port, "GET", "/q?token=%s" % secret)
            self.assertEqual(code, 200)
        st = self.status()
        busiest = st["routes"][0]["keys"]["busiest"]
        self.assertEqual(len(busiest), 1)
        self.assertEqual(busiest[0]["units"], 3)
        self.assertRegex(busiest[0]["digest"], "^[0-9a-f]{8}$")
        for where, text in (("status", json.dumps(st)), ("metrics", self.metrics()),
                            ("log", self.sluice.stderr_text())):
            self.assertNotIn(secret, text, "the key value shows in the %s" % where)
        # Ambiguous: which of two values would the upstream count?
        code, headers, body = self.request(self.sluice.port, "GET", "/q?token=a&token=b")
        self.assert_sluice_error(code, headers, body, 400, "bad_request")

    def test_reload_keeps_keys(self):
        """A reload (max_keys changed) under a backlog: parked requests stay,
        and the key's limit holds across the swap."""
        mock = self.start_mock()
        text = route(upstream_port=mock.port, rate="2/s", extra="limit_key = query:key\n")
        self.start_sluice(text)
        procs = self.start_bursts([("/r?key=a", 12, 12, ()), ("/r?key=b", 12, 12, ())])
        wait_for(lambda: len(read_arrivals(mock.log)) >= 6, what="dispatches before the reload")
        self.write_config(self.sluice_config(text + "max_keys = 50\n", "", "",
                                             self.sluice.port, self.sluice.admin),
                          "sluice.conf")
        self.sluice.p.send_signal(signal.SIGHUP)
        wait_for(lambda: self.status()["reloads"] == 1, what="reload applied")
        self.assertEqual(self.status()["routes"][0]["keys"]["max"], 50)
        for s in self.finish(procs):
            self.assertEqual(s["status"], {"200": 12}, s)
        for k, arrivals in self.by_key(read_arrivals(mock.log)).items():
            self.assertEqual(len(arrivals), 12)
            self.assertLessEqual(max_in_window([a[0] for a in arrivals], 1_000_000), 2, k)


class AnnouncedLimitTest(SluiceTestCase):

    def test_configured_above_announced(self):
        """The mock announces 20 per second; a route set to 50/s is reported
        (status, metrics, one warning), one set to 10/s is not; neither changes."""
        mock = self.start_mock("--ratelimit-budget", "20", "--ratelimit-window", "1")
        self.start_sluice(route(name="fast", match="/f", upstream_port=mock.port, rate="50/s") +
                          route(name="slow", match="/s", upstream_port=mock.port, rate="10/s"))
        for i in range(4):
            for path in ("/f", "/s"):
                code, _, _ = self.request(self.sluice.port, "GET", "%s%d" % (path, i))
                self.assertEqual(code, 200)
        _, _, body = self.admin_get("/status")
        routes = {r["name"]: r for r in json.loads(body)["routes"]}
        self.assertEqual(routes["fast"]["upstream_limit"],
                         {"n": 20.0, "period_s": 1.0, "configured_allows": 50.0,
                          "configured_above": True})
        self.assertFalse(routes["slow"]["upstream_limit"]["configured_above"])
        self.assertEqual(routes["fast"]["rate"], {"n": 50.0, "period_s": 1.0})
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_limit_above_upstream", route="fast"), 1)
        self.assertEqual(self.metric_value(text, "sluice_limit_above_upstream", route="slow"), 0)
        self.assertEqual(self.metric_value(text, "sluice_upstream_limit", route="fast"), 20)
        log = self.sluice.stderr_text()
        warnings = [l for l in log.splitlines() if "allow more than the upstream announces" in l]
        self.assertEqual(len(warnings), 1, log)
        self.assertIn("route=fast", warnings[0])
        self.assertIn("level=warn", warnings[0])
