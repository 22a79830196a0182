"""Real clients through sluice (issue 18): python3-requests, python3-httpx,
python3-aiohttp, curl and ab (apache2-utils), against nginx as the upstream
(and the mock upstream where a body must be echoed). Bodies are compared
byte for byte; keep-alive reuse is counted at sluice
(sluice_connections_accepted_total); the rate limit is checked in nginx's
own access log ($msec).

nginx runs in the test's folder: generated config, files and logs, no
daemon, one process, bounded by `timeout`. scripts/deps.sh installs every
package used here; a test whose package is missing is skipped, saying
which.
"""

import asyncio
import gzip
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import time
import unittest

from harness import Proc, SluiceTestCase, free_port, max_in_window, port_open, wait_for

try:
    import requests
except ImportError:  # pragma: no cover - skipped below
    requests = None
try:
    import httpx
except ImportError:  # pragma: no cover
    httpx = None
try:
    import aiohttp
except ImportError:  # pragma: no cover
    aiohttp = None

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
CURL = shutil.which("curl")
AB = shutil.which("ab")

LARGE = 4 * 1024 * 1024
COOKIES = ["a=1; Path=/", "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly",
           "c=3; Max-Age=60; SameSite=Lax"]


def need(module, package):
    return unittest.skipUnless(module, "%s is not installed (scripts/deps.sh installs it)"
                               % package)


def fnv1a(data):
    """The mock upstream's body checksum (64-bit FNV-1a), as it prints it."""
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def nginx_without(module):
    out = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr
    return ("--without-%s" % module) in out


