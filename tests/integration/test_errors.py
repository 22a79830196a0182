"""sluice's own error responses (SPEC section 6): status, X-Sluice-Error and the
JSON body, for every way a request can be refused or fail."""

import socket
import time
import unittest

from harness import SluiceTestCase, free_port, read_arrivals, route, wait_for


def raw_exchange(port, payload, timeout=5.0):
    """Send raw bytes, return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def parse_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


class ErrorTest(SluiceTestCase):

    def setUp(self):
        super().setUp()
        self.mock = self.start_mock()

    def test_no_route(self):
        s = self.start_sluice(route(match="/api", upstream_port=self.mock.port))
        self.assert_sluice_error(*self.request(s.port, "GET", "/other"), 404, "no_route")
        self.assert_sluice_error(*self.request(s.port, "GET", "/_sluice/nothing"), 404,
                                 "no_route")
        self.assertEqual(self.request(s.port, "GET", "/api/x")[0], 200)
        self.assertEqual(len(read_arrivals(self.mock.log)), 1)
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="",
                                           outcome="no_route"), 2)

    def test_body_too_large(self):
        s = self.start_sluice(route(upstream_port=self.mock.port),
                              server="max_body_size = 1k")
        self.assert_sluice_error(*self.request(s.port, "POST", "/p", body=b"x" * 2048), 413,
                                 "body_too_large")
        # Chunked bodies are counted as they arrive.
        chunk = b"400\r\n" + b"y" * 1024 + b"\r\n"
        raw = raw_exchange(s.port, b"POST /p HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n")
        self.assert_sluice_error(*parse_response(raw), 413, "body_too_large")
        # At the cap is fine, and a chunked body within it is forwarded whole.
        self.assertEqual(self.request(s.port, "POST", "/p", body=b"z" * 1024)[0], 200)
        raw = raw_exchange(s.port, b"POST /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        status, _, body = parse_response(raw)
        self.assertEqual(status, 200)
        self.assertIn(b'"body_len":5', body)
        self.assertEqual(len(read_arrivals(self.mock.log)), 2)

    def test_lingering_close_is_bounded(self):
        # A refused client that keeps sending a byte every 0.3 s would re-arm
        # the 2 s lingering timeout forever; the connection must close anyway.
        s = self.start_sluice(route(upstream_port=self.mock.port),
                              server="max_body_size = 1k")
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        head = sock.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head)
        # sluice shuts its sending side at once (the client reads EOF), and
        # closes for good after the linger time: then sends start to fail.
        t0, closed = time.monotonic(), False
        while not closed and time.monotonic() - t0 < 6:
            try:
                sock.sendall(b"x")
                time.sleep(0.3)
            except OSError:
                closed = True
        sock.close()
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - t0, 4.0)

    def test_headers_too_large(self):
        s = self.start_sluice(route(upstream_port=self.mock.port),
                              server="max_header_size = 1k")
        self.assert_sluice_error(*self.request(s.port, "GET", "/h",
                                               headers={"X-Big": "a" * 2000}),
                                 431, "headers_too_large")
        self.assertEqual(self.request(s.port, "GET", "/h", headers={"X-Ok": "a" * 200})[0], 200)

    def test_field_cap_and_ambiguous_framing(self):
        s = self.start_sluice(route(upstream_port=self.mock.port))
        many = "".join("X-F%d: v\r\n" % i for i in range(99))  # + Host = 100 fields
        ok = ("GET /fields HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
              % many[:-len("X-F98: v\r\n")]).encode()  # Connection makes it 100
        self.assertEqual(parse_response(raw_exchange(s.port, ok))[0], 200)
        over = ("GET /fields HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
                % many).encode()  # 101 fields
        self.assert_sluice_error(*parse_response(raw_exchange(s.port, over)), 431,
                                 "headers_too_large")
        # Request smuggling and other framing a proxy must not guess at: refused,
        # never forwarded (RFC 9112 6.1, 6.3, 5.2, 2.2).
        for payload in (b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                        b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                        b"Content-Length: 4\r\n\r\nabcd",
                        b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
                        b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n",
                        b"GET /s HTTP/1.1\r\nHost : x\r\n\r\n"):
            status, headers, _ = parse_response(raw_exchange(s.port, payload))
            self.assertEqual((status, headers.get("x-sluice-error")), (400, "bad_request"),
                             payload)
        self.assertEqual([a for a in read_arrivals(self.mock.log) if a[4] == "/s"], [])

    def test_malformed_requests(self):
        s = self.start_sluice(route(upstream_port=self.mock.port))
        for payload in (b"NOT HTTP AT ALL\r\n\r\n",
                        b"GET /x HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
                        b"TRACE /x HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET /a/../b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            status, headers, body = parse_response(raw_exchange(s.port, payload))
            self.assertEqual(status, 400, payload)
            self.assertEqual(headers.get("x-sluice-error"), "bad_request", payload)
        self.assert_sluice_error(*self.request(s.port, "GET", "/x",
                                               headers={"X-Sluice-Priority": "urgent"}),
                                 400, "bad_request")
        self.assert_sluice_error(*self.request(s.port, "GET", "/x",
                                               headers={"X-Sluice-Deadline": "soon"}),
                                 400, "bad_request")
        self.assertEqual(read_arrivals(self.mock.log), [])
        self.assertEqual(self.request(s.port, "GET", "/still/works")[0], 200)

    def test_upstream_unreachable(self):
        dead = free_port()
        s = self.start_sluice(route(upstream_port=dead, extra="retries = 2"))
        status, headers, body = self.request(s.port, "GET", "/x")
        self.assert_sluice_error(status, headers, body, 502, "upstream_unreachable")
        self.assertEqual(headers.get("x-sluice-attempts"), "3")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_upstream_requests_total",
                                           route="default", code="error"), 3)
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"), 3)

    def test_upstream_timeout(self):
        slow = self.start_mock("--latency", "3000", name="slow")
        s = self.start_sluice(route(upstream_port=slow.port, extra="timeout = 300ms"))
        t0 = time.monotonic()
        self.assert_sluice_error(*self.request(s.port, "GET", "/slow"), 504, "upstream_timeout")
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_queue_timeout(self):
        s = self.start_sluice(route(upstream_port=self.mock.port, rate="1/s"),
                              queue="timeout = 1500ms")
        summary, rows = self.burst("http://127.0.0.1:%d/t" % s.port, 6, 6, "--seq",
                                   "--interval-us", "2000")
        by_status = summary["status"]
        # Dispatches at 0 s and ~1 s fit in 1.5 s; the rest time out in the queue.
        self.assertEqual(by_status.get("200"), 2, summary)
        self.assertEqual(by_status.get("504"), 4, summary)
        self.assertTrue(all(r["error"] == "queue_timeout" for r in rows if r["status"] == "504"))
        self.assertEqual([a[1] for a in read_arrivals(self.mock.log)], ["0", "1"])

    def test_per_request_deadline(self):
        s = self.start_sluice(route(upstream_port=self.mock.port, rate="1/s"))
        self.assertEqual(self.request(s.port, "GET", "/first")[0], 200)
        t0 = time.monotonic()
        status, headers, body = self.request(s.port, "GET", "/second",
                                             headers={"X-Sluice-Deadline": "200ms"})
        self.assert_sluice_error(status, headers, body, 504, "queue_timeout")
        self.assertLess(time.monotonic() - t0, 0.9)

    def test_queue_full_reject(self):
        s = self.start_sluice(route(upstream_port=self.mock.port, rate="1/s"),
                              queue="max_depth = 5\noverflow = reject")
        summary, rows = self.burst("http://127.0.0.1:%d/f" % s.port, 12, 12, "--seq",
                                   "--interval-us", "2000", "--timeout", "3")
        full = [r for r in rows if r["status"] == "503"]
        self.assertTrue(all(r["error"] == "queue_full" for r in full))
        self.assertTrue(all(int(r["retry_after"]) >= 1 for r in full), full)
        # One dispatched at once, five parked; the rest are refused.
        self.assertEqual(len(full), 6, summary)
        wait_for(lambda: self.metric_value(self.metrics(), "sluice_requests_total",
                                           route="default", outcome="queue_full") == 6)

    def test_error_answer_to_head_has_no_body(self):
        s = self.start_sluice(route(match="/api", upstream_port=self.mock.port))
        # Two requests on one connection: a body after the HEAD answer would
        # be read as the start of the second response.
        raw = raw_exchange(s.port, b"HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"GET /api/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first, _, rest = raw.partition(b"\r\n\r\n")
        self.assertTrue(first.startswith(b"HTTP/1.1 404 "), raw)
        self.assertIn(b"X-Sluice-Error: no_route", first)
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), raw)

    def test_queue_byte_cap(self):
        s = self.start_sluice(route(upstream_port=self.mock.port, rate="1/s"),
                              queue="max_bytes = 2k\noverflow = reject")
        summary, rows = self.burst("http://127.0.0.1:%d/bytes" % s.port, 10, 10, "-m", "POST",
                                   "-d", "x" * 600, "--interval-us", "2000", "--timeout", "2")
        # One dispatched at once; ~660 bytes each (body + headers): three fit in 2k.
        full = [r for r in rows if r["status"] == "503"]
        self.assertEqual(len(full), 6, summary)
        self.assertTrue(all(r["error"] == "queue_full" for r in full))

    def test_backpressure_loses_nothing(self):
        s = self.start_sluice(route(upstream_port=self.mock.port, rate="40/s", extra="burst = 5"),
                              queue="max_depth = 10\noverflow = backpressure")
        summary, _ = self.burst("http://127.0.0.1:%d/b" % s.port, 60, 60, "--seq")
        self.assertEqual(summary["status"], {"200": 60}, summary)
        self.assertEqual(len(read_arrivals(self.mock.log)), 60)


if __name__ == "__main__":
    unittest.main()
