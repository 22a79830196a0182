"""What crosses the proxy: methods, paths, headers and bodies both ways,
keep-alive, the admin endpoints, the command line and shutdown."""

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import unittest

from harness import SLUICE_BIN, SluiceTestCase, read_arrivals, route, wait_for


class ProxyTest(SluiceTestCase):

    def test_methods_paths_and_bodies_are_forwarded(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="1000/s") +
                              "[route api]\nmatch = /api\nupstream = http://127.0.0.1:%d/base\n"
                              "rate = 1000/s\n" % mock.port)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            body = b"payload-" + method.encode() if method in ("POST", "PUT", "PATCH") else None
            status, headers, data = self.request(s.port, method, "/api/v1/items?q=a%20b&x=1",
                                                 body=body)
            self.assertEqual(status, 200, data)
            echo = json.loads(data)
            self.assertEqual(echo["method"], method)
            self.assertEqual(echo["uri"], "/base/api/v1/items?q=a%20b&x=1")
            self.assertEqual(echo["body_len"], len(body) if body else 0)
        status, headers, data = self.request(s.port, "HEAD", "/plain")
        self.assertEqual(status, 200)
        self.assertEqual(data, b"")
        self.assertGreater(int(headers["content-length"]), 0)
        self.assertEqual(len(read_arrivals(mock.log)), 7)

    def test_headers_both_ways(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port))
        status, headers, data = self.request(s.port, "GET", "/h", headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "must not pass",
            "Keep-Alive": "timeout=5",
            "X-Sluice-Priority": "high",
            "X-Forwarded-For": "10.1.2.3",
            "Authorization": "Bearer secret-token",
            "X-Mock-Header": "X-Upstream-Extra: yes",
        })
        self.assertEqual(status, 200)
        got = {k.lower(): v for k, v in json.loads(data)["headers"].items()}
        self.assertNotIn("x-hop", got)
        self.assertNotIn("keep-alive", got)
        self.assertNotIn("connection", got)
        self.assertNotIn("x-sluice-priority", got)
        self.assertEqual(got["x-forwarded-for"], "10.1.2.3, 127.0.0.1")
        self.assertEqual(got["x-forwarded-proto"], "http")
        self.assertEqual(got["via"], "1.1 sluice")
        self.assertEqual(got["host"], "127.0.0.1:%d" % mock.port)
        self.assertEqual(got["authorization"], "Bearer secret-token")
        self.assertEqual(headers["x-upstream-extra"], "yes")
        self.assertEqual(headers["via"], "1.1 sluice")
        self.assertEqual(headers["x-sluice-attempts"], "1")
        self.assertIn("x-sluice-queue-time", headers)
        self.assertNotIn("x-sluice-error", headers)
        # The access log names the request but never a credential.
        log = s.stderr_text()
        self.assertIn("path=/h", log)
        self.assertNotIn("secret-token", log)

    def test_preserve_host(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, extra="preserve_host = on"))
        status, _, data = self.request(s.port, "GET", "/h", headers={"Host": "api.example"})
        self.assertEqual(status, 200)
        got = {k.lower(): v for k, v in json.loads(data)["headers"].items()}
        self.assertEqual(got["host"], "api.example")

    def test_upstream_status_and_body_relayed(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port))
        status, headers, data = self.request(s.port, "GET", "/big", headers={
            "X-Mock-Status": "418", "X-Mock-Body-Size": str(3 * 1024 * 1024)})
        self.assertEqual(status, 418)
        self.assertEqual(len(data), 3 * 1024 * 1024)
        self.assertNotIn("x-sluice-error", headers)

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="1000/s"))
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        try:
            for i in range(20):
                conn.request("POST" if i % 2 else "GET", "/k/%d" % i,
                             body=b"b" * i if i % 2 else None)
                resp = conn.getresponse()
                self.assertEqual(resp.status, 200)
                self.assertEqual(json.loads(resp.read())["uri"], "/k/%d" % i)
        finally:
            conn.close()
        self.assertEqual(self.metric_value(self.metrics(), "sluice_requests_total",
                                           route="default", outcome="relayed"), 20)

    def test_pipelined_requests_answered_in_order(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="1000/s"))
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        # Three requests in one segment, one with a body and one chunked; then
        # more pipelined bytes than sluice buffers while serving (it must stop
        # reading, not fail), all answered in order on the one connection.
        wire = (b"GET /p/0 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /p/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"POST /p/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n")
        flood = b"".join(b"GET /p/%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n"
                         % (i, b"p" * 900) for i in range(3, 160))
        sock.sendall(wire + flood)
        reader = sock.makefile("rb")
        try:
            for i in range(160):
                status = reader.readline().split(b" ")[1]
                fields = {}
                for line in iter(reader.readline, b"\r\n"):
                    name, _, value = line.decode().partition(":")
                    fields[name.strip().lower()] = value.strip()
                got = json.loads(reader.read(int(fields["content-length"])))
                self.assertEqual((status, got["uri"]), (b"200", "/p/%d" % i))
                if i in (1, 2):
                    self.assertEqual(got["body_len"], 5 if i == 1 else 3)
        finally:
            reader.close()
            sock.close()

    def test_connection_cap_pauses_accepting(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="1000/s"),
                              server="max_connections = 3")
        idle = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        try:
            wait_for(lambda: self.metric_value(self.metrics(), "sluice_connections") == 3,
                     what="3 connections accepted")
            # The fourth completes in the kernel's backlog but is not served.
            extra = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            extra.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            extra.settimeout(0.5)
            with self.assertRaises(socket.timeout):
                extra.recv(100)
            self.assertEqual(self.metric_value(self.metrics(), "sluice_connections"), 3)
            idle.pop().close()
            extra.settimeout(5)
            self.assertTrue(extra.recv(100).startswith(b"HTTP/1.1 200 "))
            extra.close()
        finally:
            for c in idle:
                c.close()

    def test_client_timeout_closes_idle_connections_only(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="1/s"),
                              server="client_timeout = 300ms")
        silent = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        partial = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        partial.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        self.assertEqual(silent.recv(100), b"")
        self.assertEqual(partial.recv(100), b"")
        self.assertLess(time.monotonic() - t0, 2.0)
        silent.close()
        partial.close()
        # A request parked longer than client_timeout is waiting, not idle.
        self.assertEqual(self.request(s.port, "GET", "/first")[0], 200)
        t0 = time.monotonic()
        self.assertEqual(self.request(s.port, "GET", "/second")[0], 200)
        self.assertGreater(time.monotonic() - t0, 0.5)

    def test_idle_timeout_starts_over_after_each_response(self):
        # The answer takes most of client_timeout; the client then waits a bit
        # and reuses the connection: idle time counts from the response, so
        # the connection must still be open (a timeout cycle begun while the
        # request was served used to close it at once).
        mock = self.start_mock("--latency", "1500")
        s = self.start_sluice(route(upstream_port=mock.port), server="client_timeout = 2s")
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        try:
            for i in range(2):
                conn.request("GET", "/slow/%d" % i)
                resp = conn.getresponse()
                self.assertEqual(resp.status, 200)
                self.assertEqual(json.loads(resp.read())["uri"], "/slow/%d" % i)
                time.sleep(0.7)
        finally:
            conn.close()

    def test_slow_download_outlives_client_timeout(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port), server="client_timeout = 1s")
        size = 6 * 1024 * 1024
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nX-Mock-Body-Size: %d\r\n"
                     b"Connection: close\r\n\r\n" % size)
        got, t0 = 0, time.monotonic()
        while True:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                break
            got += len(chunk)
            time.sleep(0.05)  # a slow reader: the download takes longer than client_timeout
        sock.close()
        self.assertGreater(time.monotonic() - t0, 1.2)
        self.assertGreater(got, size)  # the whole body plus the head

    def test_admin_endpoints(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port))
        self.request(s.port, "GET", "/x")
        status, _, body = self.admin_get("/health")
        self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
        text = self.metrics()
        for family in ("sluice_requests_total", "sluice_queue_depth", "sluice_queue_bytes",
                       "sluice_queue_wait_seconds", "sluice_upstream_requests_total",
                       "sluice_upstream_duration_seconds", "sluice_in_flight",
                       "sluice_route_paused", "sluice_client_gone_total"):
            self.assertIn("# TYPE %s " % family, text)
        self.assertEqual(self.metric_value(text, "sluice_queue_wait_seconds_count",
                                           route="default", lane="normal"), 1)
        status, _, body = self.admin_get("/status")
        doc = json.loads(body)
        self.assertEqual(status, 200)
        self.assertEqual(doc["routes"][0]["name"], "default")
        self.assertEqual(doc["routes"][0]["rate"], {"n": 50.0, "period_s": 1.0})
        self.assertEqual(doc["routes"][0]["outcomes"]["relayed"], 1)
        self.assertEqual(self.admin_get("/nope")[0], 404)

    def test_admin_token(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port), server="admin_token = s3cret")
        self.assertEqual(self.admin_get("/health")[0], 401)
        status, _, _ = self.request(s.admin, "GET", "/metrics",
                                    headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(status, 200)

    def test_sigterm_drains_and_exits_zero(self):
        mock = self.start_mock()
        s = self.start_sluice(route(upstream_port=mock.port, rate="20/s"),
                              server="drain_timeout = 10s")
        procs = []
        import threading
        results = []

        def one(i):
            results.append(self.request(s.port, "GET", "/d/%d" % i)[0])
        for i in range(10):
            t = threading.Thread(target=one, args=(i,))
            t.start()
            procs.append(t)
        def all_arrived():
            doc = json.loads(self.admin_get("/status")[2])
            return doc["queue_depth"] + doc["routes"][0]["dispatched"] == 10
        wait_for(all_arrived, what="all 10 requests parked or dispatched")
        s.p.send_signal(signal.SIGTERM)
        for t in procs:
            t.join(timeout=20)
        self.assertEqual(sorted(results), [200] * 10)
        self.assertEqual(s.p.wait(timeout=10), 0)


class CommandLineTest(SluiceTestCase):

    def run_sluice(self, *args):
        return subprocess.run([SLUICE_BIN] + list(args), capture_output=True, text=True,
                              timeout=20)

    def test_version_and_help(self):
        cp = self.run_sluice("-V")
        self.assertEqual(cp.returncode, 0)
        self.assertRegex(cp.stdout, r"^sluice \d+\.\d+\.\d+\n$")
        cp = self.run_sluice("--help")
        self.assertEqual(cp.returncode, 0)
        self.assertIn("--config", cp.stdout)
        self.assertEqual(self.run_sluice("--bogus").returncode, 1)

    def test_config_test_mode(self):
        good = self.write_config("[route a]\nmatch = /\nupstream = http://127.0.0.1:9\n"
                                 "rate = 10/s\n", "good.conf")
        cp = self.run_sluice("-t", "-c", good)
        self.assertEqual((cp.returncode, cp.stdout), (0, good + ": ok\n"))
        bad = self.write_config("[server]\nlisten = 127.0.0.1:1\nbogus = 1\n"
                                "[route a]\nmatch = /\nupstream = http://127.0.0.1:9\n"
                                "rate = 10 per sec\n", "bad.conf")
        cp = self.run_sluice("-t", "-c", bad)
        self.assertEqual(cp.returncode, 1)
        self.assertIn(bad + ":3: bogus: unknown key", cp.stderr)
        self.assertIn(bad + ':7: rate: expected N/s, N/m, N/h or N/d, got "10 per sec"',
                      cp.stderr)
        # The same errors stop a real start, with exit code 1.
        self.assertEqual(self.run_sluice("-c", bad).returncode, 1)
        missing = os.path.join(self.workdir, "missing.conf")
        cp = self.run_sluice("-t", "-c", missing)
        self.assertEqual(cp.returncode, 1)
        self.assertIn(missing, cp.stderr)

    def test_example_config_is_valid(self):
        here = os.path.dirname(os.path.abspath(__file__))
        example = os.path.join(here, "..", "..", "conf", "sluice.conf")
        self.assertEqual(self.run_sluice("-t", "-c", example).returncode, 0)

    def test_cannot_bind_exits_2(self):
        mock = self.start_mock()
        conf = self.write_config("[server]\nlisten = 127.0.0.1:%d\nadmin_listen =\n"
                                 "[route a]\nmatch = /\nupstream = http://127.0.0.1:9\n"
                                 "rate = 10/s\n" % mock.port, "busy.conf")
        self.assertEqual(self.run_sluice("-c", conf).returncode, 2)


if __name__ == "__main__":
    unittest.main()
