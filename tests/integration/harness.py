"""Integration test harness: the real sluice binary, the mock upstream and the
burst client on loopback ports, all bounded in time.

Binaries come from the environment (set by CTest): SLUICE_BIN, MOCK_BIN,
BURST_BIN. Every process started here is stopped in tearDown; sluice must exit
0 on SIGTERM and must not print a sanitizer report.

TLS: start_tls_mock() serves HTTPS with certificates from a throwaway PKI
(TestPKI) made with the openssl command line, once per test class; request()
speaks HTTPS to such a mock, trusting that PKI's CA.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

SLUICE_BIN = os.environ.get("SLUICE_BIN", "build/sluice")
MOCK_BIN = os.environ.get("MOCK_BIN", "build/tests/tools/mock_upstream")
BURST_BIN = os.environ.get("BURST_BIN", "build/tests/tools/burst")

# The mock's log is the upstream's clock: its arrival instants must not lag
# behind the kernel's because the mock waited for a core. On two loaded cores
# a plain mock dated single arrivals up to 8 ms late (a packet capture showed
# sluice's sends correctly spaced), which reads as N+1 in a window. As root,
# run it at a real-time priority; it only reacts to events, so it cannot
# starve the machine.
MOCK_PRIORITY = (["chrt", "-f", "20"]
                 if os.geteuid() == 0 and shutil.which("chrt") else [])

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


_handed_out = set()


def free_port():
    """A port that was free a moment ago (bind to 0, read it, close), and not
    one this process handed out before: the kernel may offer the same port
    twice in a row (sluice then refused admin_listen = listen)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError("no fresh loopback port in 100 tries")


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll predicate until true, bounded by timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def read_arrivals(path):
    """Mock log lines: (mono_us, seq, method, status, path)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 4)
            if len(parts) < 5:
                continue
            out.append((int(parts[0]), parts[1], parts[2], int(parts[3]), parts[4]))
    return out


def max_in_window(times_us, window_us):
    """Largest number of instants in any half-open window [t, t + window)."""
    times = sorted(times_us)
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= window_us:
            j += 1
        best = max(best, i - j + 1)
    return best


# Extensions for the test certificates, read by `openssl req` and `openssl x509`.
PKI_CONFIG = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[wrong_name]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:elsewhere.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


class TestPKI:
    """A throwaway PKI in `directory`, made with the openssl command line (EC
    P-256 keys, valid two days), as PEM files named by attribute:

    ca, ca_key          the test CA
    server, server_key  signed by it, for 127.0.0.1 and localhost
    wrong_name(_key)    signed by it, for elsewhere.example only
    client, client_key  signed by it, a client certificate for mutual TLS
    other_ca            an unrelated CA that signed nothing here
    """

    def __init__(self, directory):
        self.dir = directory
        self.config = self.path("pki.cnf")
        with open(self.config, "w") as f:
            f.write(PKI_CONFIG)
        self.ca, self.ca_key = self.self_signed("ca", "sluice test CA")
        self.other_ca, _ = self.self_signed("other-ca", "unrelated test CA")
        self.server, self.server_key = self.signed("server", "localhost", "server")
        self.wrong_name, self.wrong_name_key = self.signed("wrong-name", "elsewhere.example",
                                                           "wrong_name")
        self.client, self.client_key = self.signed("client", "sluice test client", "client")

    def path(self, name):
        return os.path.join(self.dir, name)

    def openssl(self, *args):
        cp = subprocess.run(["openssl"] + list(args), capture_output=True, text=True,
                            timeout=30)
        if cp.returncode != 0:
            raise AssertionError("openssl %s failed:\n%s" % (args[0], cp.stderr))

    def new_key_args(self, name):
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", self.path(name + ".key")]

    def self_signed(self, name, cn):
        self.openssl("req", "-x509", "-config", self.config, "-extensions", "ca",
                     *self.new_key_args(name), "-out", self.path(name + ".pem"),
                     "-days", "2", "-subj", "/CN=" + cn)
        return self.path(name + ".pem"), self.path(name + ".key")

    def signed(self, name, cn, extensions):
        csr = self.path(name + ".csr")
        self.openssl("req", "-new", "-config", self.config, *self.new_key_args(name),
                     "-out", csr, "-subj", "/CN=" + cn)
        self.openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                     "-set_serial", "0x%x" % int.from_bytes(os.urandom(8), "big"),
                     "-days", "2", "-extfile", self.config, "-extensions", extensions,
                     "-out", self.path(name + ".pem"))
        return self.path(name + ".pem"), self.path(name + ".key")

    def client_context(self):
        """What the tests' own HTTPS requests use: trusts the test CA, shows
        the client certificate, and does not check names (the wrong-name mock
        is still the tests' own)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False
        ctx.load_cert_chain(self.client, self.client_key)
        return ctx


class Proc:
    """A started process with its output captured to files."""

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=self.err, env=env)

    def stderr_text(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
                raise AssertionError("%s did not stop within %.0fs" % (self.name, timeout))
        self.out.close()
        self.err.close()
        return self.p.returncode


class SluiceTestCase(unittest.TestCase):
    """Starts processes on demand and always stops them."""

    def setUp(self):
        self.workdir = tempfile.mkdtemp(prefix="sluice-it-")
        self.procs = []
        self.sluice = None
        self.tls_ports = {}  # port of a TLS mock -> the ssl context to reach it

    @classmethod
    def tearDownClass(cls):
        pki = cls.__dict__.get("_pki")
        if pki is not None:
            shutil.rmtree(pki.dir, ignore_errors=True)
            cls._pki = None
        super().tearDownClass()

    def pki(self):
        """This test class's TestPKI, made on first use."""
        cls = type(self)
        if cls.__dict__.get("_pki") is None:
            cls._pki = TestPKI(tempfile.mkdtemp(prefix="sluice-pki-"))
        return cls._pki

    def tearDown(self):
        problems = []
        for proc in reversed(self.procs):
            try:
                rc = proc.stop()
            except AssertionError as e:
                problems.append(str(e))
                continue
            text = proc.stderr_text()
            if any(m in text for m in SANITIZER_MARKERS):
                problems.append("%s reported a sanitizer error:\n%s" % (proc.name, text[-4000:]))
            if proc is self.sluice and rc != 0 and not getattr(self, "expect_sluice_rc", None):
                problems.append("sluice exited %s:\n%s" % (rc, text[-2000:]))
        if problems:
            keep = self.workdir
            self.fail("\n".join(problems) + "\n(artifacts in %s)" % keep)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- processes -------------------------------------------------------

    def start_mock(self, *args, name="mock"):
        port = free_port()
        log = os.path.join(self.workdir, name + ".log")
        argv = MOCK_PRIORITY + [MOCK_BIN, "--listen", "127.0.0.1:%d" % port, "--log", log,
                                "--max-seconds", "300"] + list(args)
        proc = Proc(name, argv, self.workdir)
        self.procs.append(proc)
        wait_for(lambda: port_open(port), what="mock upstream on %d" % port)
        proc.port = port
        proc.log = log
        return proc

    def start_tls_mock(self, *args, cert="server", client_ca=False, name="mock"):
        """A mock serving HTTPS with the PKI's `cert` ("server" or
        "wrong_name"); client_ca: it demands a client certificate from the CA."""
        pki = self.pki()
        tls = ["--tls-cert", getattr(pki, cert), "--tls-key", getattr(pki, cert + "_key")]
        if client_ca:
            tls += ["--tls-client-ca", pki.ca]
        mock = self.start_mock(*(tls + list(args)), name=name)
        self.tls_ports[mock.port] = pki.client_context()
        return mock

    def mock_stats(self, mock):
        status, _, body = self.request(mock.port, "GET", "/_mock/stats")
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def write_config(self, text, name="sluice.conf"):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def sluice_config(self, routes, server="", queue="", port=None, admin=None):
        return ("[server]\nlisten = 127.0.0.1:%d\nadmin_listen = 127.0.0.1:%d\n%s\n"
                "[queue]\n%s\n%s\n" % (port, admin, server, queue, routes))

    def start_sluice(self, routes, server="", queue="", name="sluice", env=None, wrap=()):
        """routes: the [route ...] sections as text; wrap: a command prefix (prlimit...).
        Returns the Proc with .port/.admin."""
        port, admin = free_port(), free_port()
        text = self.sluice_config(routes, server, queue, port, admin)
        path = self.write_config(text, name + ".conf")
        full_env = dict(os.environ, **env) if env else None
        proc = Proc(name, list(wrap) + [SLUICE_BIN, "-c", path], self.workdir, env=full_env)
        self.procs.append(proc)
        self.sluice = proc
        wait_for(lambda: proc.p.poll() is not None or (port_open(port) and port_open(admin)),
                 what="sluice listening")
        self.assertIsNone(proc.p.poll(), "sluice exited early:\n" + proc.stderr_text())
        proc.port, proc.admin, proc.config = port, admin, path
        return proc

    def burst(self, url, n, c, *args, timeout=120):
        """Run the burst client; returns (summary dict, list of result rows)."""
        results = os.path.join(self.workdir, "burst-%d.txt" % time.monotonic_ns())
        argv = [BURST_BIN, "--url", url, "-n", str(n), "-c", str(c), "--json",
                "--results", results, "--max-seconds", str(timeout)] + list(args)
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
        self.assertEqual(cp.returncode, 0, "burst failed: %s" % cp.stderr)
        summary = json.loads(cp.stdout.strip().splitlines()[-1])
        rows = []
        with open(results) as f:
            for line in f:
                p = line.split()
                rows.append({"index": int(p[0]), "status": p[1], "latency_ms": float(p[2]),
                             "error": p[3], "retry_after": p[4], "queue_time": p[5],
                             "attempts": p[6]})
        return summary, rows

    # --- HTTP helpers ----------------------------------------------------

    def request(self, port, method="GET", path="/", body=None, headers=None, timeout=30):
        """One request on a new connection: HTTPS if `port` is a TLS mock's."""
        if port in self.tls_ports:
            conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                               context=self.tls_ports[port])
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def admin_get(self, path):
        return self.request(self.sluice.admin, "GET", path)

    def metrics(self):
        status, _, body = self.admin_get("/metrics")
        self.assertEqual(status, 200)
        return body.decode()

    def metric_value(self, text, name, **labels):
        """Value of one series, or None."""
        want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
            if not m or m.group(1) != name:
                continue
            got = ",".join(sorted(x for x in re.findall(r'[a-z_]+="[^"]*"', m.group(2) or "")))
            if got == want:
                return float(m.group(3))
        return None

    def assert_sluice_error(self, status, headers, body, want_status, code):
        self.assertEqual(status, want_status, body)
        self.assertEqual(headers.get("x-sluice-error"), code)
        doc = json.loads(body)
        self.assertEqual(doc["error"], code)
        self.assertTrue(doc["detail"])


def route(name="default", match="/", upstream_port=None, rate="50/s", extra="",
          scheme="http", host="127.0.0.1"):
    return ("[route %s]\nmatch = %s\nupstream = %s://%s:%d\nrate = %s\n%s\n"
            % (name, match, scheme, host, upstream_port, rate, extra))
