#!/usr/bin/env python3
"""soak.py - a bounded soak of sluice: mixed traffic above the limits for a
fixed time, with reloads, upstream failures and client hang-ups; then checks
the accounting, the exit, the sanitizer (or valgrind) report and RSS.

Usage: bench/soak.py [--seconds 120] [--binary build-asan/sluice] [--valgrind]
                     [--mock PATH] [--reload-every 10] [--seed 1] [--keep]

Starts three mock upstreams (tests/tools/mock_upstream) and sluice on
127.0.0.1 with routes api (/api/: 50/s or 30/s, burst 5, quota 2200/m), slow
(/slow/: 20/s or 10/s, quota 800/m, fair key, upstream latency 300 ms) and
extra (/api/extra/: added by the first reload, held at 1/m one reload before
it is removed half way, so that nothing of it is in flight then and its
parked requests move to api). 88 closed-loop clients keep every route's
queue non-empty. Requests mix methods (GET HEAD POST PUT DELETE), bodies of
0 to 256 KiB (some chunked, some over max_body_size), priority lanes,
X-Sluice-Deadline, Idempotency-Key, large responses (X-Mock-Body-Size up to
6 MiB), upstream error statuses, unrouted, malformed and oversized requests,
and client hang-ups of two kinds: after the whole request was sent (while
parked, in flight, or in the middle of the answer: sluice must count each
one) and in the middle of the request head or body (never complete: sluice
must not count it). Every 6 s one mock is told to fail (503/429 with or
without Retry-After, 502), hang, drop a connection or slow down; every
--reload-every seconds a SIGHUP swaps the limits (one reload is an invalid
file, which must be refused).

Checks, each one failing the run (exit 1):
- accounting: the sum of sluice_requests_total over every route and outcome
  (route="" included, plus the removed route's totals scraped just before
  its removal) equals the complete requests sent; the access log has one
  line per complete request (the drain included);
- integrity: every relayed echo answers the request that got it (X-Seq,
  method, target, body length and FNV-1a), every large body has the right
  length and bytes;
- no client-side surprises: no transport error or client timeout on a
  complete request, every reload applied (the invalid one refused);
- exit: a last burst is parked, SIGTERM drains (each of those clients gets
  200 or 503 draining) and sluice exits 0 with no AddressSanitizer,
  LeakSanitizer or UBSan report (leak check at exit; ASan's quarantine is
  set to 16 MiB so that RSS shows sluice, not 256 MiB of quarantined
  frees), or under --valgrind with no error and nothing definitely lost;
- RSS (VmRSS, every second) is flat after the warm-up (20 s): the maximum
  over the second half of the rest of the run is at most the maximum over
  the first half plus max(10 %, 8 MiB). Maxima, not means or slopes: RSS
  swings by up to 20 MiB with the large responses in flight (buffered whole)
  and the allocator keeps freed memory, so RSS follows the high-water mark,
  which a bounded backlog reaches in each half while a leak or an unbounded
  structure keeps raising it. With ~3,000 requests per half the margin
  catches growth of ~2.5 KiB per request; smaller leaks of unreachable
  memory are the leak checker's.

Printed as information: upstream arrivals per window (the limits change at
every reload, and the mock dates an arrival once the whole request is in),
how long each route's queue was non-empty, hang-ups seen while parked or in
flight, RSS medians and trend. Standard library only; every process started
here is stopped at the end; the work directory (configs, logs, mock arrival
logs, requests.tsv, summary.json) is kept on failure or with --keep.
"""

import argparse
import asyncio
import collections
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analyze as A  # noqa: E402
from procs import Procs, free_port, port_open, rss_kb, wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024

# ---- the scenario ------------------------------------------------------------

# Limits alternate between these two sets at every reload; quotas stay.
LIMITS = [{"api": "50/s", "slow": "20/s", "extra": "20/s"},
          {"api": "30/s", "slow": "10/s", "extra": "10/s"}]
QUOTAS = {"api": "2200/m", "slow": "800/m"}
MAX_BODY = 192 * 1024            # max_body_size: some bodies are over it
WORKERS = {"api": 56, "slow": 24, "extra": 8}   # closed-loop clients per route
PATHS = {"api": "/api/v1/items", "slow": "/slow/jobs", "extra": "/api/extra/things"}
SLOW_BASE = "/b"                 # slow's upstream base path
TENANTS = ["t1", "t2", "t3"]
BODY_SIZES = [0, 1, 10, 100, 1000, 4096, 16384, 65536, 100000, 150000,
              MAX_BODY, MAX_BODY + 1, 262144]
