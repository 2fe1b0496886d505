"""A throwaway qemu virtual machine for tests that need a kernel feature this
machine lacks (device-mapper): Debian's own kernel under ``-accel tcg``.

    with VM() as vm:                      # VMUnavailable(reason) if impossible
        result = vm.run("dmsetup targets", timeout=300)
        result.rc, result.stdout, result.stderr

How it boots fast with everything the host has:

- kernel: /boot/vmlinuz-<ver> from Debian's linux-image-amd64 package (the
  cloud flavour has no 9p, so a kernel is chosen only if its 9p module is
  installed under /lib/modules/<ver>);
- initramfs: built here, in Python (cpio newc): a static busybox, the 9p and
  virtio modules (in ``modprobe --show-depends`` order) and an /init that
  mounts the host's root filesystem read-only over 9p, puts tmpfs on /tmp
  /run /root, mounts the run directory writable (a second 9p share) and the
  working directory read-only (a third: a checkout under /tmp stays seen), and
  switch_roots into the host's system: same python3, dmsetup, xfsprogs,
  the kernel package's modules (the guest's modprobe finds them under the
  host's /lib/modules) and this repository;
- the command's stdout, stderr and exit status are written as files into
  the run directory; the console (kernel log) goes to ``console.log`` there;
- the guest powers off with sysrq; the qemu process is killed by its pid on
  every exit path.
"""

import glob
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
cd {cwd}
sh -c {command} > {run}/stdout 2> {run}/stderr < /dev/null
echo $? > {run}/rc.tmp && mv {run}/rc.tmp {run}/rc
sync
echo o > /proc/sysrq-trigger
sleep 10
"""


class VM(object):
    """Boot one VM per ``run``; the object only holds the prepared initramfs."""

    def __init__(self, memory_mb=1536, smp=2):
        if not shutil.which(QEMU):
            raise VMUnavailable("%s is not installed (qemu-system-x86)" % QEMU)
        if not os.path.exists("/bin/busybox"):
            raise VMUnavailable("busybox is not installed (busybox-static)")
        if not _is_static("/bin/busybox"):
            raise VMUnavailable("/bin/busybox is not static (install busybox-static)")
        self.vmlinuz, self.version = find_kernel()
        self.memory_mb = memory_mb
        self.smp = smp
        self._dir = None

    def __enter__(self):
        self._dir = tempfile.mkdtemp(prefix="strata-vm-", dir=RUN_PARENT)
        modules = _module_files(self.version)
        entries = [("bin", 0o40755, b"", 0, 0), ("dev", 0o40755, b"", 0, 0),
                   ("dev/console", 0o20600, b"", 5, 1), ("proc", 0o40755, b"", 0, 0),
                   ("sys", 0o40755, b"", 0, 0), ("modules", 0o40755, b"", 0, 0),
                   ("init", 0o100755, INIT.encode(), 0, 0),
                   ("modules.order", 0o100644,
                    "\n".join(os.path.basename(m) for m in modules).encode(), 0, 0)]
        with open("/bin/busybox", "rb") as f:
            entries.append(("bin/busybox", 0o100755, f.read(), 0, 0))
        for m in modules:
            with open(m, "rb") as f:
                entries.append(("modules/" + os.path.basename(m), 0o100644, f.read(), 0, 0))
        self.initramfs = os.path.join(self._dir, "initramfs.cpio")
        with open(self.initramfs, "wb") as f:
            f.write(_cpio_newc(entries))
        return self

    def __exit__(self, *exc):
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def run(self, command, cwd="/", timeout=600):
        """Boot, run ``command`` (a shell command line) in ``cwd``, power off."""
        run = tempfile.mkdtemp(prefix="run-", dir=self._dir)
        os.chmod(run, 0o755)
        with open(os.path.join(run, "guest.sh"), "w") as f:
            f.write(GUEST.format(cwd=shlex.quote(cwd), command=shlex.quote(command),
                                 run=shlex.quote(run)))
        console = os.path.join(run, "console.log")
        argv = [QEMU, "-accel", "tcg", "-m", str(self.memory_mb), "-smp", str(self.smp),
                "-nographic", "-no-reboot", "-nodefaults", "-serial", "file:" + console,
                "-monitor", "none", "-kernel", self.vmlinuz, "-initrd", self.initramfs,
                "-append", "console=ttyS0 quiet panic=-1 strata.run=%s strata.work=%s"
                % (run, os.path.abspath(cwd)),
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,"
                           "readonly=on,multidevs=remap",
                "-virtfs", "local,path=%s,mount_tag=run,security_model=passthrough" % run,
                "-virtfs", "local,path=%s,mount_tag=work,security_model=passthrough,"
                           "readonly=on,multidevs=remap" % os.path.abspath(cwd)]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            try:
                qemu_out = proc.communicate(timeout=timeout)[0]
            except subprocess.TimeoutExpired:
                qemu_out = b"timed out after %ds" % timeout
        finally:
            if proc.poll() is None:
                proc.kill()          # by pid: only the qemu this call started
                proc.wait()
        seconds = time.monotonic() - start
        log = _read(console)
        rc_text = _read(os.path.join(run, "rc")).strip()
        if not rc_text:
            raise RuntimeError("VM run gave no exit status (qemu: %s)\nconsole:\n%s"
                               % (qemu_out.decode(errors="replace").strip(), log[-4000:]))
        return Result(int(rc_text), _read(os.path.join(run, "stdout")),
                      _read(os.path.join(run, "stderr")), seconds, log)


def _is_static(path):
    with open(path, "rb") as f:
        return b"/lib64/ld-linux" not in f.read(4096 * 4)


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""
