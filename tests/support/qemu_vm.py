"""A qemu virtual machine for tests that need a kernel feature this machine
lacks (device-mapper, xfs quota and V4): Debian's own kernel under
``-accel tcg``, booted once and given one command after another.

    with VM() as vm:                      # VMUnavailable(reason) if impossible
        result = vm.run("dmsetup targets", timeout=300)
        result.rc, result.stdout, result.stderr

Booting costs about a minute under TCG, so a session boots one VM
(tests/integration/conftest.py's ``qemu_vm``) and every VM test runs its
commands in it; each cleans up what it made (pools, devices, loop files:
the guest's /tmp is a tmpfs in its memory).

How it boots fast with everything the host has:

- kernel: /boot/vmlinuz-<ver> from Debian's linux-image-amd64 package (the
  cloud flavour has no 9p, so a kernel is chosen only if its 9p module is
  installed under /lib/modules/<ver>);
- initramfs: built in Python (cpio newc) and cached in CACHE, keyed by
  what goes in it: a static busybox, the 9p and virtio modules (in
  ``modprobe --show-depends`` order) and an /init that mounts the host's
  root filesystem read-only over 9p, puts tmpfs on /tmp /run /root, mounts
  the run directory writable (a second 9p share) and the working directory
  read-only (a third: a checkout under /tmp stays seen), and switch_roots
  into the host's system: same python3, dmsetup, xfsprogs, the kernel
  package's modules (the guest's modprobe finds them under the host's
  /lib/modules) and this repository;
- commands: the host writes job-<n>/ in the run directory (command, cwd,
  then ``ready``); the guest's loop runs them in order and writes stdout,
  stderr and rc there; the console (kernel log) goes to ``console.log``;
- the guest powers off with sysrq when ``poweroff`` appears; the qemu
  process is killed by its pid on every exit path, and after a command
  that timed out (the next ``run`` boots a fresh VM).
"""

import glob
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time

QEMU = "qemu-system-x86_64"
BOOT_MODULES = ("9pnet_virtio", "virtio_pci", "9p")
# The run directory lives where the guest's tmpfs mounts do not hide it.
RUN_PARENT = "/var/tmp"


class VMUnavailable(Exception):
    """No VM can be booted here; the message says why."""


class Result(object):
    def __init__(self, rc, stdout, stderr, seconds, console):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.console = console

    def __repr__(self):
        return "Result(rc=%r, %.1fs)" % (self.rc, self.seconds)


def find_kernel():
    """(vmlinuz path, version) of a Debian kernel with 9p, or VMUnavailable."""
    found = []
    for vmlinuz in sorted(glob.glob("/boot/vmlinuz-*")):
        version = vmlinuz[len("/boot/vmlinuz-"):]
        if glob.glob("/lib/modules/%s/kernel/fs/9p/9p.ko*" % version):
            return vmlinuz, version
        found.append(version)
    if found:
        raise VMUnavailable("no kernel with 9p support in /boot (have %s; install "
                            "linux-image-amd64)" % ", ".join(found))
    raise VMUnavailable("no kernel in /boot (install linux-image-amd64)")


