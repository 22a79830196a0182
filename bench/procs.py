"""Process plumbing for the benchmark: free ports, started processes that are
always stopped, nginx configs, /proc readings. Standard library only.

Every process is started in its own session so that a master and the workers
it forks can be stopped together by their process group, and only those.
"""

import os
import re
import signal
import socket
import subprocess
import time


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls predicate until it is true; raises after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))


def rss_kb(pid):
    """VmRSS of pid in KiB, 0 when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User + system CPU time of pid so far, in seconds; 0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid):
    """Direct children of pid (nginx workers of a master)."""
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


def established(port):
    """Server-side ESTABLISHED TCP sockets on a local port (IPv4)."""
    want = ":%04X" % port
    n = 0
    with open("/proc/net/tcp") as f:
        next(f, None)
        for line in f:
            fields = line.split(None, 4)
            if len(fields) > 3 and fields[1].endswith(want) and fields[3] == "01":
                n += 1
    return n


class Proc:
    """A started process; output goes to files in the work directory."""

    def __init__(self, name, argv, workdir, cwd=None):
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.p.pid
        self.port = None

    def alive(self):
        return self.p.poll() is None

    def stderr_tail(self, n=2000):
        try:
            with open(self.err_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def _group_alive(self):
        try:
            os.killpg(self.pid, 0)
            return True
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Signal, wait, signal again (sluice: stop at once), then SIGKILL the
        group. Returns the exit status (None if it had to be killed)."""
        for attempt, s in enumerate((sig, sig)):
            if not self.alive():
                break
            try:
                self.p.send_signal(s)
                self.p.wait(timeout=timeout if attempt == 0 else 5.0)
            except subprocess.TimeoutExpired:
                continue
        rc = self.p.poll()
        if rc is None or self._group_alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.p.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        return rc


class Procs:
    """Every process the benchmark started, so all are stopped at the end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.live = []
        self.count = 0

    def start(self, name, argv, cwd=None):
        self.count += 1
        proc = Proc("%02d-%s" % (self.count, name), argv, self.workdir, cwd)
        self.live.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, timeout=20.0):
        rc = proc.stop(sig, timeout)
        if proc in self.live:
            self.live.remove(proc)
        return rc

    def stop_all(self):
        for proc in reversed(list(self.live)):
            self.stop(proc, timeout=10.0)


# ---- TLS ---------------------------------------------------------------

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
"""


def make_pki(directory):
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and
    localhost (EC P-256, valid two days), made with the openssl command line.
    Returns the paths (ca, cert, key)."""
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    with open(path("pki.cnf"), "w") as f:
        f.write(PKI_CONFIG)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-config", path("pki.cnf")]
    steps = [
        ["req", "-x509", "-extensions", "ca", "-keyout", path("ca.key"), "-out",
         path("ca.pem"), "-days", "2", "-subj", "/CN=sluice bench CA"] + key,
        ["req", "-new", "-keyout", path("server.key"), "-out", path("server.csr"),
         "-subj", "/CN=localhost"] + key,
        ["x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"), "-CAkey",
         path("ca.key"), "-set_serial", "0x%x" % int.from_bytes(os.urandom(8), "big"),
         "-days", "2", "-extfile", path("pki.cnf"), "-extensions", "server",
         "-out", path("server.pem")]]
    for argv in steps:
        cp = subprocess.run(["openssl"] + argv, capture_output=True, text=True, timeout=30)
        if cp.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (argv[0], cp.stderr[-1000:]))
    return path("ca.pem"), path("server.pem"), path("server.key")


# ---- nginx -------------------------------------------------------------

def nginx_without(module):
    """True when this nginx was built without a core module (nginx-light)."""
    try:
        cp = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ("--without-%s" % module) in cp.stderr


def nginx_conf(tmp, workers, http_body, nofile, connections, master=True):
    """A whole nginx.conf that keeps every path inside tmp."""
    temps = ["client_body_temp_path %s/client_body;" % tmp,
             "proxy_temp_path %s/proxy;" % tmp]
    for mod in ("fastcgi", "uwsgi", "scgi"):
        if not nginx_without("http_%s_module" % mod):
            temps.append("%s_temp_path %s/%s;" % (mod, tmp, mod))
    head = ["user root;"] if os.geteuid() == 0 else []
    head += ["worker_processes %s;" % workers,
             "pid %s/nginx.pid;" % tmp,
             "error_log %s/error.log warn;" % tmp,
             "worker_rlimit_nofile %d;" % nofile]
    if not master:
        head.append("master_process off;")
    return "\n".join(head + [
        "events { worker_connections %d; }" % connections,
        "http {",
        "  access_log off;",
        "  keepalive_requests 1000000;",
        "  " + "\n  ".join(temps),
        http_body,
        "}", ""])


def nginx_argv(tmp, conf_path, valgrind=None):
    argv = ["nginx", "-p", tmp + "/", "-e", tmp + "/error.log", "-c", conf_path,
            "-g", "daemon off;"]
    return (valgrind or []) + argv


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def wrk_ms(text):
    """'1.23ms' -> 1.23; wrk prints us, ms, s (and m, h)."""
    m = re.match(r"^([0-9.]+)([a-z]+)$", text.strip())
    if not m or m.group(2) not in _UNITS:
        raise ValueError("wrk latency %r" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(text):
    """Requests/sec, latency p50/p99 (ms), errors from `wrk --latency` output."""
    out = {"rps": None, "p50_ms": None, "p99_ms": None, "errors": 0, "non2xx": 0}
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Requests/sec:"):
            out["rps"] = float(s.split()[1])
        elif re.match(r"^50(\.0+)?%\s", s):
            out["p50_ms"] = wrk_ms(s.split()[1])
        elif re.match(r"^99(\.0+)?%\s", s):
            out["p99_ms"] = wrk_ms(s.split()[1])
        elif s.startswith("Socket errors:"):
            out["errors"] = sum(int(x) for x in re.findall(r"\d+", s))
        elif s.startswith("Non-2xx or 3xx responses:"):
            out["non2xx"] = int(s.split(":")[1])
    return out
