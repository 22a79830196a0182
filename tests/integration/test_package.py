"""Packaging (issue 4): `cpack -G DEB` from the test run's build directory,
the .deb's files, control fields, conffiles and maintainer scripts, the
shipped binary and config, the man pages, `cmake --install` keeping an
edited config, and the systemd unit under `systemd-analyze verify` and
`systemd-analyze security`.

The package is built once, from SLUICE_BUILD_DIR (set by CTest to the build
directory, already built), into a temporary directory. Needs cpack, dpkg-deb
and dpkg-shlibdeps (dpkg-dev); systemd-analyze and groff checks are skipped
where those tools are absent. Nothing is installed on the host.
"""

import glob
import gzip
import os
import re
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("SLUICE_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))

UNIT = "./lib/systemd/system/sluice.service"
CONF = "./etc/sluice/sluice.conf"
MAN8 = "./usr/share/man/man8/sluice.8.gz"
MAN5 = "./usr/share/man/man5/sluice.conf.5.gz"

# Every regular file the package ships, with its mode.
EXPECTED_FILES = {
    "./usr/sbin/sluice": "-rwxr-xr-x",
    CONF: "-rw-r--r--",
    UNIT: "-rw-r--r--",
    MAN8: "-rw-r--r--",
    MAN5: "-rw-r--r--",
    "./usr/share/doc/sluice/README.md": "-rw-r--r--",
    "./usr/share/doc/sluice/examples/sluice.conf": "-rw-r--r--",
    "./usr/share/doc/sluice/examples/grafana-dashboard.json": "-rw-r--r--",
}

# The exposure score systemd 252 gives the unit is 1.1; allow a little for
# other systemd versions weighing the same settings differently.
MAX_EXPOSURE = 1.5


def run(argv, timeout=60, check=True, **kw):
    """Run argv bounded in time; the CompletedProcess, text mode."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (" ".join(argv), proc.returncode,
                                                     proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc


def project_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        m = re.search(r"project\(sluice VERSION ([0-9.]+)", f.read())
    assert m, "no project(sluice VERSION ...) in CMakeLists.txt"
    return m.group(1)


def unit_settings(text):
    """A unit file as {(section, key): [values]} (no line continuations used)."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def duration_seconds(text):
    m = re.fullmatch(r"([0-9.]+)(ms|s|m|h|d)?", text)
    assert m, "not a duration: %r" % text
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * scale


class PackageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        config = os.path.join(BUILD_DIR, "CPackConfig.cmake")
        if not os.path.exists(config):
            raise AssertionError("no %s: set SLUICE_BUILD_DIR to a configured build" % config)
        for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps"):
            if shutil.which(tool) is None:
                raise AssertionError("%s not found (dpkg-dev and file are needed to "
                                     "build the .deb)" % tool)
        cls.tmp = tempfile.mkdtemp(prefix="sluice-pkg-")
        try:
            cls.build_package(config)
            debs = glob.glob(os.path.join(cls.tmp, "sluice_*.deb"))
            if len(debs) != 1:
                raise AssertionError("expected one sluice_*.deb in %s, got %s" % (cls.tmp, debs))
            cls.deb = debs[0]
            cls.root = os.path.join(cls.tmp, "root")
            run(["dpkg-deb", "-x", cls.deb, cls.root])
            cls.control = os.path.join(cls.tmp, "control")
            run(["dpkg-deb", "-e", cls.deb, cls.control])
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def build_package(cls, config):
        """cpack into cls.tmp; on failure, show its logs before they are removed.
        cpack first builds the `preinstall` target: the package is of the
        current sources, which the test run has just built."""
        proc = run(["cpack", "-G", "DEB", "--config", config, "-B", cls.tmp],
                   timeout=120, check=False)
        if proc.returncode == 0:
            return
        logs = glob.glob(os.path.join(cls.tmp, "_CPack_Packages", "*", "DEB", "*Output.log"))
        text = ""
        for log in logs:
            with open(log, errors="replace") as f:
                text += "\n--- %s:\n%s" % (os.path.basename(log), f.read()[-3000:])
        raise AssertionError("cpack failed (%d):\n%s%s%s" % (proc.returncode, proc.stdout[-2000:],
                                                          proc.stderr[-2000:], text))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def field(self, name):
        return run(["dpkg-deb", "-f", self.deb, name]).stdout.strip()

    def path(self, rel):
        return os.path.join(self.root, rel[2:])

    def read(self, rel):
        with open(self.path(rel)) as f:
            return f.read()

    def unit(self):
        return unit_settings(self.read(UNIT))

    # --- the package -----------------------------------------------------

    def test_deb_file_name(self):
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        self.assertEqual(os.path.basename(self.deb),
                         "sluice_%s_%s.deb" % (project_version(), arch))

    def test_files_owners_and_modes(self):
        listing = run(["dpkg-deb", "-c", self.deb]).stdout.splitlines()
        files = {}
        for line in listing:
            parts = line.split()
            mode, owner, name = parts[0], parts[1], parts[5]
            self.assertEqual(owner, "root/root", line)
            if mode.startswith("-"):
                files[name] = mode
            else:
                self.assertEqual(mode, "drwxr-xr-x", line)
        self.assertEqual(files, EXPECTED_FILES)

    def test_control_fields(self):
        self.assertEqual(self.field("Package"), "sluice")
        self.assertEqual(self.field("Version"), project_version())
        self.assertEqual(self.field("Section"), "net")
        self.assertRegex(self.field("Maintainer"), r"^[^<>]+ <[^<>@]+@[^<>]+>$")
        self.assertTrue(self.field("Description").startswith(
            "rate-limited queuing HTTP reverse proxy\n "))
        depends = [d.strip().split()[0] for d in self.field("Depends").split(",")]
        for prefix in ("libevent-2.1", "libcurl", "libinih", "libjansson", "libc6",
                       "init-system-helpers"):
            self.assertTrue(any(d.startswith(prefix) for d in depends),
                            "%s missing from Depends: %s" % (prefix, depends))

    def test_conffiles(self):
        with open(os.path.join(self.control, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/sluice/sluice.conf"])

    def test_maintainer_scripts(self):
        expect = {
            "postinst": ["deb-systemd-helper --quiet was-enabled", "deb-systemd-helper enable",
                         "[ -d /run/systemd/system ]", "deb-systemd-invoke \"$action\""],
            "prerm": ["[ -d /run/systemd/system ]", "deb-systemd-invoke stop sluice.service"],
            "postrm": ["deb-systemd-helper purge", "deb-systemd-helper mask"],
        }
        for name, needles in expect.items():
            path = os.path.join(self.control, name)
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o755, name)
            with open(path) as f:
                text = f.read()
            self.assertTrue(text.startswith("#!/bin/sh\n"), name)
            for needle in needles:
                self.assertIn(needle, text, name)
            run(["sh", "-n", path])

    def test_postinst_without_systemd_succeeds(self):
        """No systemd running (a chroot, a container): enable, start nothing, exit 0."""
        if os.path.isdir("/run/systemd/system"):
            self.skipTest("systemd is running here: postinst would start the service")
        fake = os.path.join(self.tmp, "fakebin")
        os.makedirs(fake, exist_ok=True)
        log = os.path.join(self.tmp, "calls.log")
        for tool in ("deb-systemd-helper", "deb-systemd-invoke", "systemctl"):
            with open(os.path.join(fake, tool), "w") as f:
                f.write("#!/bin/sh\necho %s \"$@\" >> %s\n" % (tool, log))
            os.chmod(os.path.join(fake, tool), 0o755)
        env = dict(os.environ, PATH=fake + ":/usr/bin:/bin")
        run(["sh", os.path.join(self.control, "postinst"), "configure", ""], env=env)
        with open(log) as f:
            calls = f.read().splitlines()
        self.assertEqual(calls, ["deb-systemd-helper unmask sluice.service",
                                 "deb-systemd-helper --quiet was-enabled sluice.service",
                                 "deb-systemd-helper enable sluice.service"])

    # --- what it ships -----------------------------------------------------

    def test_binary_version(self):
        out = run([self.path("./usr/sbin/sluice"), "-V"], timeout=20).stdout
        self.assertEqual(out, "sluice %s\n" % project_version())

    def test_shipped_config_is_the_example_and_valid(self):
        with open(os.path.join(SOURCE_DIR, "conf", "sluice.conf")) as f:
            example = f.read()
        self.assertEqual(self.read(CONF), example)
        self.assertEqual(self.read("./usr/share/doc/sluice/examples/sluice.conf"), example)
        conf = self.path(CONF)
        proc = run([self.path("./usr/sbin/sluice"), "-t", "-c", conf], timeout=20)
        self.assertEqual(proc.stdout, "%s: ok\n" % conf)

    def man_text(self, rel):
        with gzip.open(self.path(rel), "rt") as f:
            return f.read()

    def test_man_pages_render_without_warnings(self):
        if shutil.which("groff") is None:
            self.skipTest("groff not installed")
        for rel in (MAN8, MAN5):
            proc = run(["groff", "-t", "-man", "-Tutf8", "-ww", "-z"], input=self.man_text(rel))
            self.assertEqual(proc.stderr, "", rel)

    def test_man_pages_cover_options_and_keys(self):
        page8, page5 = self.man_text(MAN8), self.man_text(MAN5)
        for opt in (r"\-c", r"\-\-config", r"\-t", r"\-\-test", r"\-V", r"\-\-version",
                    r"\-h", r"\-\-help", "SIGHUP", "SIGTERM", "SIGINT", ".SH EXIT STATUS",
                    ".SH FILES", ".SH ENVIRONMENT", ".SH SEE ALSO", "sluice.conf (5)"):
            self.assertIn(opt, page8)
        with open(os.path.join(SOURCE_DIR, "conf", "sluice.conf")) as f:
            keys = set(re.findall(r"^;?(\w+) =", f.read(), re.M))
        self.assertGreaterEqual(len(keys), 29)
        for key in keys:
            self.assertIsNotNone(re.search(r"\n\.B %s = " % key, page5),
                                 "key %s undocumented in sluice.conf(5)" % key)
        for section in ("[server]", "[queue]", "[redis]", "[route NAME]"):
            self.assertIn(section, page5)

    # --- the systemd unit --------------------------------------------------

    def test_unit_settings(self):
        u = self.unit()
        want = {
            "Type": "notify", "NotifyAccess": "main",
            "ExecStartPre": "/usr/sbin/sluice -t -c /etc/sluice/sluice.conf",
            "ExecStart": "/usr/sbin/sluice -c /etc/sluice/sluice.conf",
            "ExecReload": "/bin/kill -HUP $MAINPID", "WatchdogSec": "30s",
            "Restart": "on-failure", "KillSignal": "SIGTERM", "LimitNOFILE": "65536",
            "DynamicUser": "yes", "ConfigurationDirectory": "sluice", "CapabilityBoundingSet": "",
            "NoNewPrivileges": "yes", "ProtectSystem": "strict",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        }
        for key, value in want.items():
            self.assertEqual(u.get(("Service", key)), [value], key)
        self.assertEqual(u[("Install", "WantedBy")], ["multi-user.target"])
        self.assertNotIn(("Service", "IPAddressDeny"), u)

    def test_unit_stop_timeout_covers_drain(self):
        u = self.unit()
        stop = duration_seconds(u[("Service", "TimeoutStopSec")][0])
        m = re.search(r"^drain_timeout = (\S+)", self.read(CONF), re.M)
        self.assertIsNotNone(m)
        # sluice gives responses up to 2 s to flush after the drain.
        self.assertGreater(stop, duration_seconds(m.group(1)) + 2)

    def test_unit_documentation_is_shipped(self):
        docs = self.unit()[("Unit", "Documentation")][0].split()
        self.assertEqual(docs, ["man:sluice(8)", "man:sluice.conf(5)"])
        for doc in docs:
            name, section = re.fullmatch(r"man:(.+)\((\d)\)", doc).groups()
            self.assertTrue(os.path.exists(self.path(
                "./usr/share/man/man%s/%s.%s.gz" % (section, name, section))), doc)

    def unit_for_host(self):
        """The shipped unit, its binary paths pointing into the extracted package."""
        text = self.read(UNIT).replace("/usr/sbin/sluice", self.path("./usr/sbin/sluice"))
        unit_dir = os.path.join(self.tmp, "unit")
        os.makedirs(unit_dir, exist_ok=True)
        path = os.path.join(unit_dir, "sluice.service")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_unit_verifies(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze not installed")
        proc = run(["systemd-analyze", "verify", "--man=no", self.unit_for_host()],
                   check=False, cwd=self.tmp)
        # verify exits 0 on mere warnings (an unknown key): demand silence.
        self.assertEqual((proc.returncode, proc.stdout + proc.stderr), (0, ""))

    def test_unit_security_exposure(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze not installed")
        proc = run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                    self.unit_for_host()], check=False, cwd=self.tmp)
        if "offline" in proc.stderr and proc.returncode != 0:
            self.skipTest("this systemd-analyze has no --offline")
        m = re.search(r"Overall exposure level for sluice\.service: ([0-9.]+)", proc.stdout)
        self.assertIsNotNone(m, proc.stdout[-2000:] + proc.stderr[-2000:])
        self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, proc.stdout)

    # --- cmake --install ---------------------------------------------------

    def test_install_keeps_an_edited_config(self):
        dest = os.path.join(self.tmp, "destdir")
        env = dict(os.environ, DESTDIR=dest)
        argv = ["cmake", "--install", BUILD_DIR, "--prefix", "/usr"]
        run(argv, env=env)
        conf = os.path.join(dest, "etc/sluice/sluice.conf")
        for rel in ("usr/sbin/sluice", "lib/systemd/system/sluice.service",
                    "usr/share/man/man8/sluice.8.gz", "usr/share/man/man5/sluice.conf.5.gz"):
            self.assertTrue(os.path.exists(os.path.join(dest, rel)), rel)
        with open(conf, "a") as f:
            f.write("; edited by the operator\n")
        out = run(argv, env=env).stdout
        self.assertIn("Keeping existing: %s" % conf, out)
        with open(conf) as f:
            self.assertTrue(f.read().endswith("; edited by the operator\n"))

    def test_install_elsewhere_points_the_unit_at_the_binary(self):
        dest = os.path.join(self.tmp, "destdir-opt")
        run(["cmake", "--install", BUILD_DIR, "--prefix", "/opt/sluice"],
            env=dict(os.environ, DESTDIR=dest))
        with open(os.path.join(dest, "opt/sluice/lib/systemd/system/sluice.service")) as f:
            u = unit_settings(f.read())
        self.assertEqual(u[("Service", "ExecStart")],
                         ["/opt/sluice/sbin/sluice -c /etc/sluice/sluice.conf"])
        self.assertTrue(os.path.exists(os.path.join(dest, "opt/sluice/sbin/sluice")))


if __name__ == "__main__":
    unittest.main()