def _module_files(version):
    """The .ko files for 9p over virtio, dependencies first, once each."""
    out = []
    for name in BOOT_MODULES:
        proc = subprocess.run(["modprobe", "-S", version, "--show-depends", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
        if proc.returncode != 0:
            raise VMUnavailable("modprobe --show-depends %s for %s failed: %s"
                                % (name, version, proc.stderr.strip()))
        for line in proc.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["insmod"] and parts[1] not in out:
                out.append(parts[1])
    for path in out:
        if path.endswith((".xz", ".zst", ".gz")):
            raise VMUnavailable("compressed kernel module %s: busybox insmod cannot "
                                "load it" % path)
    return out


def _cpio_newc(entries):
    """A cpio 'newc' archive (what the kernel unpacks as initramfs) from
    (name, mode, data, rdev_major, rdev_minor) tuples."""
    out = bytearray()

    def pad():
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rmaj, rmin) in enumerate(
            list(entries) + [("TRAILER!!!", 0, b"", 0, 0)], start=1):
        name_b = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(name_b), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(name_b)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


INIT = r"""#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules.order); do $B insmod /modules/$m || echo "insmod $m failed"; done
run=$($B sed -n 's/.*strata.run=\([^ ]*\).*/\1/p' /proc/cmdline)
$B mkdir -p /newroot
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /newroot \
  || { echo "cannot mount the host root over 9p"; $B poweroff -f; }
for d in /tmp /run /root /var/tmp/.strata-vm; do
  [ -d /newroot$d ] && $B mount -t tmpfs -o mode=1777 tmpfs /newroot$d
done
# the working directory (a checkout) may be below one of those tmpfs
work=$($B sed -n 's/.*strata.work=\([^ ]*\).*/\1/p' /proc/cmdline)
$B mkdir -p /newroot$work
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro work /newroot$work \
  || { echo "cannot mount the working directory over 9p"; $B poweroff -f; }
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 run /newroot$run
$B mount -t proc proc /newroot/proc
$B mount -t sysfs sys /newroot/sys
$B mount -t devtmpfs dev /newroot/dev
exec $B switch_root /newroot /bin/sh $run/guest.sh
"""

GUEST = r"""
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LC_ALL=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
# no udev in the guest: libdevmapper makes the /dev/mapper nodes itself
export DM_DISABLE_UDEV=1
mkdir -p /dev/pts /dev/shm /run/lock
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
run={run}
: > $run/booted
n=0
while :; do
  job=$run/job-$n
  if [ -e $job/ready ]; then
    (cd "$(cat $job/cwd)" && exec sh $job/command) > $job/stdout 2> $job/stderr < /dev/null
    echo $? > $job/rc.tmp && mv $job/rc.tmp $job/rc
    n=$((n+1))
  elif [ -e $run/poweroff ]; then
    sync
    echo o > /proc/sysrq-trigger
    sleep 10
  else
    sleep 0.5
  fi
done
"""

# Where the initramfs is kept between runs (keyed by its inputs).
CACHE = "/var/cache/strata-graphdriver/vm"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class VM(object):
    """One VM, booted at the first ``run`` and kept until ``close``.

    ``work``: the directory shared read-only at its own path (by default
    this repository), for commands whose files live below a guest tmpfs.
    """

    def __init__(self, memory_mb=3072, smp=2, work=ROOT):
        if not shutil.which(QEMU):
            raise VMUnavailable("%s is not installed (qemu-system-x86)" % QEMU)
        if not os.path.exists("/bin/busybox"):
            raise VMUnavailable("busybox is not installed (busybox-static)")
        if not _is_static("/bin/busybox"):
            raise VMUnavailable("/bin/busybox is not static (install busybox-static)")
        self.vmlinuz, self.version = find_kernel()
        self.memory_mb = memory_mb
        self.smp = smp
        self.work = os.path.abspath(work)
        self.initramfs = _initramfs(self.version)
        self.boots = 0
        self.boot_seconds = None      # of the last boot: qemu started to the guest's loop
        self._dir = self._proc = None
        self._jobs = 0
        self._started = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _boot(self):
        self._dir = tempfile.mkdtemp(prefix="strata-vm-", dir=RUN_PARENT)
        os.chmod(self._dir, 0o755)
        with open(os.path.join(self._dir, "guest.sh"), "w") as f:
            f.write(GUEST.format(run=shlex.quote(self._dir)))
        self.console_path = os.path.join(self._dir, "console.log")
        argv = [QEMU, "-accel", "tcg", "-m", str(self.memory_mb), "-smp", str(self.smp),
                "-nographic", "-no-reboot", "-nodefaults", "-serial", "file:" + self.console_path,
                "-monitor", "none", "-kernel", self.vmlinuz, "-initrd", self.initramfs,
                "-append", "console=ttyS0 quiet panic=-1 strata.run=%s strata.work=%s"
                % (self._dir, self.work),
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,"
                           "readonly=on,multidevs=remap",
                "-virtfs", "local,path=%s,mount_tag=run,security_model=passthrough" % self._dir,
                "-virtfs", "local,path=%s,mount_tag=work,security_model=passthrough,"
                           "readonly=on,multidevs=remap" % self.work]
        self._started = time.monotonic()
        self.boot_seconds = None
        self._jobs = 0
        with open(os.path.join(self._dir, "qemu.log"), "wb") as log:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT)
        self.boots += 1

    def run(self, command, cwd="/", timeout=600):
        """Run ``command`` (a shell command line) in ``cwd`` in the VM, booting
        it first if it is not up; a command that does not end in ``timeout``
        seconds is a RuntimeError, and the VM is killed."""
        if self._proc is None:
            self._boot()
        job = os.path.join(self._dir, "job-%d" % self._jobs)
        self._jobs += 1
        os.mkdir(job)
        for name, text in (("command", command), ("cwd", os.path.abspath(cwd)), ("ready", "")):
            with open(os.path.join(job, name), "w") as f:
                f.write(text)
        start = time.monotonic()
        rc_path = os.path.join(job, "rc")
        while not os.path.exists(rc_path):
            if self.boot_seconds is None and os.path.exists(os.path.join(self._dir, "booted")):
                self.boot_seconds = time.monotonic() - self._started
            problem = ("qemu exited (status %s)" % self._proc.poll() if self._proc.poll() is not None
                       else "timed out after %ds" % timeout if time.monotonic() - start > timeout else None)
            if problem:
                out = _read(os.path.join(self._dir, "qemu.log"))
                partial = _read(os.path.join(job, "stdout"))[-4000:] + _read(os.path.join(job, "stderr"))[-4000:]
                console = _read(self.console_path)[-4000:]
                self.close()
                raise RuntimeError("VM command %s: %s\n%s\noutput so far:\n%s\nconsole:\n%s"
                                   % (problem, command, out.strip(), partial, console))
            time.sleep(0.5)
        if self.boot_seconds is None:
            self.boot_seconds = time.monotonic() - self._started
        return Result(int(_read(rc_path).strip()), _read(os.path.join(job, "stdout")),
                      _read(os.path.join(job, "stderr")), time.monotonic() - start,
                      _read(self.console_path))

    def close(self):
        """Power the guest off (killing qemu, by its pid, if it does not go)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                open(os.path.join(self._dir, "poweroff"), "w").close()
                try:
                    self._proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self._proc.kill()          # only the qemu this object started
                    self._proc.wait()
            self._proc = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _initramfs(version):
    """The initramfs for kernel ``version``: from CACHE when its inputs are
    unchanged, else built and stored there (temp, rename)."""
    modules = _module_files(version)
    key = hashlib.sha256(INIT.encode())
    for path in ["/bin/busybox"] + modules:
        st = os.stat(path)
        key.update(("%s %d %d\n" % (path, st.st_size, st.st_mtime_ns)).encode())
    cached = os.path.join(CACHE, "initramfs-%s-%s.cpio" % (version, key.hexdigest()[:16]))
    if os.path.exists(cached):
        return cached
    entries = [("bin", 0o40755, b"", 0, 0), ("dev", 0o40755, b"", 0, 0),
               ("dev/console", 0o20600, b"", 5, 1), ("proc", 0o40755, b"", 0, 0),
               ("sys", 0o40755, b"", 0, 0), ("modules", 0o40755, b"", 0, 0),
               ("init", 0o100755, INIT.encode(), 0, 0),
               ("modules.order", 0o100644,
                "\n".join(os.path.basename(m) for m in modules).encode(), 0, 0)]
    for path, name in [("/bin/busybox", "bin/busybox")] + [(m, "modules/" + os.path.basename(m)) for m in modules]:
        with open(path, "rb") as f:
            entries.append((name, 0o100755 if name.startswith("bin/") else 0o100644, f.read(), 0, 0))
    os.makedirs(CACHE, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=CACHE, prefix=".initramfs-")
    with os.fdopen(fd, "wb") as f:
        f.write(_cpio_newc(entries))
    os.rename(tmp, cached)
    return cached


def _is_static(path):
    with open(path, "rb") as f:
        return b"/lib64/ld-linux" not in f.read(4096 * 4)


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# What the VM tests need of the guest, made sure of before each command:
# the modules (Debian's kernel has them all), and cgroups, which nothing
# mounts in the guest and docker run needs.
PREPARE = ("modprobe -a loop dm_thin_pool xfs ext4 overlay && "
           "{ mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup; }")
BASETEMP = "/tmp/strata-vm-pytest"


def run_pytest(vm, args, timeout=900, pipelining=False):
    """pytest ``args`` (a command-line tail) in ``vm``, from this repository,
    with STRATA_IN_VM=1, in a basetemp removed afterwards (the guest's /tmp
    is its memory, shared by every test the session runs there). Asserts it
    passed; returns (Result, the last line of its output).

    ``pipelining``: ANSIBLE_PIPELINING, a task's module sent to python over
    stdin instead of through a temporary directory made, copied to and
    removed by more processes. Measured under TCG it halved test_thin_pool's
    VM time (one host, task after task) but made test_device_safety's
    (16 hosts, 6 forks) half again slower: so only where it was measured to help."""
    command = ("{prepare} && rm -rf {bt} && STRATA_IN_VM=1 ANSIBLE_PIPELINING={pipelining} PYTHONPATH={root}/.build "
               "ANSIBLE_COLLECTIONS_PATH={root}/.build {root}/.venv/bin/python -m pytest "
               "-p no:cacheprovider -q -rs --durations=10 --basetemp={bt} {args}; "
               "rc=$?; rm -rf {bt}; exit $rc").format(prepare=PREPARE, bt=BASETEMP, root=ROOT, args=args, pipelining=pipelining)
    result = vm.run(command, cwd=ROOT, timeout=timeout)
    out = result.stdout + result.stderr
    print("VM run: %.1fs under TCG (boot %s)\n%s"
          % (result.seconds, "%.1fs" % vm.boot_seconds if vm.boot_seconds else "-", out))
    assert result.rc == 0, out[-8000:] + "\nconsole:\n" + result.console[-3000:]
    return result, out.strip().splitlines()[-1]
