"""Operating sluice (issue 4): reload without loss, graceful drain, systemd
notifications, and an access log that never leaks a secret."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import unittest

from harness import (BURST_BIN, SluiceTestCase, max_in_window, read_arrivals, route,
                     wait_for)


class OperationsTest(SluiceTestCase):

    def background_burst(self, path, n, *extra):
        results = os.path.join(self.workdir, "bg-%d.txt" % time.monotonic_ns())
        proc = subprocess.Popen([BURST_BIN, "--url", "http://127.0.0.1:%d%s" % (
            self.sluice.port, path), "-n", str(n), "-c", str(n), "--seq", "--json",
            "--interval-us", "300", "--max-seconds", "60", "--results", results] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.results = results
        return proc

    def finish_burst(self, proc):
        out, err = proc.communicate(timeout=90)
        self.assertEqual(proc.returncode, 0, err)
        return json.loads(out.strip().splitlines()[-1])

    def status(self):
        return json.loads(self.admin_get("/status")[2])

    def wait_draining(self):
        """The first signal took effect: /health says draining."""
        wait_for(lambda: self.admin_get("/health")[0] == 503, what="draining")

    def write_config_only(self, routes, **kw):
        text = self.sluice_config(routes, port=self.sluice.port, admin=self.sluice.admin, **kw)
        with open(self.sluice.config, "w") as f:
            f.write(text)

    def reload_with(self, routes, **kw):
        self.write_config_only(routes, **kw)
        before = self.status()["reloads"]
        self.sluice.p.send_signal(signal.SIGHUP)
        return before

    def assert_at_most_in_window(self, times, n, window_us, what):
        """At most n arrivals in any [t, t + window_us). On failure, show the
        densest window: how much closer than window_us + the limiter's guard
        (window_guard, 5 ms) its first and last arrival came, which tells
        arrival jitter at the mock from a limiter that let too many through."""
        times = sorted(times)
        got = max_in_window(times, window_us)
        if got <= n:
            return
        j = 0
        for i in range(len(times)):
            while times[i] - times[j] >= window_us:
                j += 1
            if i - j + 1 == got:
                break
        first, last = times[j], times[j + n]
        self.fail("%s: %d arrivals in a window of %.0f ms, limit %d; arrivals #%d and #%d "
                  "(%d apart) came %.1f ms apart, the limiter spaces such dispatches "
                  ">= %.1f ms apart on its clock"
                  % (what, got, window_us / 1000, n, j, j + n, n, (last - first) / 1000,
                     (window_us + min(window_us // 300, 3000)) / 1000))

    def test_reload_changes_the_rate_under_a_burst(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="20/s"))
        burst = self.background_burst("/r", 200)
        wait_for(lambda: len(read_arrivals(mock.log)) >= 40, what="40 dispatched at 20/s")
        # The switch is bracketed by sluice's own dispatch counter, not by a
        # clock: every dispatch counted before SIGHUP is sent ran under the old
        # limit, every one after the count seen with the reload under the new.
        # The burst is FIFO (--seq, checked below), so arrival i is dispatch i.
        self.write_config_only(route(upstream_port=mock.port, rate="40/s"))
        st = self.status()
        before, sent_before = st["reloads"], st["routes"][0]["dispatched"]
        self.sluice.p.send_signal(signal.SIGHUP)

        def reloaded():
            st = self.status()
            return st if st["reloads"] == before + 1 else None

        st = wait_for(reloaded, what="reload applied")
        sent_after = st["routes"][0]["dispatched"]
        self.assertEqual(st["routes"][0]["rate"], {"n": 40.0, "period_s": 1.0})
        summary = self.finish_burst(burst)
        self.assertEqual(summary["status"], {"200": 200}, summary)

        arrivals = read_arrivals(mock.log)
        self.assertEqual([int(a[1]) for a in arrivals], list(range(200)), "order or loss")
        times = [a[0] for a in arrivals]
        # Never more than the new limit in any second, across the switch too.
        self.assert_at_most_in_window(times, 40, 1_000_000, "whole burst")
        # Before the switch, never more than the old limit.
        self.assertGreaterEqual(sent_before, 40)
        self.assert_at_most_in_window(times[:sent_before], 20, 1_000_000, "before the reload")
        # After the switch the route runs at the new rate.
        after = times[sent_after:]
        self.assertGreater(len(after), 41, "too few dispatches after the reload")
        span = (after[40] - after[0]) / 1e6
        self.assertLess(span, 1.1, "rate after reload %.1f/s" % (40 / span))

    def test_invalid_reload_keeps_the_old_config(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="20/s"))
        with open(s.config, "a") as f:
            f.write("\n[route broken]\nmatch = /b\nrate = fast\n")
        s.p.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in s.stderr_text(), what="refusal logged")
        log = s.stderr_text()
        self.assertRegex(log, re.escape(s.config) + r":\d+: rate: expected")
        self.assertIn("upstream: required", log)
        self.assertEqual(self.status()["reloads"], 0)
        self.assertEqual(self.status()["routes"][0]["rate"], {"n": 20.0, "period_s": 1.0})
        self.assertEqual(self.request(s.port, "GET", "/still")[0], 200)

    def test_reload_adds_and_removes_routes_without_losing_parked_requests(self):
        mock = self.start_mock()
        two = (route("slow", "/slow", mock.port, rate="2/s") +
               route("rest", "/", mock.port, rate="100/s"))
        s = self.start_sluice(two)
        self.assertEqual(self.request(s.port, "GET", "/new/x")[0], 200)
        burst = self.background_burst("/slow/item", 10)
        wait_for(lambda: self.status()["queue_depth"] >= 8, what="slow requests parked")
        # Remove "slow", add "new": the parked requests now match "rest".
        self.reload_with(route("rest", "/", mock.port, rate="100/s") +
                         route("new", "/new", mock.port, rate="100/s"))
        summary = self.finish_burst(burst)
        self.assertEqual(summary["status"], {"200": 10}, summary)
        self.assertLess(summary["elapsed_s"], 3.0, "moved requests were not dispatched at once")
        names = [r["name"] for r in self.status()["routes"]]
        self.assertEqual(names, ["rest", "new"])
        self.assertEqual(self.request(s.port, "GET", "/new/y")[0], 200)
        self.assertEqual(self.status()["routes"][1]["dispatched"], 1)

    def test_a_removed_route_leaves_its_totals_in_the_metrics(self):
        """Every outcome stays counted: a route a reload removes (here with two
        requests parked that then match nothing and get 404) used to vanish
        from /metrics with its totals (found by the soak)."""
        mock = self.start_mock()
        s = self.start_sluice(route("keep", "/keep/", mock.port, rate="100/s") +
                              route("gone", "/gone/", mock.port, rate="1/m"))
        burst = self.background_burst("/gone/x", 3)
        wait_for(lambda: self.status()["queue_depth"] >= 2, what="two parked")
        before = self.reload_with(route("keep", "/keep/", mock.port, rate="100/s"))
        wait_for(lambda: self.status()["reloads"] == before + 1, what="reload applied")
        summary = self.finish_burst(burst)
        self.assertEqual(summary["status"], {"200": 1, "404": 2}, summary)
        text = self.metrics()
        total = sum(self.metric_value(text, "sluice_requests_total", route=r, outcome=o) or 0
                    for r in ("", "keep") for o in ("relayed", "no_route"))
        self.assertEqual(total, 3)
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="",
                                           outcome="no_route"), 2)

    def test_reload_keeps_limiter_history(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="5/m", extra="burst = 5"))
        summary, _ = self.burst("http://127.0.0.1:%d/h" % s.port, 5, 5)
        self.assertEqual(summary["status"], {"200": 5})
        # An unchanged limit must not start a fresh window.
        before = self.reload_with(route(upstream_port=mock.port, rate="5/m", extra="burst = 5"))
        wait_for(lambda: self.status()["reloads"] == before + 1, what="reload applied")
        status, headers, _ = self.request(s.port, "GET", "/h",
                                          headers={"X-Sluice-Deadline": "1s"})
        self.assertEqual(status, 504)
        self.assertEqual(len(read_arrivals(mock.log)), 5)

    def test_drain_delivers_at_the_limit_then_answers_draining(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="50/s"),
                          server="drain_timeout = 2s")
        burst = self.background_burst("/d", 200)
        wait_for(lambda: self.status()["queue_depth"] + self.status()["routes"][0]["dispatched"]
                 == 200, what="200 parked")
        t0 = time.monotonic()
        self.sluice.p.send_signal(signal.SIGTERM)
        summary = self.finish_burst(burst)
        rc = self.sluice.p.wait(timeout=15)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 6.0)
        statuses = summary["status"]
        self.assertEqual(statuses.get("200", 0) + statuses.get("503", 0), 200, summary)
        self.assertEqual(summary["timeout"] + summary["error"], 0, "a client was left hanging")
        self.assertTrue(85 <= statuses.get("200", 0) <= 125, summary)
        with open(burst.results) as f:
            errors = {line.split()[3] for line in f if line.split()[1] == "503"}
        self.assertEqual(errors, {"draining"})
        self.assertLessEqual(max_in_window([a[0] for a in read_arrivals(mock.log)], 1_000_000), 50)

    def test_second_signal_stops_at_once(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="2/s"),
                          server="drain_timeout = 60s")
        burst = self.background_burst("/x", 30)
        wait_for(lambda: self.status()["queue_depth"] >= 25, what="parked")
        self.sluice.p.send_signal(signal.SIGTERM)
        self.wait_draining()
        t0 = time.monotonic()
        self.sluice.p.send_signal(signal.SIGTERM)
        self.assertEqual(self.sluice.p.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)
        summary = self.finish_burst(burst)
        self.assertGreaterEqual(summary["status"].get("503", 0), 25, summary)

    def test_second_signal_with_calls_under_way_dispatches_nothing_more(self):
        mock = self.start_mock("--latency", "3000")
        self.start_sluice(route(upstream_port=mock.port, rate="100/s",
                                extra="max_in_flight = 1"), server="drain_timeout = 60s")
        burst = self.background_burst("/x", 4)
        wait_for(lambda: self.status()["queue_depth"] == 3, what="one in flight, three parked")
        self.sluice.p.send_signal(signal.SIGTERM)
        self.wait_draining()
        self.sluice.p.send_signal(signal.SIGTERM)
        self.assertEqual(self.sluice.p.wait(timeout=10), 0)
        summary = self.finish_burst(burst)
        self.assertEqual(summary["status"], {"503": 4}, summary)
        # sluice has exited: anything it sent has reached the mock's log by now.
        self.assertEqual(len(read_arrivals(mock.log)), 1, "a parked request was sent while stopping")

    def test_reload_removing_a_route_with_a_call_under_way(self):
        mock = self.start_mock("--latency", "1500", "--fail-first", "1", "--fail-status", "503")
        s = self.start_sluice(route("alpha", "/", mock.port, rate="100/s"))
        results = []
        import threading
        t = threading.Thread(target=lambda: results.append(self.request(s.port, "GET", "/x")))
        t.start()
        wait_for(lambda: self.status()["routes"][0]["in_flight"] == 1, what="call under way")
        before = self.reload_with(route("beta", "/", mock.port, rate="100/s"))
        wait_for(lambda: self.status()["reloads"] == before + 1, what="reload applied")
        t.join(timeout=10)
        # The retired route serves no retry: the client gets the upstream's answer.
        self.assertEqual(results[0][0], 503)
        self.assertNotIn("x-sluice-error", results[0][1])
        # ...and that outcome is still counted, under the route it ran on.
        self.assertEqual(self.metric_value(self.metrics(), "sluice_requests_total",
                                           route="alpha", outcome="relayed"), 1)
        self.assertEqual(self.request(s.port, "GET", "/y")[0], 200)

    def test_signals_while_exiting_still_exit_zero(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port))
        self.assertEqual(self.request(s.port, "GET", "/x")[0], 200)
        # A supervisor that keeps signalling while sluice tears down.
        deadline = time.monotonic() + 5
        while s.p.poll() is None and time.monotonic() < deadline:
            try:
                s.p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(0.0005)
        self.assertEqual(s.p.wait(timeout=10), 0)

    def test_systemd_notifications(self):
        path = os.path.join(self.workdir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        self.addCleanup(sock.close)
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port),
                              env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        got = []

        def receive_until(pred, what):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                got.extend(sock.recv(4096).decode().split("\n"))
                if pred():
                    return
            self.fail("no %s among %s" % (what, got))

        receive_until(lambda: "READY=1" in got and
                      any(m.startswith("STATUS=listening") for m in got), "READY=1 and STATUS=")
        receive_until(lambda: "WATCHDOG=1" in got, "WATCHDOG=1")
        got.clear()
        s.p.send_signal(signal.SIGHUP)
        receive_until(lambda: "RELOADING=1" in got and "READY=1" in got, "RELOADING/READY")
        self.assertLess(got.index("RELOADING=1"), got.index("READY=1"))
        s.p.send_signal(signal.SIGTERM)
        receive_until(lambda: "STOPPING=1" in got, "STOPPING=1")

    def test_access_log_fields_and_no_secrets(self):
        mock = self.start_mock()
        s = self.start_sluice(route("api", "/", mock.port))
        secrets = ["Bearer-tok-123", "sess=cookie-456", "key-789", "body-secret-000",
                   "query-secret-111"]
        status, _, _ = self.request(s.port, "POST", "/v1/pay?api_key=query-secret-111",
                                    body=b'{"card":"body-secret-000"}',
                                    headers={"Authorization": "Bearer Bearer-tok-123",
                                             "Cookie": "sess=cookie-456",
                                             "X-Api-Key": "key-789"})
        self.assertEqual(status, 200)
        self.request(s.port, "GET", "/nothing/../here")
        wait_for(lambda: s.stderr_text().count("msg=request") >= 2, what="access log lines")
        log = s.stderr_text()
        for secret in secrets:
            self.assertNotIn(secret, log)
        line = [l for l in log.splitlines() if "msg=request" in l and "route=api" in l][0]
        fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
        for key in ("ts", "level", "route", "method", "path", "status", "outcome", "queue_ms",
                    "upstream_ms", "attempts", "client"):
            self.assertIn(key, fields, line)
        self.assertEqual((fields["method"], fields["path"], fields["status"], fields["outcome"]),
                         ("POST", "/v1/pay", "200", "relayed"))
        self.assertEqual(fields["client"], "127.0.0.1")

    def test_access_log_off(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port), server="access_log = off")
        self.assertEqual(self.request(s.port, "GET", "/quiet")[0], 200)
        self.assertNotIn("msg=request", s.stderr_text())


if __name__ == "__main__":
    unittest.main()
