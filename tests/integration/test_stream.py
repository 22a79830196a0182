"""Responses stream through bounded buffers (issue 15): large bodies on both
schemes with flat memory, a slow client slowing the upstream, failures after
the head relayed honestly (upstream_broken, never retried), a client that
leaves stopping the upstream transfer (client_gone), stored answers capped by
max_response_size, and the first byte before the last.

The client here is a raw socket that checks the mock's body pattern piece by
piece and keeps none of it. The upstream's side is read from the mock's
--stream-log (bytes written, instants of the first and last body byte, when
the peer left) and /_mock/stats: instants on CLOCK_MONOTONIC, the clock
time.clock_gettime_ns(CLOCK_MONOTONIC) reads here too, so an instant taken
by the client at an event (its first body byte, its close) compares with the
mock's directly.

SLUICE_STREAM_BIG (bytes, default 1 GiB) sizes the large transfers; the
sanitizer build sets 256 MiB (ASan makes every copy several times slower).
"""

import json
import os
import re
import socket
import time
import unittest

from harness import SluiceTestCase, read_arrivals, route, wait_for

MiB = 1 << 20
BIG = int(os.environ.get("SLUICE_STREAM_BIG", str(1 << 30)))
RSS_GROWTH_MAX = 16 * MiB                      # issue 15: "less than 16 MiB"
ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PIECE = 1 * MiB                                 # largest read, largest check
PATTERN = ALPHABET * (PIECE // len(ALPHABET) + 2)
# Under ASan freed memory sits in a quarantine (256 MiB by default) and would
# read as growth: keep it small for sluice here; no effect without ASan.
SLUICE_ENV = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"}


def mono_us():
    """Now on CLOCK_MONOTONIC in microseconds: the mock's clock."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def proc_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def sysctl_max(name):
    """Third field of net.ipv4.tcp_wmem / tcp_rmem: the autotuning ceiling."""
    with open("/proc/sys/net/ipv4/" + name) as f:
        return int(f.read().split()[2])


def read_stream_log(path):
    """The mock's --stream-log: one dict per streamed body that ended."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split(" ", 8)
            if len(p) < 9:
                continue
            inst = [None if x == "-" else int(x) for x in p[5:8]]
            out.append({"end_us": int(p[0]), "arrival": int(p[1]), "seq": p[2], "how": p[3],
                        "bytes": int(p[4]), "head_us": inst[0], "first_us": inst[1],
                        "last_us": inst[2], "path": p[8]})
    return out


class Response:
    """What the raw client saw. `complete`: the body ended as announced (the
    chunked terminator, or Content-Length bytes); `end`: how reading stopped
    ("complete", "eof", "reset", "stopped" by the reader)."""

    status = None
    headers = None
    chunked = False
    length = None
    body_len = 0
    complete = False
    end = None
    t_sent_us = None
    t_head_us = None
    t_first_us = None
    text = b""          # the start of a body that is not the pattern (not a 200)


class RawClient:
    """One HTTP/1.1 request on a raw socket; the body is checked against the
    mock's pattern (byte i = ALPHABET[i % 62]) as it arrives and dropped."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.eof = None
        self.r = Response()
        self.deadline = None

    def close(self):
        self.sock.close()

    def send(self, path, headers):
        head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % path
        head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
        self.r.t_sent_us = mono_us()
        self.sock.sendall(head.encode())

    def _recv(self, n):
        if self.eof is not None:
            return b""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("response not read within its bound (%d body bytes so far)"
                                 % self.r.body_len)
        self.sock.settimeout(min(left, 30.0))
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.eof = "reset"
            return b""
        except socket.timeout:
            raise AssertionError("no byte for %.0f s (%d body bytes so far)"
                                 % (min(left, 30.0), self.r.body_len))
        if not data:
            self.eof = "eof"
        return data

    def _take(self, n):
        if not self.buf:
            return self._recv(n)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise AssertionError("line too long: %r" % self.buf[:200])
            data = self._recv(4096)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_head(self, timeout):
        """Status and headers; False if the connection ended before them."""
        self.deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            data = self._recv(65536)
            if not data:
                return False
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.r.t_head_us = mono_us()
        lines = head.decode("latin-1").split("\r\n")
        self.r.status = int(lines[0].split()[1])
        self.r.headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.r.headers[k.strip().lower()] = v.strip()
        self.r.chunked = "chunked" in self.r.headers.get("transfer-encoding", "").lower()
        if "content-length" in self.r.headers:
            self.r.length = int(self.r.headers["content-length"])
        return True

    def _body_bytes(self, data):
        if self.r.t_first_us is None and data:
            self.r.t_first_us = mono_us()
        off = self.r.body_len
        if self.r.status != 200:
            self.r.text += data[:4096 - len(self.r.text)]
            self.r.body_len += len(data)
            return
        s = off % len(ALPHABET)
        if data != PATTERN[s:s + len(data)]:
            raise AssertionError("body differs from the pattern in bytes %d..%d"
                                 % (off, off + len(data)))
        self.r.body_len += len(data)

    def _budget(self, rate, t0, stop_bytes):
        """Bytes the reader may take now (None: any)."""
        n = PIECE
        if stop_bytes is not None:
            n = min(n, stop_bytes - self.r.body_len)
        if rate is not None:
            allowed = int(rate * (time.monotonic() - t0)) + 65536 - self.r.body_len
            n = min(n, 65536, allowed)
        return n

    def read_body(self, timeout, rate=None, stop_after_s=None, stop_bytes=None):
        """Reads the body until it ends, or (stopped) until stop_after_s seconds
        after this call or stop_bytes bytes; rate: at most that many bytes/s."""
        self.deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        remaining = None if self.r.chunked else self.r.length
        chunk_left = 0
        while True:
            if stop_after_s is not None and time.monotonic() - t0 >= stop_after_s:
                self.r.end = "stopped"
                return self.r
            if stop_bytes is not None and self.r.body_len >= stop_bytes:
                self.r.end = "stopped"
                return self.r
            n = self._budget(rate, t0, stop_bytes)
            if n <= 0:
                time.sleep(0.005)
                continue
            if self.r.chunked:
                if chunk_left == 0:
                    line = self._line()
                    if line is None:
                        break
                    size = int(line.split(b";")[0], 16)
                    if size == 0:
                        # the terminator; trailers end with an empty line
                        while True:
                            line = self._line()
                            if line is None or line == b"":
                                break
                        self.r.complete = line == b""
                        break
                    chunk_left = size
                data = self._take(min(n, chunk_left))
                if not data:
                    break
                chunk_left -= len(data)
                self._body_bytes(data)
                if chunk_left == 0:
                    crlf = self._line()
                    if crlf is None:
                        break
                    if crlf != b"":
                        raise AssertionError("chunk not followed by CRLF: %r" % crlf[:50])
            elif remaining is not None:
                if remaining == 0:
                    self.r.complete = True
                    break
                data = self._take(min(n, remaining))
                if not data:
                    break
                remaining -= len(data)
                self._body_bytes(data)
            else:
                data = self._take(n)
                if not data:
                    break
                self._body_bytes(data)
        self.r.end = "complete" if self.r.complete else (self.eof or "eof")
        return self.r


class MockStreamTest(SluiceTestCase):
    """The tool the streaming tests rely on, without sluice: the mock's
    streamed bodies and its record of them, and this file's raw client."""

    def direct(self, mock, path, headers, **read):
        c = RawClient(mock.port, rcvbuf=read.pop("rcvbuf", None))
        try:
            c.send(path, dict(headers, Connection="close"))
            self.assertTrue(c.read_head(30))
            return c.read_body(60, **read)
        finally:
            c.close()

    def test_streamed_bodies_and_their_record(self):
        slog = os.path.join(self.workdir, "mock.streams")
        mock = self.start_mock("--stream-log", slog)
        size = 80 * MiB
        r = self.direct(mock, "/cl", {"X-Mock-Body-Size": str(size)})
        self.assertEqual((r.status, r.length, r.body_len, r.complete), (200, size, size, True))
        self.assertNotIn("x-mock-body-sha", r.headers)  # only up to 64 MiB
        r = self.direct(mock, "/chunked", {"X-Mock-Body-Size": "1000", "X-Mock-Chunked": "1"})
        self.assertEqual((r.chunked, r.body_len, r.complete), (True, 1000, True))
        r = self.direct(mock, "/closed", {"X-Mock-Body-Size": str(size),
                                          "X-Mock-Close-After": str(3 * MiB)})
        self.assertEqual((r.length, r.body_len, r.complete, r.end),
                         (size, 3 * MiB, False, "eof"))
        r = self.direct(mock, "/reset", {"X-Mock-Endless": "1", "X-Mock-Reset-After": str(MiB)})
        self.assertFalse(r.complete)
        self.assertLessEqual(r.body_len, MiB)
        t0 = mono_us()
        r = self.direct(mock, "/paced", {"X-Mock-Endless": "1", "X-Mock-Rate": "2m"},
                        stop_after_s=1.5)
        t1 = mono_us()
        self.assertEqual(r.end, "stopped")
        # 3 MiB at the nominal pace; a loaded machine reads less, never more.
        self.assertGreater(r.body_len, 1 * MiB)
        self.assertLess(r.body_len, 4 * MiB)
        wait_for(lambda: len(read_stream_log(slog)) == 5, what="5 records")
        recs = read_stream_log(slog)
        self.assertEqual([(x["arrival"], x["how"], x["path"]) for x in recs],
                         [(1, "complete", "/cl"), (2, "complete", "/chunked"),
                          (3, "closed", "/closed"), (4, "reset", "/reset"),
                          (5, "peer_closed", "/paced")])
        self.assertEqual([x["bytes"] for x in recs[:4]], [size, 1000, 3 * MiB, MiB])
        paced = recs[4]
        self.assertIsNone(paced["last_us"])
        self.assertTrue(t0 < paced["head_us"] <= paced["first_us"] < paced["end_us"])
        self.assertLess(paced["end_us"] - t1, 500_000, "the mock saw the close at once")
        stats = self.mock_stats(mock)["streams"]
        self.assertEqual((stats["started"], stats["active"]), (5, 0))
        self.assertEqual(stats["body_bytes"], sum(x["bytes"] for x in recs))

    def test_a_slow_reader_slows_the_mock(self):
        mock = self.start_mock()
        c = RawClient(mock.port, rcvbuf=64 << 10)
        try:
            c.send("/slow", {"X-Mock-Body-Size": str(1 << 30), "Connection": "close"})
            self.assertTrue(c.read_head(10))
            r = c.read_body(30, rate=2 * MiB, stop_after_s=2)
            written = self.mock_stats(mock)["streams"]["body_bytes"]
        finally:
            c.close()
        self.assertLess(written, r.body_len + sysctl_max("tcp_wmem") + 2 * MiB)
        with open("/proc/%d/status" % mock.p.pid) as f:
            hwm = int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
        self.assertLess(hwm, 32 * 1024, "the mock's own peak RSS (kB)")


class StreamTest(SluiceTestCase):

    def start_stream_mock(self, tls=False):
        slog = os.path.join(self.workdir, "mock.streams")
        args = ["--stream-log", slog]
        mock = self.start_tls_mock(*args) if tls else self.start_mock(*args)
        mock.slog = slog
        return mock

    def start_proxy(self, mock, extra="", server="", tls=False):
        if tls:
            extra = "ca_file = %s\n%s" % (self.pki().ca, extra)
        return self.start_sluice(route(upstream_port=mock.port, rate="100/s", extra=extra,
                                       scheme="https" if tls else "http"),
                                 server=server, env=SLUICE_ENV)

    def warm_up(self, s):
        """One small answer through sluice first, so that what libcurl, TLS and
        the allocators set up once is in the baseline."""
        c = RawClient(s.port)
        try:
            c.send("/warm", {"X-Mock-Body-Size": "100000", "Connection": "close"})
            self.assertTrue(c.read_head(30))
            self.assertTrue(c.read_body(30).complete)
        finally:
            c.close()
        time.sleep(0.1)
        return proc_kb(s.p.pid, "VmRSS")

    def get(self, s, path, headers, timeout=120, **read):
        c = RawClient(s.port)
        try:
            c.send(path, dict(headers, Connection="close"))
            self.assertTrue(c.read_head(timeout), "no response head")
            r = c.read_body(timeout, **read)
        finally:
            c.close()
        self.assert_200(r)
        return r

    def assert_200(self, r):
        self.assertEqual(r.status, 200, "X-Sluice-Error %s: %r" % (
            r.headers.get("x-sluice-error"), r.text[:500]))

    def outcome(self, outcome):
        return self.metric_value(self.metrics(), "sluice_requests_total", route="default",
                                 outcome=outcome)

    def wait_outcome(self, outcome, n=1, timeout=10):
        try:
            wait_for(lambda: self.outcome(outcome) == n, timeout=timeout,
                     what="outcome %s = %d" % (outcome, n))
        except AssertionError:
            self.fail("sluice_requests_total{outcome=%r} is %r, want %d; access log:\n%s"
                      % (outcome, self.outcome(outcome), n,
                         "\n".join(l for l in self.sluice.stderr_text().splitlines()
                                   if "msg=request" in l)[-2000:]))
        self.assertIn("outcome=%s " % outcome, self.sluice.stderr_text())

    def stream_record(self, mock, arrival, timeout=10):
        """The mock's --stream-log line for that arrival, once it ended."""
        return wait_for(lambda: next((r for r in read_stream_log(mock.slog)
                                      if r["arrival"] == arrival), None),
                        timeout=timeout, what="the mock's record of arrival %d" % arrival)

    def assert_rss_growth(self, s, base_kb, limit, what):
        grown = proc_kb(s.p.pid, "VmHWM") * 1024 - base_kb * 1024
        self.assertLess(grown, limit, "%s: sluice's peak RSS grew by %.1f MiB (limit %.1f MiB)"
                        % (what, grown / MiB, limit / MiB))

    # --- large bodies, flat memory -----------------------------------------

    def big_download(self, tls):
        mock = self.start_stream_mock(tls=tls)
        s = self.start_proxy(mock, extra="timeout = 300s", tls=tls)
        base = self.warm_up(s)
        t0 = time.monotonic()
        r = self.get(s, "/big", {"X-Mock-Body-Size": str(BIG)}, timeout=240)
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200)
        self.assertEqual(r.length, BIG)
        self.assertTrue(r.complete, "body ended (%s) after %d of %d bytes" % (r.end, r.body_len, BIG))
        self.assertEqual(r.body_len, BIG)
        self.assert_rss_growth(s, base, RSS_GROWTH_MAX, "%d MiB over %s in %.1f s"
                               % (BIG // MiB, "https" if tls else "http", took))
        rec = self.stream_record(mock, 2)
        self.assertEqual((rec["how"], rec["bytes"]), ("complete", BIG))
        self.wait_outcome("relayed", 2)

    def test_big_body_over_http_with_flat_memory(self):
        self.big_download(tls=False)

    def test_big_body_over_https_with_flat_memory(self):
        self.big_download(tls=True)

    # --- flow control --------------------------------------------------------

    def test_slow_client_slows_the_upstream(self):
        """A client reading 1 MiB/s from a fast upstream: sluice holds about
        stream_buffer, and the mock's writes stay within what the client read
        plus the buffers in between (sluice's and the kernel's)."""
        stream_buffer = 256 << 10
        mock = self.start_stream_mock()
        s = self.start_proxy(mock, extra="timeout = 120s",
                             server="stream_buffer = %dk" % (stream_buffer >> 10))
        base = self.warm_up(s)
        size = min(BIG, 256 * MiB)
        c = RawClient(s.port, rcvbuf=64 << 10)
        try:
            c.send("/slow", {"X-Mock-Body-Size": str(size), "Connection": "close"})
            self.assertTrue(c.read_head(60), "no response head")
            r = c.read_body(60, rate=1 * MiB, stop_after_s=4)
            self.assert_200(r)
            self.assertEqual((r.status, r.end), (200, "stopped"), "ended after %d bytes" % r.body_len)
            written = self.mock_stats(mock)["streams"]["body_bytes"]
            read = r.body_len
            self.assert_rss_growth(s, base, stream_buffer + 8 * MiB, "slow client")
        finally:
            c.close()
        # Between the mock and the client: the mock's send buffer and sluice's
        # receive buffer, stream_buffer, sluice's send buffer and the client's
        # receive buffer (64 KiB asked, doubled by the kernel), and libcurl's
        # own buffer. Autotuned socket buffers stop at tcp_wmem / tcp_rmem.
        wmem, rmem = sysctl_max("tcp_wmem"), sysctl_max("tcp_rmem")
        allowance = 2 * wmem + rmem + stream_buffer + 2 * (128 << 10) + 2 * MiB
        self.assertGreater(read, 2 * MiB)
        self.assertLessEqual(read, 5 * MiB)
        self.assertLess(written, read + allowance,
                        "the mock wrote %.1f MiB while the client read %.1f MiB (allowed: "
                        "%.1f MiB of buffers)" % (written / MiB, read / MiB, allowance / MiB))

    # --- failures after the head -----------------------------------------------

    def test_endless_body_cut_by_the_route_timeout(self):
        mock = self.start_stream_mock()
        s = self.start_proxy(mock, extra="timeout = 2s")
        t0 = time.monotonic()
        r = self.get(s, "/endless", {"X-Mock-Endless": "1", "X-Mock-Rate": "1m"}, timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, "the head was relayed as it came")
        self.assertTrue(r.chunked)
        self.assertFalse(r.complete, "an endless body cut short must not end with the terminator")
        self.assertIn(r.end, ("eof", "reset"))
        self.assertGreater(r.body_len, 512 << 10)
        self.assertGreater(took, 1.5)
        self.assertLess(took, 10)
        self.wait_outcome("upstream_broken")
        self.assertEqual(len(read_arrivals(mock.log)), 1, "never retried")
        rec = self.stream_record(mock, 1)
        self.assertEqual(rec["how"], "peer_closed", "sluice ended the upstream transfer")

    def reset_mid_body(self, headers, path):
        mock = self.start_stream_mock()
        s = self.start_proxy(mock, extra="retries = 2")
        size = 32 * MiB
        r = self.get(s, path, dict(headers, **{"X-Mock-Body-Size": str(size),
                                                "X-Mock-Reset-After": str(4 * MiB)}), timeout=30)
        self.assertEqual(r.status, 200, "the head was relayed before the reset")
        self.assertFalse(r.complete, "a reset body must not look complete")
        self.assertIn(r.end, ("eof", "reset"))
        self.assertLessEqual(r.body_len, 4 * MiB)
        self.assertEqual(self.stream_record(mock, 1)["how"], "reset")
        self.wait_outcome("upstream_broken")
        time.sleep(0.3)
        self.assertEqual(len(read_arrivals(mock.log)), 1, "never retried: its head went out")
        self.assertFalse(self.outcome("relayed"), "counted once, as upstream_broken")
        return r

    def test_reset_mid_body_with_content_length(self):
        r = self.reset_mid_body({}, "/reset-cl")
        self.assertEqual(r.length, 32 * MiB)

    def test_reset_mid_chunked_body(self):
        r = self.reset_mid_body({"X-Mock-Chunked": "1"}, "/reset-chunked")
        self.assertTrue(r.chunked)

    # --- a client that leaves ------------------------------------------------------

    def test_client_gone_stops_the_upstream_transfer(self):
        mock = self.start_stream_mock()
        s = self.start_proxy(mock, extra="timeout = 8s")
        base = self.warm_up(s)
        c = RawClient(s.port)
        try:
            # 200 MiB/s: fast, yet a proxy that buffers it cannot reach more
            # than 1.6 GB before the route timeout.
            c.send("/endless", {"X-Mock-Endless": "1", "X-Mock-Rate": "200m"})
            self.assertTrue(c.read_head(5), "no head within 5 s of an endless body")
            r = c.read_body(30, stop_bytes=32 * MiB)
            self.assert_200(r)
            self.assertEqual((r.status, r.end, r.body_len), (200, "stopped", 32 * MiB))
            # The instant of the hang-up, on the mock's clock, taken at the event.
            t_close = mono_us()
        finally:
            c.close()
        rec = self.stream_record(mock, 2, timeout=15)
        self.assertEqual(rec["how"], "peer_closed")
        late_ms = (rec["end_us"] - t_close) / 1000
        self.assertLess(late_ms, 1000, "the mock saw its connection closed %.0f ms after the "
                        "client left, having written %.1f MiB" % (late_ms, rec["bytes"] / MiB))
        self.wait_outcome("client_gone")
        self.assert_rss_growth(s, base, RSS_GROWTH_MAX, "endless download")
        time.sleep(0.5)
        self.assertEqual(self.mock_stats(mock)["streams"]["active"], 0)
        self.assertEqual(len(read_arrivals(mock.log)), 2)

    # --- stored answers stay capped ---------------------------------------------------

    def test_stored_answers_over_max_response_size(self):
        mock = self.start_stream_mock()
        s = self.start_proxy(mock, extra="max_response_size = 1m")
        five = str(5 * MiB)
        reqs = [{"path": "/item-cl", "headers": {"X-Mock-Body-Size": five}},
                {"path": "/item-chunked", "headers": {"X-Mock-Body-Size": five,
                                                      "X-Mock-Chunked": "1"}},
                {"path": "/item-fits", "headers": {"X-Mock-Body-Size": str(MiB)}}]
        status, _, body = self.request(s.port, "POST", "/_sluice/batch",
                                       body=json.dumps({"requests": reqs}).encode(),
                                       headers={"Content-Type": "application/json"}, timeout=60)
        self.assertEqual(status, 200, body)
        cl, chunked, fits = json.loads(body)["responses"]
        for item in (cl, chunked):
            self.assertEqual((item["status"], item["error"]), (502, "response_too_large"), item)
        self.assertEqual((fits["status"], len(fits["body"])), (200, MiB))
        for path, extra in (("/job-cl", {}), ("/job-chunked", {"X-Mock-Chunked": "1"})):
            status, h, body = self.request(s.port, "GET", path, headers=dict(
                extra, **{"Prefer": "respond-async", "X-Mock-Body-Size": five}))
            self.assertEqual(status, 202, body)
            loc = h["location"]

            def finished():
                st, _, b = self.request(s.port, "GET", loc)
                doc = json.loads(b)
                return doc if doc["state"] in ("done", "failed") else None
            doc = wait_for(finished, timeout=30, what="job %s" % path)
            self.assertEqual((doc["state"], doc["status"]), ("failed", 502), doc)
            self.assertEqual(doc["headers"]["x-sluice-error"], "response_too_large")
        # A client connection is not capped: the same answer streams whole.
        r = self.get(s, "/sync", {"X-Mock-Body-Size": five}, timeout=30)
        self.assertEqual((r.status, r.body_len, r.complete), (200, 5 * MiB, True))
        self.wait_outcome("response_too_large", 4)

    def test_stored_answer_stops_reading_at_the_cap(self):
        """A job whose answer is far over max_response_size: sluice does not
        hold it, and stops the upstream transfer rather than drain it."""
        mock = self.start_stream_mock()
        s = self.start_proxy(mock, extra="max_response_size = 1m\ntimeout = 120s")
        base = self.warm_up(s)
        size = min(BIG, 512 * MiB)
        status, h, body = self.request(s.port, "GET", "/job-huge", headers={
            "Prefer": "respond-async", "X-Mock-Body-Size": str(size), "X-Mock-Chunked": "1"})
        self.assertEqual(status, 202, body)

        def finished():
            st, _, b = self.request(s.port, "GET", h["location"])
            doc = json.loads(b)
            return doc if doc["state"] in ("done", "failed") else None
        doc = wait_for(finished, timeout=60, what="the job")
        self.assertEqual((doc["status"], doc["headers"]["x-sluice-error"]),
                         (502, "response_too_large"))
        self.assert_rss_growth(s, base, RSS_GROWTH_MAX, "stored answer of %d MiB" % (size // MiB))
        rec = self.stream_record(mock, 2)
        self.assertEqual(rec["how"], "peer_closed", "the upstream transfer was stopped")
        self.assertLess(rec["bytes"], 64 * MiB)

    # --- latency ---------------------------------------------------------------------

    def test_first_byte_of_100mib_within_50ms(self):
        mock = self.start_stream_mock()
        s = self.start_proxy(mock)
        self.warm_up(s)
        size = 100 * MiB
        ttfb = []
        for i in range(3):
            c = RawClient(s.port)
            try:
                c.send("/ttfb/%d" % i, {"X-Mock-Body-Size": str(size), "Connection": "close"})
                self.assertTrue(c.read_head(60))
                r = c.read_body(60)
            finally:
                c.close()
            self.assert_200(r)
            self.assertEqual((r.status, r.body_len, r.complete), (200, size, True))
            ttfb.append((r.t_first_us - r.t_sent_us) / 1000)
        self.assertLess(min(ttfb), 50, "time to first byte of 100 MiB (ms): %s"
                        % ", ".join("%.1f" % t for t in ttfb))

    def test_first_byte_reaches_the_client_before_the_last_leaves_the_upstream(self):
        """100 MiB written by the mock at 50 MiB/s: about 2 s between its first
        and last body byte. The client's first byte must come well inside
        that span, on the same clock, however loaded the machine is."""
        mock = self.start_stream_mock()
        s = self.start_proxy(mock)
        size = 100 * MiB
        r = self.get(s, "/paced", {"X-Mock-Body-Size": str(size), "X-Mock-Rate": "50m"},
                     timeout=60)
        self.assertEqual((r.status, r.body_len, r.complete), (200, size, True))
        rec = self.stream_record(mock, 1)
        self.assertEqual(rec["how"], "complete")
        self.assertGreater(rec["last_us"] - rec["first_us"], 1_500_000)
        ahead_ms = (rec["last_us"] - r.t_first_us) / 1000
        self.assertGreater(ahead_ms, 1000, "the client's first body byte came %.1f ms before "
                           "the mock wrote its last (negative: after; want > 1000 ms of a "
                           "~2000 ms body)" % ahead_ms)


if __name__ == "__main__":
    unittest.main()
