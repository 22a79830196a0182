"""HTTP as real clients expect it (issue 18), one class per promise; raw
sockets where the bytes matter."""

import http.client
import json
import shutil
import socket
import subprocess
import time
import unittest

from harness import SluiceTestCase, read_arrivals, route, wait_for
from test_errors import parse_response, raw_exchange


def half_closed_exchange(port, payload, timeout=5.0, close_after_shutdown=False):
    """Send payload, shut down the sending side, read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        if close_after_shutdown:
            return b""
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
    finally:
        s.close()


def status_line(raw):
    return raw.partition(b"\r\n")[0].decode("latin-1")


class HalfCloseTest(SluiceTestCase):
    """A FIN is the end of what the client sends, not of what it reads."""

    POST = (b"POST /pay HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n"
            b"Content-Length: 12\r\n\r\n{\"amount\":1}")

    def test_in_flight_request_is_answered(self):
        # The upstream takes 300 ms: the FIN arrives while the POST is in flight.
        mock = self.start_mock("--latency", "300")
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        raw = half_closed_exchange(self.sluice.port, self.POST)
        self.assertTrue(raw, "nothing came back to the half-closed client")
        status, headers, body = parse_response(raw)
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(json.loads(body)["method"], "POST")
        self.assertEqual([a[2] for a in read_arrivals(mock.log)], ["POST"])
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="relayed"), 1)
        self.assertEqual(self.metric_value(text, "sluice_client_gone_total",
                                           route="default"), 0)

    def test_parked_request_is_abandoned_by_default(self):
        # 1/m: the first request takes the token, the second waits a minute.
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="1/m"))
        self.assertEqual(self.request(self.sluice.port, "GET", "/first")[0], 200)
        raw = half_closed_exchange(self.sluice.port, self.POST)
        self.assertEqual(raw, b"")
        wait_for(lambda: self.metric_value(self.metrics(), "sluice_client_gone_total",
                                           route="default") == 1, what="client_gone")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="client_gone"), 1)
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"), 1)
        self.assertEqual([a[4] for a in read_arrivals(mock.log)], ["/first"])

    def test_parked_request_waits_with_half_close_wait(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="2/s"),
                          server="half_close = wait")
        self.assertEqual(self.request(self.sluice.port, "GET", "/first")[0], 200)
        t0 = time.monotonic()
        raw = half_closed_exchange(self.sluice.port, self.POST)
        self.assertTrue(raw, "nothing came back to the half-closed client")
        status, headers, _ = parse_response(raw)
        self.assertEqual(status, 200)
        self.assertGreater(float(headers["x-sluice-queue-time"]), 100)
        self.assertGreater(time.monotonic() - t0, 0.1)
        self.assertEqual([a[4] for a in read_arrivals(mock.log)], ["/first", "/pay"])
        self.assertEqual(self.metric_value(self.metrics(), "sluice_client_gone_total",
                                           route="default"), 0)

    def test_write_to_a_client_that_is_gone_is_counted(self):
        # The client closes for good right after its request: sluice cannot
        # tell that from a half-close, keeps the request in flight, and the
        # write of the 8 MB answer fails. That is counted, not hidden.
        mock = self.start_mock("--latency", "300")
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        half_closed_exchange(self.sluice.port,
                             b"GET /big HTTP/1.1\r\nHost: s\r\nX-Mock-Body-Size: 8000000\r\n\r\n",
                             close_after_shutdown=True)
        wait_for(lambda: (self.metric_value(self.metrics(), "sluice_client_write_errors_total")
                          or 0) >= 1, what="a counted write error")
        self.assertEqual(len(read_arrivals(mock.log)), 1)


class AbsoluteFormTest(SluiceTestCase):
    """RFC 9112 3.2.2: what a client configured with HTTP_PROXY=sluice sends."""

    def setUp(self):
        super().setUp()
        self.mock = self.start_mock()

    def echo(self, raw):
        status, headers, body = parse_response(raw)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def test_absolute_form_routes_by_path_and_host_is_the_authority(self):
        self.start_sluice(route(upstream_port=self.mock.port, rate="100/s",
                                extra="preserve_host = on"))
        doc = self.echo(raw_exchange(self.sluice.port,
                                     b"GET http://Elsewhere.Example:1/abs/p?q=1 HTTP/1.1\r\n"
                                     b"Host: ignored\r\nConnection: close\r\n\r\n"))
        self.assertEqual(doc["uri"], "/abs/p?q=1")
        self.assertEqual(doc["headers"]["Host"], "Elsewhere.Example:1")
        doc = self.echo(raw_exchange(self.sluice.port,
                                     b"GET https://api.example HTTP/1.0\r\n\r\n"))
        self.assertEqual(doc["uri"], "/")
        self.assertEqual(doc["headers"]["Host"], "api.example")
        # It reached the one upstream the config names.
        self.assertEqual([a[4] for a in read_arrivals(self.mock.log)], ["/abs/p?q=1", "/"])

    def test_absolute_form_is_normalised_and_routed_like_a_path(self):
        self.start_sluice(route("api", "/api", self.mock.port, "100/s") +
                          route("other", "/", self.mock.port, "100/s"))
        raw = raw_exchange(self.sluice.port,
                           b"GET http://h/api/x/../../_sluice/jobs HTTP/1.1\r\nHost: h\r\n"
                           b"Connection: close\r\n\r\n")
        status, headers, body = parse_response(raw)
        self.assert_sluice_error(status, headers, body, 400, "bad_request")
        raw = raw_exchange(self.sluice.port, b"GET http://h//api//%7Ex HTTP/1.1\r\nHost: h\r\n"
                                             b"Connection: close\r\n\r\n")
        self.assertEqual(self.echo(raw)["uri"], "/api/~x")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="api",
                                           outcome="relayed"), 1)

    def test_other_forms_stay_refused(self):
        self.start_sluice(route(upstream_port=self.mock.port, rate="100/s"))
        for head in (b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n",
                     b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
                     b"GET http://user:pw@h/x HTTP/1.1\r\nHost: h\r\n\r\n"):
            status, headers, body = parse_response(raw_exchange(self.sluice.port, head))
            self.assert_sluice_error(status, headers, body, 400, "bad_request")
        self.assertEqual(read_arrivals(self.mock.log), [])

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_curl_through_sluice_as_its_proxy(self):
        self.start_sluice(route(upstream_port=self.mock.port, rate="100/s"))
        cp = subprocess.run(["curl", "-sS", "--max-time", "10", "-x",
                             "http://127.0.0.1:%d" % self.sluice.port,
                             "http://api.example.invalid/v1/items?page=2"],
                            capture_output=True, text=True, timeout=30)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(json.loads(cp.stdout)["uri"], "/v1/items?page=2")


class UpgradeTest(SluiceTestCase):

    def test_websocket_upgrade_is_refused_without_a_token(self):
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        raw = raw_exchange(self.sluice.port,
                           b"GET /chat HTTP/1.1\r\nHost: s\r\nConnection: Upgrade\r\n"
                           b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", timeout=3)
        self.assertTrue(status_line(raw).startswith("HTTP/1.1 501 Not Implemented"), raw)
        status, headers, body = parse_response(raw)
        self.assert_sluice_error(status, headers, body, 501, "not_implemented")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_requests_total", route="default",
                                           outcome="not_implemented"), 1)
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"), 0)
        self.assertEqual(read_arrivals(mock.log), [])

    def test_h2c_upgrade_is_ignored(self):
        # RFC 9110 7.8: a server may ignore Upgrade; h2c offers are answered in
        # HTTP/1.1, as `curl --http2 http://...` expects.
        mock = self.start_mock()
        self.start_sluice(route(upstream_port=mock.port, rate="100/s"))
        status, _, body = self.request(self.sluice.port, "GET", "/h", headers={
            "Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
            "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
        self.assertEqual(status, 200)
        seen = json.loads(body)["headers"]
        self.assertNotIn("Upgrade", seen)
        self.assertNotIn("HTTP2-Settings", seen)


class RedirectTest(SluiceTestCase):
    """The upstream's own URLs come back as the client's: `curl -L` stays behind the limit."""

    def setUp(self):
        super().setUp()
        self.mock = self.start_mock()
        self.origin = "http://127.0.0.1:%d" % self.mock.port

    def redirect(self, location, extra=None, host=None):
        headers = {"X-Mock-Status": "302", "X-Mock-Header": "Location: " + location}
        conn = http.client.HTTPConnection("127.0.0.1", self.sluice.port, timeout=10)
        try:
            conn.putrequest("GET", "/api/start", skip_host=host is not None)
            if host is not None:
                conn.putheader("Host", host)
            for k, v in headers.items():
                conn.putheader(k, v)
            for v in extra or []:
                conn.putheader("X-Mock-Header", v)
            conn.endheaders()
            resp = conn.getresponse()
            resp.read()
            self.assertEqual(resp.status, 302)
            return resp.getheader("Location"), resp.getheader("Content-Location")
        finally:
            conn.close()

    def sluice_with(self, extra=""):
        self.start_sluice("[route api]\nmatch = /api\nupstream = %s/base\nrate = 100/s\n%s\n"
                          % (self.origin, extra))

    def test_location_under_the_upstream_comes_back_as_the_clients(self):
        self.sluice_with()
        me = "127.0.0.1:%d" % self.sluice.port
        loc, cloc = self.redirect(self.origin + "/base/api/next?x=1",
                                  extra=["Content-Location: %s/base/api/doc" % self.origin])
        self.assertEqual(loc, "http://%s/api/next?x=1" % me)
        self.assertEqual(cloc, "http://%s/api/doc" % me)
        # The Host the client used, whatever it is.
        loc, _ = self.redirect(self.origin + "/base/api/next", host="proxy.example:8080")
        self.assertEqual(loc, "http://proxy.example:8080/api/next")
        # The scheme in any case.
        loc, _ = self.redirect(self.origin.replace("http:", "HTTP:") + "/base/api/n")
        self.assertEqual(loc, "http://%s/api/n" % me)

    def test_a_stripped_prefix_is_put_back(self):
        # /api/start reached the upstream as /base/start: /base/next is /api/next here.
        self.sluice_with("strip_prefix = on")
        me = "127.0.0.1:%d" % self.sluice.port
        self.assertEqual(self.redirect(self.origin + "/base/next")[0], "http://%s/api/next" % me)

    def test_other_locations_stay_as_they_are(self):
        self.sluice_with()
        for loc in ("/base/api/relative", "next", "http://other.example/base/api/x",
                    self.origin + "/basement/x", self.origin + "/other"):
            self.assertEqual(self.redirect(loc)[0], loc)

    def test_rewrite_redirects_off(self):
        self.sluice_with("rewrite_redirects = off")
        loc = self.origin + "/base/api/next"
        self.assertEqual(self.redirect(loc)[0], loc)


class StatusLineTest(SluiceTestCase):
    """Status lines as the upstream wrote them; sluice's own with standard phrases."""

    def setUp(self):
        super().setUp()
        self.mock = self.start_mock()
        self.start_sluice(route(upstream_port=self.mock.port, rate="100/s"))

    def status_line_for(self, status, reason=None):
        head = "GET /s HTTP/1.1\r\nHost: s\r\nConnection: close\r\nX-Mock-Status: %d\r\n" % status
        if reason is not None:
            head += "X-Mock-Reason: %s\r\n" % reason
        return status_line(raw_exchange(self.sluice.port, (head + "\r\n").encode()))

    def test_reason_phrase_is_relayed(self):
        self.assertEqual(self.status_line_for(200, "Fine Thanks"), "HTTP/1.1 200 Fine Thanks")
        self.assertEqual(self.status_line_for(416, "Range Not Satisfiable"),
                         "HTTP/1.1 416 Range Not Satisfiable")
        self.assertEqual(self.status_line_for(451, "Unavailable For Legal Reasons"),
                         "HTTP/1.1 451 Unavailable For Legal Reasons")
        self.assertEqual(self.status_line_for(299, "Custom"), "HTTP/1.1 299 Custom")

    def test_target_too_long_for_the_upstream_is_414_at_intake(self):
        target = b"/" + b"a" * 9300
        raw = raw_exchange(self.sluice.port, b"GET " + target + b" HTTP/1.1\r\nHost: s\r\n"
                                             b"Connection: close\r\n\r\n")
        self.assertTrue(status_line(raw).startswith("HTTP/1.1 414 URI Too Long"), raw[:200])
        status, headers, body = parse_response(raw)
        self.assert_sluice_error(status, headers, body, 414, "uri_too_long")
        text = self.metrics()
        self.assertEqual(self.metric_value(text, "sluice_dispatched_total", route="default"), 0)
        self.assertEqual(read_arrivals(self.mock.log), [])


if __name__ == "__main__":
    unittest.main()