LARGE_RESPONSES = [100 * 1024, 512 * 1024, 2 * MIB, 6 * MIB]
DEADLINES = ["300ms", "800ms", "1500ms", "3s", "10s"]
GONE_AFTER_S = (0.02, 2.5)       # a hang-up while waiting comes this long after the request
DRAIN_REQUESTS = 60
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Upstream trouble, one every CHAOS_EVERY seconds, in turn: (mock, query).
CHAOS_EVERY = 6.0
CHAOS = [
    ("api", "fail_next=2&fail_status=503&retry_after=1"),
    ("slow", "fail_next=2&fail_status=429&retry_after=1"),
    ("api", "fail_next=3&fail_status=502&retry_after=-1"),
    ("slow", "latency=600"),
    ("extra", "fail_next=2&fail_status=503&retry_after=-1"),
    ("api", "fail_next=1&fail_status=429&retry_after=-1"),
    ("slow", "hang_next=1&latency=200"),
    ("api", "drop_next=1&latency=40"),
    ("extra", "fail_next=1&fail_status=429&retry_after=1"),
    ("api", "hang_next=1&latency=0"),
]
CALM = "fail_next=0&hang_next=0&drop_next=0&retry_after=-1&latency=%d"
MOCK_LATENCY = {"api": 0, "slow": 300, "extra": 0}


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def pattern_ok(body, want):
    if len(body) != want:
        return False
    whole = PATTERN * (min(want, 1 << 16) // len(PATTERN) + 1)
    for off in range(0, want, 1 << 16):
        piece = body[off:off + (1 << 16)]
        start = off % len(PATTERN)
        if piece != whole[start:start + len(piece)]:
            return False
    return True


# ---- a tiny HTTP/1.1 client on asyncio streams ---------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def code(self):
        return self.headers.get("x-sluice-error", "")

    def closes(self):
        return "close" in self.headers.get("connection", "").lower()


async def read_head(reader):
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k, v = k.strip().lower(), v.strip()
            headers[k] = headers[k] + ", " + v if k in headers else v
        if status != 100:
            return status, headers


async def read_body(reader, method, status, headers):
    if method == "HEAD" or status in (204, 304) or status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


async def read_response(reader, method):
    status, headers = await read_head(reader)
    return Response(status, headers, await read_body(reader, method, status, headers))


async def simple_request(port, method, target, timeout=10.0):
    """One request on its own connection (admin scrapes, mock control)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        writer.write(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n" % (method, target)).encode())
        return await asyncio.wait_for(read_response(reader, method), timeout)
    finally:
        writer.close()


def parse_metrics(text):
    """[(name, {label: value}, float)] from Prometheus text."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


class Metrics:
    def __init__(self, text):
        self.samples = parse_metrics(text)

    def total(self, name, **want):
        return sum(v for n, labels, v in self.samples
                   if n == name and all(labels.get(k) == x for k, x in want.items()))

    def by(self, name, key, **want):
        out = collections.Counter()
        for n, labels, v in self.samples:
            if n == name and all(labels.get(k) == x for k, x in want.items()):
                out[labels.get(key, "")] += v
        return out


# ---- the soak ------------------------------------------------------------------

class Soak:
    def __init__(self, o):
        self.o = o
        self.rng = random.Random(o.seed)
        self.workdir = tempfile.mkdtemp(prefix="sluice-soak-")
        self.procs = Procs(self.workdir)
        self.seq = 0
        self.outcomes = collections.Counter()     # client side, complete requests
        self.cut = collections.Counter()          # never complete: sluice must not count
        self.gone = collections.Counter()         # complete, then the client hung up
        self.problems = collections.Counter()     # client-side surprises
        self.problem_examples = []
        self.integrity_errors = []
        self.complete = 0
        self.relayed_checked = 0
        self.rss = []                             # (t, KiB)
        self.depth_samples = collections.defaultdict(list)
        self.reloads = []                         # (t, what, ok)
        self.chaos_done = collections.Counter()
        self.extra_state = None                   # None | "on" | "quiet"
        self.removed = None                       # snapshot of extra when removed
        self.migrated = 0
        self.checks = []
        self.running = True
        self.sent_log = []                        # (seq, pool, method, body, chunked, ...)
        self.bodies = {}
        for n in BODY_SIZES:
            data = random.Random(n).randbytes(n)
            self.bodies[n] = (data, fnv1a(data))

    # -- processes

    def start(self):
        o = self.o
        self.mocks = {}
        for name in ("api", "slow", "extra"):
            port = free_port()
            log = os.path.join(self.workdir, "mock-%s.log" % name)
            argv = [o.mock, "--listen", "127.0.0.1:%d" % port, "--log", log,
                    "--latency", str(MOCK_LATENCY[name]),
                    "--max-seconds", str(int(o.seconds) + 900)]
            p = self.procs.start("mock-" + name, argv)
            wait_for(lambda: port_open(port) or not p.alive(), 10, "mock " + name)
            if not p.alive():
                raise RuntimeError("mock %s exited: %s" % (name, p.stderr_tail()))
            p.port, p.log = port, log
            self.mocks[name] = p
        self.port, self.admin = free_port(), free_port()
        self.conf = os.path.join(self.workdir, "sluice.conf")
        self.write_config(0, None)
        # every variant of the file is valid before any is used
        for alt in (0, 1):
            for extra in (None, "on", "quiet"):
                path = os.path.join(self.workdir, "check.conf")
                with open(path, "w") as f:
                    f.write(self.config_text(alt, extra))
                cp = _run([o.binary, "-t", "-c", path])
                if cp[0] != 0:
                    raise RuntimeError("config rejected: %s" % cp[1])
        env_asan = ("detect_leaks=1:halt_on_error=1:abort_on_error=0:"
                    "quarantine_size_mb=%d" % o.quarantine_mb)
        os.environ["ASAN_OPTIONS"] = env_asan + (
            ":" + os.environ["ASAN_OPTIONS"] if os.environ.get("ASAN_OPTIONS") else "")
        os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        wrap = []
        if o.valgrind:
            self.vg_log = os.path.join(self.workdir, "valgrind.log")
            wrap = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
                    "--errors-for-leak-kinds=definite", "--error-exitcode=99",
                    "--log-file=" + self.vg_log]
        self.sluice = self.procs.start("sluice", wrap + [o.binary, "-c", self.conf])
        wait_for(lambda: not self.sluice.alive() or
                 (port_open(self.port) and port_open(self.admin)),
                 120 if o.valgrind else 20, "sluice")
        if not self.sluice.alive():
            raise RuntimeError("sluice exited: %s" % self.sluice.stderr_tail())

    def config_text(self, alt, extra):
        lim = LIMITS[alt]
        m = self.mocks
        server = [
            "[server]",
            "listen = 127.0.0.1:%d" % self.port,
            "admin_listen = 127.0.0.1:%d" % self.admin,
            "max_connections = 1000",
            "client_timeout = 120s",
            "client_header_timeout = 10s",
            "client_body_timeout = 30s",
            "max_body_size = %d" % MAX_BODY,
            "drain_timeout = 2s",
            "log_level = info",
            "access_log = on",
            "",
            "[queue]",
            "max_depth = 90",
            "max_bytes = 4m",
            "overflow = reject",
            "timeout = 30s",
        ]
        routes = [
            ["[route api]",
             "match = /api/",
             "upstream = http://127.0.0.1:%d" % m["api"].port,
             "rate = %s" % lim["api"],
             "burst = 5",
             "quota = %s" % QUOTAS["api"],
             "max_in_flight = 16",
             "timeout = 3s",
             "retries = 2"],
            ["[route slow]",
             "match = /slow/",
             "upstream = http://127.0.0.1:%d%s" % (m["slow"].port, SLOW_BASE),
             "rate = %s" % lim["slow"],
             "quota = %s" % QUOTAS["slow"],
             "max_in_flight = 8",
             "timeout = 3s",
             "retries = 1",
             "fair_key = header:X-Tenant"],
        ]
        if extra is not None:
            routes.append(
                ["[route extra]",
                 "match = /api/extra/",
                 "upstream = http://127.0.0.1:%d" % m["extra"].port,
                 # quiet: no dispatch until the removal, so none is in flight then
                 "rate = %s" % ("1/m" if extra == "quiet" else lim["extra"]),
                 "max_in_flight = 4",
                 "timeout = 3s",
                 "retries = 1"])
        out = server
        for r in routes:
            out += [""] + r + list(self.o.route_option)
        return "\n".join(out) + "\n"

    def write_config(self, alt, extra, text=None):
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text if text is not None else self.config_text(alt, extra))
        os.replace(tmp, self.conf)

    # -- helpers

    def problem(self, what, example):
        self.problems[what] += 1
        if len(self.problem_examples) < 20:
            self.problem_examples.append("%s: %s" % (what, example))

    async def metrics(self):
        r = await simple_request(self.admin, "GET", "/metrics")
        if r.status != 200:
            raise RuntimeError("GET /metrics answered %d" % r.status)
        return Metrics(r.body.decode("utf-8", "replace"))

    async def mock_config(self, name, query):
        r = await simple_request(self.mocks[name].port, "POST", "/_mock/config?" + query)
        if r.status != 200:
            raise RuntimeError("mock %s config %s answered %d" % (name, query, r.status))

    def now(self):
        return time.monotonic() - self.t0

    # -- one request

    def make_spec(self, pool):
        rng = self.rng
        quiet = pool == "extra" and self.extra_state == "quiet"
        self.seq += 1
        s = {"seq": "s%d" % self.seq, "pool": pool, "action": "normal", "headers": [],
             "body": None, "chunked": False, "large": None}
        method = rng.choices(["GET", "HEAD", "POST", "PUT", "DELETE"], [35, 10, 25, 15, 15])[0]
        path = PATHS[pool] + "/%d" % rng.randrange(1000)
        if rng.random() < 0.3:
            path += "?q=%d&x=%s" % (rng.randrange(100), rng.choice(["a", "b%20c", "%C3%A9"]))
        h = s["headers"]
        if pool == "slow" and rng.random() < 0.9:
            h.append(("X-Tenant", rng.choice(TENANTS)))
        if not quiet:
            lane = rng.choices(["", "high", "normal", "low"], [55, 15, 5, 25])[0]
            if lane:
                h.append(("X-Sluice-Priority", lane))
            if rng.random() < 0.25:
                dl = rng.choice(DEADLINES if pool != "extra" else DEADLINES[:4])
                h.append(("X-Sluice-Deadline", dl))
        if method in ("POST", "PUT") or (method == "DELETE" and rng.random() < 0.3):
            size = rng.choice(BODY_SIZES if method != "DELETE" else BODY_SIZES[:5])
            s["body"] = size
            s["chunked"] = rng.random() < 0.3
            if method == "POST" and rng.random() < 0.5:
                h.append(("Idempotency-Key", "k-%s" % s["seq"]))
        r = rng.random()
        if quiet:
            pass
        elif r < 0.05 and method != "HEAD":
            s["large"] = rng.choice(LARGE_RESPONSES)
            h.append(("X-Mock-Body-Size", str(s["large"])))
            if s["large"] >= 512 * 1024 and rng.random() < 0.3:
                s["action"] = "gone_mid_response"
        elif r < 0.07:
            h.append(("X-Mock-Status", str(rng.choice([404, 500, 503]))))
        r = rng.random()
        if quiet or s["action"] != "normal":
            pass
        elif r < 0.06:
            s["action"] = "gone_wait"
            s["gone_after"] = rng.uniform(*GONE_AFTER_S)
        elif r < 0.075:
            s["action"] = "cut_head"
        elif r < 0.09 and s["body"] and s["body"] <= 65536:
            s["action"] = "cut_body"
        elif r < 0.10:
            path = "/nope" + path                       # no route: route=""
        elif r < 0.105:
            s["action"] = "malformed"
        elif r < 0.11:
            h.append(("X-Pad", "p" * 17000))            # over max_header_size
        elif r < 0.115:
            h.append(("X-Sluice-Priority", "urgent"))   # 400 bad_request on the route
        elif r < 0.12:
            path = PATHS[pool] + "/../../slow/x"        # dot segments: 400
        s["method"], s["path"] = method, path
        self.sent_log.append((s["seq"], pool, method, s["body"], s["chunked"], s["large"],
                              s["action"], path))
        return s

    def encode(self, s):
        """(head bytes, [body pieces])."""
        lines = ["%s %s HTTP/1.1" % (s["method"], s["path"]), "Host: soak.test",
                 "X-Seq: " + s["seq"]]
        lines += ["%s: %s" % kv for kv in s["headers"]]
        pieces = []
        if s["body"] is not None:
            data = self.bodies[s["body"]][0]
            if s["chunked"]:
                lines.append("Transfer-Encoding: chunked")
                off = 0
                while off < len(data):
                    n = min(len(data) - off, self.rng.choice([1, 100, 4096, 30000, 70000]))
                    ext = ";x=1" if self.rng.random() < 0.1 else ""
                    pieces.append(b"%x%s\r\n" % (n, ext.encode()) + data[off:off + n] + b"\r\n")
                    off += n
                pieces.append(b"0\r\n\r\n")
            else:
                lines.append("Content-Length: %d" % len(data))
                if data:
                    pieces.append(data)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if s["action"] == "malformed":
            head = b"GET /api/v1/a b HTTP/1.1\r\nHost: soak.test\r\n\r\n"
            pieces = []
        return head, pieces

    async def run_one(self, s, conn):
        """Sends s on conn (or a new connection); returns the connection to
        reuse, or None. Records how the request ended."""
        head, pieces = self.encode(s)
        if conn is None:
            conn = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        reader, writer = conn
        s["complete"] = False
        keep = False
        try:
            if s["action"] == "cut_head":
                cut = self.rng.randrange(1, len(head) - 2)
                writer.write(head[:cut])
                await writer.drain()
                await asyncio.sleep(self.rng.uniform(0, 0.3))
                self.cut["cut in the request head"] += 1
                return None
            writer.write(head)
            if s["action"] == "cut_body":
                body = b"".join(pieces)
                writer.write(body[:self.rng.randrange(0, max(1, len(body) - 6))])
                await writer.drain()
                await asyncio.sleep(self.rng.uniform(0, 0.3))
                self.cut["cut in the request body"] += 1
                return None
            for i, piece in enumerate(pieces):
                writer.write(piece)
                if s["chunked"] and i < 3 and self.rng.random() < 0.2:
                    await writer.drain()
                    await asyncio.sleep(0.01)
            await writer.drain()
            s["complete"] = True
            self.complete += 1
            if s["action"] == "gone_wait":
                try:
                    resp = await asyncio.wait_for(read_response(reader, s["method"]),
                                                  s["gone_after"])
                except asyncio.TimeoutError:
                    self.gone["hung up while waiting for the answer"] += 1
                    return None
            elif s["action"] == "gone_mid_response":
                status, headers = await asyncio.wait_for(read_head(reader), self.o.client_timeout)
                if status == 200 and "content-length" in headers:
                    await reader.read(65536)
                    self.gone["hung up in the middle of the answer"] += 1
                    return None
                body = await read_body(reader, s["method"], status, headers)
                resp = Response(status, headers, body)
            else:
                resp = await asyncio.wait_for(read_response(reader, s["method"]),
                                              self.o.client_timeout)
            self.record(s, resp)
            keep = not resp.closes()
            return conn if keep else None
        except asyncio.TimeoutError:
            if s["complete"]:
                self.gone["client timeout (no answer)"] += 1
                self.problem("client timeout", "%s %s %s" % (s["seq"], s["method"], s["path"]))
            return None
        except asyncio.CancelledError:
            if s["complete"]:
                self.gone["still waiting at the end"] += 1
            else:
                self.cut["cancelled before complete at the end"] += 1
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            if s["complete"]:
                self.outcomes["transport error"] += 1
                self.problem("transport error", "%s %s %s: %r" % (s["seq"], s["method"],
                                                                  s["path"], e))
            else:
                # a write refused before the request was whole: sluice may have
                # answered early (431, 413) and closed; then it counted it
                try:
                    resp = await asyncio.wait_for(read_response(reader, s["method"]), 5)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                        asyncio.LimitOverrunError, ValueError):
                    self.cut["write failed before complete"] += 1
                    self.problem("write failed before complete", "%s: %r" % (s["seq"], e))
                    return None
                self.complete += 1
                self.record(s, resp)
            return None
        finally:
            if not keep:
                writer.close()

    def record(self, s, resp):
        code = resp.code()
        self.outcomes["%d %s" % (resp.status, code) if code else "%d" % resp.status] += 1
        if code or resp.status != 200 or s["method"] == "HEAD":
            return
        if s["large"] is not None:
            if not pattern_ok(resp.body, s["large"]):
                self.integrity_errors.append("%s: large body of %d bytes wrong (%d received)"
                                             % (s["seq"], s["large"], len(resp.body)))
            self.relayed_checked += 1
            return
        try:
            echo = json.loads(resp.body)
        except ValueError:
            self.integrity_errors.append("%s: 200 without the JSON echo" % s["seq"])
            return
        data, want_sha = self.bodies[s["body"] if s["body"] is not None else 0]
        want_len = len(data)
        want_uri = (SLOW_BASE if s["path"].startswith("/slow/") else "") + s["path"]
        bad = []
        if echo.get("seq") != s["seq"]:
            bad.append("seq %r" % echo.get("seq"))
        if echo.get("method") != s["method"]:
            bad.append("method %r" % echo.get("method"))
        if echo.get("uri") != want_uri:
            bad.append("uri %r" % echo.get("uri"))
        if echo.get("body_len") != want_len or echo.get("body_sha") != want_sha:
            bad.append("body %r/%r, sent %d/%s" % (echo.get("body_len"), echo.get("body_sha"),
                                                   want_len, want_sha))
        if bad:
            self.integrity_errors.append("%s %s %s: %s" % (s["seq"], s["method"], s["path"],
                                                           ", ".join(bad)))
        self.relayed_checked += 1

    async def worker(self, pool):
        conn = None
        try:
            while self.running:
                s = self.make_spec(pool)
                try:
                    conn = await self.run_one(s, conn)
                except OSError as e:                  # connect failed
                    self.problem("connect failed", repr(e))
                    conn = None
                    await asyncio.sleep(0.2)
                    continue
                # a little think time; more after a quick refusal so a full
                # queue does not turn the client into a spin loop
                await asyncio.sleep(self.rng.uniform(0, 0.02) if conn is not None
                                    else self.rng.uniform(0.01, 0.1))
        finally:
            if conn is not None:
                conn[1].close()

    # -- background tasks

    async def sampler(self):
        last_print = 0
        while self.running:
            t = self.now()
            self.rss.append((t, rss_kb(self.sluice.pid)))
            try:
                m = await self.metrics()
                depth = m.by("sluice_queue_depth", "route")
                for route in ("api", "slow", "extra"):
                    if route in depth:
                        self.depth_samples[route].append(depth[route])
                if t - last_print >= 10:
                    last_print = t
                    print("  .. %3.0f s: %d complete, %d counted by sluice, depth %s, RSS %.1f MiB"
                          % (t, self.complete, m.total("sluice_requests_total"),
                             dict((k, int(v)) for k, v in depth.items()), self.rss[-1][1] / 1024),
                          file=sys.stderr, flush=True)
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                    RuntimeError, ValueError) as e:
                self.problem("metrics scrape failed", repr(e))
            await asyncio.sleep(max(0.0, 1.0 - (self.now() - t)))

    async def chaos(self):
        i = 0
        while True:
            await asyncio.sleep(CHAOS_EVERY)
            if not self.running:
                return
            name, query = CHAOS[i % len(CHAOS)]
            i += 1
            await self.mock_config(name, query)
            self.chaos_done[name + " " + query] += 1

    async def reload_to(self, alt, extra, what, text=None):
        """SIGHUP with a new file; a valid one must bump the reload counter,
        an invalid one (text) must be refused, logged, and change nothing."""
        before = (await self.metrics()).total("sluice_config_reloads_total")
        self.write_config(alt, extra, text)
        t_sent = round(self.now(), 1)
        refused_before = self.sluice.stderr_tail(1 << 26).count("reload refused")
        os.kill(self.sluice.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            got = (await self.metrics()).total("sluice_config_reloads_total")
            refused = self.sluice.stderr_tail(1 << 26).count("reload refused") > refused_before
            if got != before or (text is not None and refused):
                break
        ok = got == before + 1 if text is None else (got == before and refused)
        self.reloads.append((t_sent, what, ok))
        if not ok:
            self.problem("reload", "%s: reloads_total %d -> %d" % (what, before, got))

    async def snapshot_extra(self):
        """The removed route's totals vanish from /metrics: take them just
        before the removal, with nothing of it in flight (its rate is 1/m)."""
        deadline = time.monotonic() + 5
        while True:
            m = await self.metrics()
            if m.total("sluice_in_flight", route="extra") == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        return {"total": m.total("sluice_requests_total", route="extra"),
                "by": m.by("sluice_requests_total", "outcome", route="extra"),
                "gone": m.total("sluice_client_gone_total", route="extra"),
                "in_flight": m.total("sluice_in_flight", route="extra"),
                "parked": m.total("sluice_queue_depth", route="extra")}

    async def reloader(self):
        every = self.o.reload_every
        n = int((self.o.seconds - 1) // every)
        quiet_k = max(2, n // 2)
        remove_k = quiet_k + 1
        invalid_k = remove_k + 1 if remove_k + 1 <= n - 1 else None
        self.plan = {"reloads": n, "add": 1 if n >= 1 else None,
                     "quiet": quiet_k if remove_k <= n else None,
                     "remove": remove_k if remove_k <= n else None, "invalid": invalid_k}
        extra = None
        for k in range(1, n + 1):
            await asyncio.sleep(max(0.0, k * every - self.now()))
            if not self.running:
                return
            alt = k % 2
            if k == invalid_k:
                await self.reload_to(alt, extra, "invalid file (refused)",
                                     text="[server]\nlisten = 127.0.0.1:%d\n[route x]\n"
                                          "match = /\nupstream = http://127.0.0.1:1\n"
                                          "rate = 10 per sec\n" % self.port)
                continue
            what = "limits %s" % ("50/s, 20/s" if alt == 0 else "30/s, 10/s")
            if k == 1:
                extra, what = "on", what + ", route extra added"
            elif k == self.plan["quiet"]:
                extra, what = "quiet", what + ", extra at 1/m"
                self.extra_state = "quiet"
            elif k == self.plan["remove"]:
                extra, what = None, what + ", route extra removed"
                self.removed = await self.snapshot_extra()
                self.removed["t"] = round(self.now(), 1)
            await self.reload_to(alt, extra, what)
            if k == 1:
                self.extra_state = "on"
            elif k == self.plan["remove"]:
                self.extra_state = None

    # -- the run

    async def run(self):
        o = self.o
        self.t0 = time.monotonic()
        bg = [asyncio.create_task(self.sampler()), asyncio.create_task(self.chaos()),
              asyncio.create_task(self.reloader())]
        workers = [asyncio.create_task(self.worker(pool))
                   for pool, n in WORKERS.items() for _ in range(n)]
        await asyncio.sleep(o.seconds)
        self.load_end = self.now()
        self.running = False
        print("  .. %.0f s: load stopped, waiting for the last answers" % self.now(),
              file=sys.stderr, flush=True)
        for name in self.mocks:
            await self.mock_config(name, CALM % MOCK_LATENCY[name])
        bg[1].cancel()
        for t in bg[1:]:
            try:
                await asyncio.wait_for(t, 30)
            except asyncio.CancelledError:
                pass
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                self.problem("background task failed", repr(e))
        done, pending = await asyncio.wait(workers, timeout=90)
        for t in pending:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for t in done:
            if t.exception() is not None:
                self.problem("worker crashed", repr(t.exception()))
        bg[0].cancel()
        await asyncio.gather(bg[0], return_exceptions=True)
        # sluice settles: nothing parked or in flight, totals stable
        prev, deadline = None, time.monotonic() + 30
        while True:
            m = await self.metrics()
            tot = m.total("sluice_requests_total")
            idle = (m.total("sluice_queue_depth") == 0 and m.total("sluice_in_flight") == 0)
            if (idle and tot == prev) or time.monotonic() > deadline:
                break
            prev = tot
            await asyncio.sleep(0.5)
        self.final = m
        self.rss_end = rss_kb(self.sluice.pid)
        await self.drain()

    async def drain(self):
        """A last burst parked on slow, then SIGTERM: each one is answered."""
        base = self.final.total("sluice_requests_total")
        tasks = [asyncio.create_task(self.drain_one(i)) for i in range(DRAIN_REQUESTS)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = await self.metrics()
            seen = (m.total("sluice_requests_total") - base + m.total("sluice_queue_depth")
                    + m.total("sluice_in_flight"))
            if seen >= DRAIN_REQUESTS:
                break
            await asyncio.sleep(0.1)
        self.drain_parked = int(m.total("sluice_queue_depth"))
        loop = asyncio.get_running_loop()
        t = time.monotonic()
        stop = loop.run_in_executor(None, lambda: self.procs.stop(
            self.sluice, signal.SIGTERM, 300 if self.o.valgrind else 60))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        self.exit_code = await stop
        self.exit_s = time.monotonic() - t
        self.drain_results = collections.Counter(
            r if isinstance(r, str) else "error %r" % r for r in results)

    async def drain_one(self, i):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError as e:
            return "connect failed %r" % e
        try:
            writer.write(("GET %s/drain/%d HTTP/1.1\r\nHost: soak.test\r\nX-Tenant: t1\r\n"
                          "X-Seq: d%d\r\n\r\n" % (PATHS["slow"], i, i)).encode())
            await writer.drain()
            self.complete += 1
            self.drain_complete = getattr(self, "drain_complete", 0) + 1
            r = await asyncio.wait_for(read_response(reader, "GET"), 120)
            return "%d %s" % (r.status, r.code()) if r.code() else "%d" % r.status
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            return "no answer (%s)" % type(e).__name__
        finally:
            writer.close()

    # -- verdict

    def check(self, name, ok, detail):
        self.checks.append((name, bool(ok), detail))

    def access_log(self):
        """Outcomes in the access log, and client_gone split by whether an
        upstream attempt had been made (in flight, or parked again after one)."""
        by, gone = collections.Counter(), collections.Counter()
        try:
            with open(self.sluice.err_path, errors="replace") as f:
                for line in f:
                    if " msg=request " in line:
                        m = re.search(r" outcome=(\S+)", line)
                        by[m.group(1) if m else "?"] += 1
                        if m and m.group(1) == "client_gone":
                            a = re.search(r" attempts=(\d+)", line)
                            gone["parked" if a and a.group(1) == "0" else "after an attempt"] += 1
        except OSError:
            pass
        return by, gone

    def sanitizer_report(self):
        text = self.sluice.stderr_tail(1 << 26)
        pats = ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                "SUMMARY: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer"]
        hits = [p for p in pats if p in text]
        return hits

    def valgrind_report(self):
        try:
            with open(self.vg_log, errors="replace") as f:
                text = f.read()
        except OSError:
            return None, None, "no valgrind log"
        lost = re.findall(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
        errs = re.findall(r"ERROR SUMMARY: ([\d,]+) errors", text)
        lost_b = int(lost[-1][0].replace(",", "")) if lost else 0
        n_err = int(errs[-1].replace(",", "")) if errs else None
        return lost_b, n_err, text

    def rss_verdict(self):
        return rss_flat(self.rss, min(self.o.warmup, self.load_end / 4), self.load_end)

    def upstream_windows(self):
        """Per mock (= per route): arrivals, max in any 1 s and 60 s window on
        the upstream's clock, and arrivals over the highest limit the route
        ever had. Informational: limits change at every reload, and the mock
        dates an arrival when the whole request is in, so an arrival that
        comes late (a large body, a busy machine) shows as one over. For each
        arrival over, the one that opened its window is the late one: how
        short of the window the pair was, and whether it carried a body."""
        sent = {row[0]: row for row in self.sent_log}
        out = {}
        for name, p in self.mocks.items():
            arr = []                                    # (t_us, X-Seq)
            with open(p.log) as f:
                for line in f:
                    parts = line.split(" ", 2)
                    if len(parts) > 2 and parts[0].isdigit():
                        arr.append((int(parts[0]), parts[1]))
            arr.sort()
            ts = [t for t, _ in arr]
            top = max(int(lim[name].split("/")[0]) for lim in LIMITS)
            quota = int(QUOTAS[name].split("/")[0]) if name in QUOTAS else None
            w = {"arrivals": len(ts), "max_1s": A.max_in_window(ts, 1_000_000),
                 "limit_1s": top, "max_60s": A.max_in_window(ts, 60_000_000),
                 "quota_60s": quota}
            for key, lim, win in (("1s", top, 1_000_000), ("60s", quota, 60_000_000)):
                over, short, bodies = 0, 0.0, 0
                for i in range(lim, len(ts)) if lim else []:
                    if ts[i] - ts[i - lim] < win:
                        over += 1
                        short = max(short, (win - (ts[i] - ts[i - lim])) / 1000.0)
                        row = sent.get(arr[i - lim][1])
                        if row is not None and row[3]:
                            bodies += 1
                w["over_" + key], w["short_ms_" + key], w["body_" + key] = over, short, bodies
            out[name] = w
        return out

    def report(self):
        o = self.o
        say = print
        f = self.final
        counted = f.total("sluice_requests_total")
        removed = self.removed["total"] if self.removed else 0
        soak_complete = self.complete - getattr(self, "drain_complete", 0)
        by_outcome = f.by("sluice_requests_total", "outcome")
        if self.removed:
            by_outcome.update(self.removed["by"])
        by_route = f.by("sluice_requests_total", "route")
        gone_total = f.total("sluice_client_gone_total") + (
            self.removed["gone"] if self.removed else 0)
        log, log_gone = self.access_log()
        log_total = sum(log.values())
        drain_n = getattr(self, "drain_complete", 0)

        kind = "valgrind" if o.valgrind else ("ASan+UBSan" if o.asan else "no sanitizer")
        say("")
        say("soak: %.0f s of load, sluice %s (%s), seed %d, reload every %.0f s%s"
            % (self.load_end, os.path.relpath(o.binary, ROOT), kind, o.seed, o.reload_every,
               "".join(", " + x for x in o.route_option)))
        sent = soak_complete + sum(self.cut.values())
        say("requests: %d sent, %d complete, %d cut before complete (%s)"
            % (sent, soak_complete, sum(self.cut.values()),
               ", ".join("%d %s" % (v, k) for k, v in sorted(self.cut.items())) or "-"))
        say("client saw: " + ", ".join("%s x %d" % (k, v) for k, v in
                                       sorted(self.outcomes.items(), key=lambda kv: -kv[1])))
        say("  and hung up: " + (", ".join("%d %s" % (v, k) for k, v in
                                           sorted(self.gone.items())) or "-"))
        say("sluice counted: %d = %s" % (
            counted + removed, ", ".join("%s %d" % (k, v) for k, v in
                                         sorted(by_outcome.items(), key=lambda kv: -kv[1]) if v)))
        say("  by route: %s%s" % (", ".join("%s %d" % (k or '""', v) for k, v in
                                            sorted(by_route.items())),
                                  ", extra %d (scraped at its removal)" % removed
                                  if self.removed else ""))
        waiting = sum(v for k, v in self.gone.items() if "middle of the answer" not in k)
        say("  hang-ups before the answer: %d; sluice saw %d (client_gone: %d parked, %d in "
            "flight or parked again after an attempt, from the access log); %d reached it "
            "after it had answered"
            % (waiting, gone_total, log_gone["parked"], log_gone["after an attempt"],
               waiting - gone_total))
        say("  access log: %d lines (%d in the drain)" % (log_total, drain_n))
        up = f.by("sluice_upstream_requests_total", "code")
        say("upstream answers (sluice's count): " + ", ".join(
            "%s x %d" % (k, v) for k, v in sorted(up.items()) if v))
        win = self.upstream_windows()
        say("upstream arrivals (info, the mock's clock): " + "; ".join(
            "%s %d, max %d in 1 s (limit <= %d)%s, %d in 60 s%s"
            % (k, w["arrivals"], w["max_1s"], w["limit_1s"], _over(w, "1s"), w["max_60s"],
               " (quota %d)%s" % (w["quota_60s"], _over(w, "60s")) if w["quota_60s"] else "")
            for k, w in sorted(win.items())))
        say("backlog: " + ", ".join(
            "%s non-empty in %d of %d samples" % (r, sum(1 for d in v if d > 0), len(v))
            for r, v in sorted(self.depth_samples.items())))
        say("reloads: " + "; ".join("%.0f s %s%s" % (t, w, "" if ok else " FAILED")
                                    for t, w, ok in self.reloads))
        if self.removed:
            say("  extra removed at %.0f s with %d parked (moved to api), %d in flight"
                % (self.removed["t"], self.removed["parked"], self.removed["in_flight"]))
        say("upstream trouble: " + ", ".join("%s x %d" % (k, v)
                                             for k, v in sorted(self.chaos_done.items())))
        rss_ok, rss_text, info = self.rss_verdict()
        kbs = [kb for _, kb in self.rss if kb > 0]
        say("RSS: first %.1f MiB, last %.1f MiB, max %.1f MiB; %s"
            % (kbs[0] / 1024, self.rss_end / 1024, max(kbs) / 1024, rss_text))
        say("drain: %d parked at SIGTERM; clients got %s; exit %s after %.1f s"
            % (self.drain_parked, ", ".join("%s x %d" % kv for kv in
                                            sorted(self.drain_results.items())),
               self.exit_code, self.exit_s))

        # checks
        self.check("accounting: sluice_requests_total = complete requests",
                   counted + removed == soak_complete,
                   "%d + %d (removed route) vs %d sent complete"
                   % (counted, removed, soak_complete))
        self.check("accounting: one access log line per complete request",
                   log_total == self.complete,
                   "%d lines vs %d complete (drain included)" % (log_total, self.complete))
        self.check("accounting: removed route had nothing in flight",
                   not self.removed or self.removed["in_flight"] == 0,
                   "%s" % (self.removed and self.removed["in_flight"]))
        self.check("integrity of relayed answers", not self.integrity_errors,
                   "%d checked, %d wrong%s" % (self.relayed_checked, len(self.integrity_errors),
                                              ": " + "; ".join(self.integrity_errors[:5])
                                              if self.integrity_errors else ""))
        self.check("no client-side surprises", not self.problems,
                   ", ".join("%s x %d" % kv for kv in self.problems.items()) or "none")
        self.check("every reload applied or refused as meant",
                   self.reloads and all(ok for _, _, ok in self.reloads),
                   "%d reloads" % len(self.reloads))
        drain_ok = all(k in ("200", "503 draining") for k in self.drain_results)
        self.check("drain: every parked request answered 200 or 503 draining", drain_ok,
                   ", ".join("%s x %d" % kv for kv in sorted(self.drain_results.items())))
        self.check("exit 0 on SIGTERM", self.exit_code == 0, "exit %s" % self.exit_code)
        if o.valgrind:
            lost, n_err, text = self.valgrind_report()
            self.check("valgrind: nothing definitely lost, no errors",
                       lost == 0 and n_err == 0,
                       "definitely lost %s bytes, %s errors" % (lost, n_err))
        else:
            hits = self.sanitizer_report()
            self.check("no sanitizer report", not hits, ", ".join(hits) or "none")
        self.check("RSS flat after warm-up", rss_ok, rss_text)
        say("")
        for name, ok, detail in self.checks:
            say("%-4s %s: %s" % ("ok" if ok else "FAIL", name, detail))
        ok = all(c[1] for c in self.checks)
        say("verdict: %s" % ("PASS" if ok else "FAIL"))
        if self.problem_examples:
            say("examples: " + "; ".join(self.problem_examples[:10]))
        with open(os.path.join(self.workdir, "requests.tsv"), "w") as fp:
            for row in self.sent_log:
                fp.write("\t".join("-" if v is None else str(v) for v in row) + "\n")
        with open(os.path.join(self.workdir, "summary.json"), "w") as fp:
            json.dump({"checks": self.checks, "outcomes": self.outcomes, "cut": self.cut,
                       "gone": self.gone, "rss": self.rss, "reloads": self.reloads,
                       "removed": self.removed, "drain": self.drain_results,
                       "access_log": log, "upstream": win}, fp, indent=1, default=str)
        return 0 if ok else 1


def rss_flat(samples, warm, end, rel=0.10, floor_kib=8 * 1024):
    """samples [(t_s, KiB)]. Flat when the max over the second half of
    [warm, end] is at most the max over the first half plus max(rel, floor).
    Returns (ok, text, info)."""
    xs = [(t, kb) for t, kb in samples if warm <= t <= end and kb > 0]
    mid = (warm + end) / 2
    first = [kb for t, kb in xs if t < mid]
    last = [kb for t, kb in xs if t >= mid]
    if len(first) < 2 or len(last) < 2:
        return False, "too few samples after the warm-up (%d)" % len(xs), {}
    fmax, lmax = max(first), max(last)
    allowed = max(rel * fmax, floor_kib)
    n = len(xs)
    mt = sum(t for t, _ in xs) / n
    mk = sum(kb for _, kb in xs) / n
    var = sum((t - mt) ** 2 for t, _ in xs)
    slope = sum((t - mt) * (kb - mk) for t, kb in xs) / var if var else 0.0
    fmed, lmed = sorted(first)[len(first) // 2], sorted(last)[len(last) // 2]
    info = {"warm": warm, "mid": mid, "first_max": fmax, "last_max": lmax,
            "allowed": allowed, "first_median": fmed, "last_median": lmed,
            "slope_kib_per_min": slope * 60}
    text = ("max %.1f MiB over %.0f-%.0f s, %.1f MiB over %.0f-%.0f s (%+.1f%%, allowed "
            "+%.1f MiB); medians %.1f and %.1f MiB; trend %+.0f KiB/min"
            % (fmax / 1024, warm, mid, lmax / 1024, mid, end, 100.0 * (lmax - fmax) / fmax,
               allowed / 1024, fmed / 1024, lmed / 1024, slope * 60))
    return lmax <= fmax + allowed, text, info


def _over(w, key):
    if not w["over_" + key]:
        return ""
    return (" %d over: pairs at most %.1f ms short of the window, the early one had a "
            "body in %d" % (w["over_" + key], w["short_ms_" + key], w["body_" + key]))


def _has_asan(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def _run(argv):
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return cp.returncode, cp.stdout + cp.stderr


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120, help="load duration (default 120)")
    ap.add_argument("--binary", help="sluice binary (default build-asan/sluice, "
                                     "build/sluice with --valgrind)")
    ap.add_argument("--valgrind", action="store_true",
                    help="run sluice under valgrind memcheck (use a build without ASan)")
    ap.add_argument("--mock", help="mock_upstream (default build/tests/tools/mock_upstream)")
    ap.add_argument("--reload-every", type=float, default=10.0, help="seconds between SIGHUPs")
    ap.add_argument("--warmup", type=float, default=20.0, help="RSS warm-up seconds")
    ap.add_argument("--quarantine-mb", type=int, default=16,
                    help="ASan quarantine (default 16 MiB, so RSS reflects sluice, not "
                         "256 MiB of quarantined frees)")
    ap.add_argument("--client-timeout", type=float, default=90.0)
    ap.add_argument("--route-option", action="append", default=[], metavar="KEY=VALUE",
                    help="add a line to every route, e.g. jitter_proof=on (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    o = ap.parse_args(argv)
    if o.reload_every < 5:
        ap.error("--reload-every must be at least 5 s (hang-ups and deadlines on the "
                 "removed route must be over before it goes)")
    if o.binary is None:
        o.binary = os.path.join(ROOT, "build" if o.valgrind else "build-asan", "sluice")
    o.binary = os.path.abspath(o.binary)
    if o.mock is None:
        for build in ("build", "build-asan"):
            o.mock = os.path.join(ROOT, build, "tests", "tools", "mock_upstream")
            if os.path.exists(o.mock):
                break
    for path in (o.binary, o.mock):
        if not os.access(path, os.X_OK):
            ap.error("%s: not found (scripts/build.sh build ...)" % path)
    o.asan = _has_asan(o.binary)
    if o.valgrind and shutil.which("valgrind") is None:
        ap.error("valgrind is not installed")
    if o.valgrind and o.asan:
        ap.error("%s is built with AddressSanitizer: valgrind needs a plain build "
                 "(--binary build/sluice)" % o.binary)

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    s = Soak(o)
    rc = 1
    try:
        s.start()
        print("  .. sluice pid %d on 127.0.0.1:%d, admin %d; work directory %s"
              % (s.sluice.pid, s.port, s.admin, s.workdir), file=sys.stderr, flush=True)
        asyncio.run(s.run())
        rc = s.report()
    except KeyboardInterrupt:
        rc = 130
    finally:
        s.procs.stop_all()
        if o.keep or rc != 0:
            print("work directory kept: %s" % s.workdir, file=sys.stderr)
        else:
            shutil.rmtree(s.workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