def read_response(sock, buf, head_request=False):
    """One response from sock (buf: bytes already read). Returns (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise AssertionError("connection closed inside a head")
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_request else int(headers.get("content-length", "0"))
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            raise AssertionError("connection closed inside a body")
        buf += data
    return int(lines[0].split()[1]), headers, buf[:n], buf[n:]


class ClientsTest(SluiceTestCase):

    def setUp(self):
        super().setUp()
        if NGINX is None:
            self.skipTest("nginx is not installed (scripts/deps.sh installs it)")
        self.make_files()
        self.nginx_port = self.start_nginx()
        self.mock = self.start_mock()
        files = "http://127.0.0.1:%d" % self.nginx_port
        self.start_sluice(
            "[route files]\nmatch = /\nupstream = %s\nrate = 500/s\nburst = 50\n\n"
            "[route limited]\nmatch = /limited/\nupstream = %s\nrate = 5/s\n\n"
            "[route echo]\nmatch = /echo\nupstream = http://127.0.0.1:%d\nrate = 500/s\n"
            "burst = 50\n" % (files, files, self.mock.port),
            server="max_body_size = 16m")
        self.base = "http://127.0.0.1:%d" % self.sluice.port

    # --- the upstream ----------------------------------------------------

    def make_files(self):
        rnd = random.Random(18)
        self.www = os.path.join(self.workdir, "www")
        for d in ("", "dir", "gz", "limited"):
            os.makedirs(os.path.join(self.www, d), exist_ok=True)
        self.files = {
            "bin.dat": bytes(range(256)) * 64 + rnd.randbytes(300_000),
            "large.dat": rnd.randbytes(LARGE),
            "text.txt": b"".join(b"line %d of a text file\n" % i for i in range(2000)),
            "dir/index.html": b"<html><body>index of dir</body></html>\n",
            "gz/big.txt": b"".join(b"compressible line %05d\n" % i for i in range(4000)),
            "limited/x.txt": b"limited\n",
        }
        for name, data in self.files.items():
            with open(os.path.join(self.www, name), "wb") as f:
                f.write(data)

    def start_nginx(self):
        port = free_port()
        wd = self.workdir
        temps = ["client_body_temp_path %s/client_body;" % wd,
                 "proxy_temp_path %s/proxy;" % wd]
        for mod in ("fastcgi", "uwsgi", "scgi"):
            if not nginx_without("http_%s_module" % mod):
                temps.append("%s_temp_path %s/%s;" % (mod, wd, mod))
        self.echo_module = os.path.exists(ECHO_MODULE)
        cookies = "\n".join('      add_header Set-Cookie "%s";' % c for c in COOKIES)
        echo = ("    location /nginx-echo {\n      echo_read_request_body;\n"
                "      echo_request_body;\n    }\n") if self.echo_module else ""
        conf = "\n".join([
            ("load_module %s;" % ECHO_MODULE) if self.echo_module else "",
            "daemon off;",
            "master_process off;",
            "worker_processes 1;",
            "pid %s/nginx.pid;" % wd,
            "error_log %s/nginx-error.log warn;" % wd,
            "events { worker_connections 256; }",
            "http {",
            "  default_type application/octet-stream;",
            "  types { text/plain txt; text/html html; }",
            "  log_format t '$msec $request_time $status $request_method $request_uri "
            "$connection';",
            "  access_log %s/nginx-access.log t;" % wd,
            "  client_max_body_size 16m;",
            "  " + "\n  ".join(temps),
            "  server {",
            "    listen 127.0.0.1:%d;" % port,
            "    root %s;" % self.www,
            "    location = /cookies {",
            cookies,
            '      return 200 "cookies\\n";',
            "    }",
            "    location /gz/ { gzip on; gzip_types text/plain; gzip_min_length 1; }",
            "    location /gzany/ {",
            "      alias %s/gz/;" % self.www,
            "      gzip on; gzip_proxied any; gzip_types text/plain; gzip_min_length 1;",
            "    }",
            echo,
            "  }",
            "}", ""])
        path = os.path.join(wd, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        argv = ["timeout", "300", NGINX, "-p", wd + "/", "-e", wd + "/nginx-error.log",
                "-c", path]
        proc = Proc("nginx", argv, wd)
        self.procs.append(proc)
        wait_for(lambda: proc.p.poll() is not None or port_open(port), what="nginx")
        if proc.p.poll() is not None:
            with open(wd + "/nginx-error.log", errors="replace") as f:
                self.fail("nginx exited:\n" + proc.stderr_text() + f.read())
        return port

    def nginx_log(self, n=0):
        """(arrival s, status, method, uri, connection) per request nginx served.

        nginx writes a line once the answer is sent, so a client can have it
        before the line exists: wait for at least n lines."""
        def rows():
            out = []
            with open(os.path.join(self.workdir, "nginx-access.log")) as f:
                for line in f:
                    p = line.split()
                    if len(p) < 6:
                        continue  # being written
                    # $msec is when the line is written; $request_time goes back to the first byte.
                    out.append((float(p[0]) - float(p[1]), int(p[2]), p[3], p[4], p[5]))
            return out

        wait_for(lambda: len(rows()) >= n, what="%d lines in nginx's access log" % n)
        return rows()

    def accepted(self):
        return self.metric_value(self.metrics(), "sluice_connections_accepted_total")

    def session(self):
        s = requests.Session()
        s.trust_env = False  # no proxy from the environment for these
        return s

    def curl(self, *args, input=None):
        cp = subprocess.run([CURL, "-sS", "--noproxy", "*", "--max-time", "20"] + list(args),
                            capture_output=True, input=input, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stderr.decode(errors="replace"))
        return cp

    # --- python3-requests ------------------------------------------------

    @need(requests, "python3-requests")
    def test_requests_bodies_and_one_connection_per_session(self):
        before = self.accepted()
        with self.session() as s:
            for name in ("bin.dat", "large.dat", "text.txt", "bin.dat", "dir/index.html"):
                r = s.get(self.base + "/" + name, timeout=20)
                self.assertEqual(r.status_code, 200)
                self.assertEqual(r.content, self.files[name], name)
                self.assertEqual(r.headers["X-Sluice-Attempts"], "1")
        self.assertEqual(self.accepted() - before, 1, "the session did not reuse its connection")

    @need(requests, "python3-requests")
    def test_requests_generator_body_is_a_chunked_upload(self):
        data = random.Random(5).randbytes(700_000)

        def gen():
            for i in range(0, len(data), 65536):
                yield data[i:i + 65536]

        with self.session() as s:
            r = s.post(self.base + "/echo/gen", data=gen(), timeout=20)
        self.assertEqual(r.status_code, 200, r.text)
        doc = r.json()
        self.assertEqual(doc["method"], "POST")
        self.assertEqual((doc["body_len"], doc["body_sha"]), (len(data), fnv1a(data)))

    @need(requests, "python3-requests")
    def test_requests_through_sluice_as_its_http_proxy(self):
        with self.session() as s:
            r = s.get("http://files.example/text.txt",
                      proxies={"http": self.base}, timeout=20)
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.content, self.files["text.txt"])
        self.assertEqual(self.nginx_log(1)[-1][3], "/text.txt")

    @need(requests, "python3-requests")
    def test_conditional_requests_get_304(self):
        url = self.base + "/text.txt"
        with self.session() as s:
            r = s.get(url, timeout=20)
            etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
            for h in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
                r = s.get(url, headers=h, timeout=20)
                self.assertEqual(r.status_code, 304, h)
                self.assertEqual(r.content, b"")
                self.assertEqual(r.headers["ETag"], etag)
            # A 304 leaves the connection usable: the next answer is whole.
            r = s.get(url, timeout=20)
            self.assertEqual(r.content, self.files["text.txt"])
        self.assertEqual([row[1] for row in self.nginx_log(4)], [200, 304, 304, 200])

    @need(requests, "python3-requests")
    def test_set_cookie_fields_stay_separate(self):
        # Joining them with ", " would break the Expires date of the second.
        conn = http.client.HTTPConnection("127.0.0.1", self.sluice.port, timeout=10)
        conn.request("GET", "/cookies")
        resp = conn.getresponse()
        resp.read()
        self.assertEqual(resp.msg.get_all("Set-Cookie"), COOKIES)
        conn.close()
        with self.session() as s:
            s.get(self.base + "/cookies", timeout=20)
            self.assertEqual({c.name: c.value for c in s.cookies}, {"a": "1", "b": "2", "c": "3"})

    @need(requests, "python3-requests")
    def test_requests_follows_a_redirect_through_sluice(self):
        # nginx redirects /dir to its own absolute URL (http://127.0.0.1:<nginx>/dir/);
        # sluice hands the client its own origin instead.
        with self.session() as s:
            r = s.get(self.base + "/dir", timeout=20)
        self.assertEqual(r.status_code, 200)
        self.assertEqual([h.status_code for h in r.history], [301])
        self.assertEqual(r.history[0].headers["Location"], self.base + "/dir/")
        self.assertEqual(r.url, self.base + "/dir/")
        self.assertEqual(r.content, self.files["dir/index.html"])

    @need(requests, "python3-requests")
    def test_gzip_needs_gzip_proxied_behind_sluice(self):
        # The README's surprise: nginx does not compress an answer to a
        # request with Via unless gzip_proxied allows it.
        hdr = {"Accept-Encoding": "gzip"}
        with self.session() as s:
            direct = s.get("http://127.0.0.1:%d/gz/big.txt" % self.nginx_port, headers=hdr,
                           timeout=20)
            self.assertEqual(direct.headers.get("Content-Encoding"), "gzip")
            proxied = s.get(self.base + "/gz/big.txt", headers=hdr, timeout=20)
            self.assertIsNone(proxied.headers.get("Content-Encoding"))
            self.assertEqual(proxied.content, self.files["gz/big.txt"])
            r = s.get(self.base + "/gzany/big.txt", headers=hdr, stream=True, timeout=20)
            self.assertEqual(r.headers.get("Content-Encoding"), "gzip")
            raw = r.raw.read(decode_content=False)
        self.assertLess(len(raw), len(self.files["gz/big.txt"]) // 4)
        self.assertEqual(gzip.decompress(raw), self.files["gz/big.txt"])

    @need(requests, "python3-requests")
    def test_post_body_echoed_by_nginx(self):
        if not self.echo_module:
            self.skipTest("nginx's echo module is not installed (libnginx-mod-http-echo)")
        data = random.Random(7).randbytes(1_500_000)
        with self.session() as s:
            r = s.post(self.base + "/nginx-echo", data=data, timeout=20,
                       headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status_code, 200)
        self.assertEqual(r.content, data)

    # --- python3-httpx ---------------------------------------------------

    @need(httpx, "python3-httpx")
    def test_httpx_ranges_and_one_connection_per_client(self):
        large = self.files["large.dat"]
        before = self.accepted()
        with httpx.Client(base_url=self.base, trust_env=False, timeout=20) as c:
            r = c.get("/large.dat", headers={"Range": "bytes=1000000-1999999"})
            self.assertEqual(r.status_code, 206)
            self.assertEqual(r.headers["Content-Range"], "bytes 1000000-1999999/%d" % LARGE)
            self.assertEqual(r.content, large[1000000:2000000])
            r = c.get("/large.dat", headers={"Range": "bytes=-100"})
            self.assertEqual((r.status_code, r.content), (206, large[-100:]))
            r = c.get("/large.dat", headers={"Range": "bytes=0-9,20-29"})
            self.assertEqual(r.status_code, 206)
            self.assertTrue(r.headers["Content-Type"].startswith("multipart/byteranges"))
            self.assertIn(large[0:10], r.content)
            self.assertIn(large[20:30], r.content)
            r = c.get("/large.dat", headers={"Range": "bytes=%d-" % (LARGE + 1)})
            self.assertEqual(r.status_code, 416)
            self.assertEqual(r.reason_phrase, "Requested Range Not Satisfiable")
            self.assertEqual(r.headers.get_list("set-cookie"), [])
            r = c.get("/cookies")
            self.assertEqual(r.headers.get_list("set-cookie"), COOKIES)
        self.assertEqual(self.accepted() - before, 1, "the client did not reuse its connection")

    @need(httpx, "python3-httpx")
    def test_httpx_streamed_upload(self):
        data = random.Random(9).randbytes(300_000)

        def gen():
            for i in range(0, len(data), 10_000):
                yield data[i:i + 10_000]

        with httpx.Client(trust_env=False, timeout=20) as c:
            r = c.put(self.base + "/echo/httpx", content=gen())
        doc = r.json()
        self.assertEqual((doc["method"], doc["body_len"], doc["body_sha"]),
                         ("PUT", len(data), fnv1a(data)))

    # --- python3-aiohttp -------------------------------------------------

    @need(aiohttp, "python3-aiohttp")
    def test_aiohttp_burst_is_held_to_the_rate_at_nginx(self):
        # 15 at once into a 5/s route: nginx's own clock sees at most 5 a
        # second. Its log has millisecond resolution and nginx dates an arrival
        # when its event loop gets to it: the window is narrowed by 10 ms for
        # that (the mock upstream, on a real-time priority, is what the
        # strictness tests measure to the microsecond).
        async def burst():
            async with aiohttp.ClientSession() as s:
                async def one(i):
                    async with s.get(self.base + "/limited/x.txt?i=%d" % i) as r:
                        return r.status, await r.read()
                return await asyncio.gather(*(one(i) for i in range(15)))

        t0 = time.monotonic()
        results = asyncio.run(asyncio.wait_for(burst(), 60))
        self.assertEqual(results, [(200, self.files["limited/x.txt"])] * 15)
        self.assertGreater(time.monotonic() - t0, 2.0)
        times = [int(row[0] * 1e6) for row in self.nginx_log(15) if row[3].startswith("/limited/")]
        self.assertEqual(len(times), 15)
        self.assertLessEqual(max_in_window(times, 990_000), 5)
        self.assertGreater(max(times) - min(times), 2_700_000)

    @need(aiohttp, "python3-aiohttp")
    def test_aiohttp_bodies(self):
        async def fetch():
            async with aiohttp.ClientSession() as s:
                async def one(name):
                    async with s.get(self.base + "/" + name) as r:
                        return name, r.status, await r.read()
                out = await asyncio.gather(*(one(n) for n in ("bin.dat", "large.dat",
                                                              "text.txt") * 3))
                async with s.post(self.base + "/echo/aio", json={"k": "v" * 1000}) as r:
                    out.append(("echo", r.status, await r.read()))
                return out

        results = asyncio.run(asyncio.wait_for(fetch(), 60))
        for name, status, body in results[:-1]:
            self.assertEqual((name, status), (name, 200))
            self.assertEqual(body, self.files[name], name)
        doc = json.loads(results[-1][2])
        self.assertEqual(doc["headers"]["Content-Type"], "application/json")
        self.assertEqual(doc["body_len"], len(json.dumps({"k": "v" * 1000})))

    # --- curl ------------------------------------------------------------

    @need(CURL, "curl")
    def test_curl_expect_100_continue(self):
        data = random.Random(11).randbytes(200_000)
        path = os.path.join(self.workdir, "upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        cp = self.curl("-v", "-H", "Expect: 100-continue", "--data-binary", "@" + path,
                       self.base + "/echo/continue")
        self.assertIn(b"< HTTP/1.1 100 Continue", cp.stderr)
        doc = json.loads(cp.stdout)
        self.assertEqual((doc["body_len"], doc["body_sha"]), (len(data), fnv1a(data)))
        self.assertNotIn("Expect", doc["headers"])

    @need(CURL, "curl")
    def test_curl_chunked_upload_from_stdin(self):
        data = random.Random(13).randbytes(500_000)
        cp = self.curl("-v", "-T", "-", self.base + "/echo/stdin", input=data)
        self.assertIn(b"> Transfer-Encoding: chunked", cp.stderr)
        doc = json.loads(cp.stdout)
        self.assertEqual((doc["method"], doc["body_len"], doc["body_sha"]),
                         ("PUT", len(data), fnv1a(data)))

    @need(CURL, "curl")
    def test_curl_follows_a_redirect_and_stays_behind_sluice(self):
        cp = self.curl("-L", "-w", "\n%{url_effective} %{num_redirects}", self.base + "/dir")
        body, _, tail = cp.stdout.rpartition(b"\n")
        self.assertEqual(body, self.files["dir/index.html"])
        self.assertEqual(tail.decode(), "%s/dir/ 1" % self.base)
        self.assertEqual(self.metric_value(self.metrics(), "sluice_dispatched_total",
                                           route="files"), 2)

    @need(CURL, "curl")
    def test_curl_binary_download_and_range(self):
        out = os.path.join(self.workdir, "dl.dat")
        self.curl("-o", out, self.base + "/large.dat")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), self.files["large.dat"])
        cp = self.curl("-r", "100-199", self.base + "/bin.dat")
        self.assertEqual(cp.stdout, self.files["bin.dat"][100:200])

    # --- ab and raw sockets ----------------------------------------------

    @need(AB, "apache2-utils (ab)")
    def test_ab_keep_alive(self):
        before = self.accepted()
        cp = subprocess.run([AB, "-q", "-k", "-n", "100", "-c", "4", "-s", "20",
                             self.base + "/text.txt"], capture_output=True, text=True,
                            timeout=120)
        self.assertEqual(cp.returncode, 0, cp.stderr)

        def field(name):
            m = re.search(r"^%s:\s+(\d+)" % re.escape(name), cp.stdout, re.M)
            self.assertIsNotNone(m, cp.stdout)
            return int(m.group(1))

        self.assertEqual(field("Complete requests"), 100)
        self.assertEqual(field("Failed requests"), 0)
        self.assertEqual(field("Keep-Alive requests"), 100)
        self.assertEqual(field("Document Length"), len(self.files["text.txt"]))
        self.assertNotIn("Non-2xx", cp.stdout)
        self.assertLessEqual(self.accepted() - before, 4)

    def test_pipelined_requests_answered_in_order(self):
        reqs = (b"GET /text.txt HTTP/1.1\r\nHost: s\r\n\r\n"
                b"HEAD /bin.dat HTTP/1.1\r\nHost: s\r\n\r\n"
                b"GET /bin.dat HTTP/1.1\r\nHost: s\r\n\r\n"
                b"GET /nope HTTP/1.1\r\nHost: s\r\n\r\n"
                b"GET /dir/index.html HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", self.sluice.port), timeout=10) as sock:
            sock.sendall(reqs)
            buf = b""
            got = []
            for head in (False, True, False, False, False):
                status, headers, body, buf = read_response(sock, buf, head)
                got.append((status, body))
                if head:
                    self.assertEqual(headers["content-length"], str(len(self.files["bin.dat"])))
            self.assertEqual(sock.recv(1), b"")
        self.assertEqual([g[0] for g in got], [200, 200, 200, 404, 200])
        self.assertEqual(got[0][1], self.files["text.txt"])
        self.assertEqual(got[1][1], b"")
        self.assertEqual(got[2][1], self.files["bin.dat"])
        self.assertEqual(got[4][1], self.files["dir/index.html"])
        # One connection from the client; nginx saw them in the order sent.
        self.assertEqual([r[3] for r in self.nginx_log(5)],
                         ["/text.txt", "/bin.dat", "/bin.dat", "/nope", "/dir/index.html"])


if __name__ == "__main__":
    unittest.main()
