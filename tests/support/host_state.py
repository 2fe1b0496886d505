"""What a check-mode run must leave exactly as it was, as one comparable value.

    before = host_state(trees=[data_root], devices=[dev])
    ... run a module with --check ...
    assert host_state(trees=[data_root], devices=[dev]) == before

The trees (every entry's type, mode, owner, size, content digest, symlink
target, xattrs and, for non-directories, mtime), the mount table, the loop
devices, the device bytes, the ZFS pools and datasets and the library's
reference counts in the library's run directory (the test session's own,
see tests/conftest.py). Directory mtimes are left
out: overlay's test mount in a private temporary directory, the one probe
a support check may make, passes through its parent.
"""

import hashlib
import os
import stat
import subprocess

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import refcount

from .signatures import fingerprint


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree(root):
    """{relative path: what a change to it would alter}; {} for a missing root."""
    out = {}
    if not os.path.lexists(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + (["."] if dirpath == root else []):
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            entry = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
            if stat.S_ISREG(st.st_mode):
                entry += [st.st_size, st.st_mtime_ns, _digest(path)]
            elif stat.S_ISLNK(st.st_mode):
                entry += [os.readlink(path), st.st_mtime_ns]
            elif not stat.S_ISDIR(st.st_mode):
                entry += [st.st_rdev, st.st_mtime_ns]
            try:
                entry.append(sorted(os.listxattr(path, follow_symlinks=False)))
            except OSError:
                pass
            out[os.path.relpath(path, root)] = entry
    return out


def _lines(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    return sorted(proc.stdout.splitlines()) if proc.returncode == 0 else []


def mount_table():
    with open("/proc/self/mountinfo") as f:
        # mount point, root, options, fs type, source, super options (ids left out)
        return sorted(" ".join(line.split()[3:]) for line in f)


def host_state(trees=(), devices=()):
    return {
        "trees": {t: tree(t) for t in trees},
        "mounts": mount_table(),
        "loops": _lines(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"]),
        "devices": {d: fingerprint(d) for d in devices},
        "zfs": _lines(["zfs", "list", "-H", "-o", "name,mountpoint", "-t", "all"]) +
               _lines(["zpool", "list", "-H", "-o", "name"]),
        "refcounts": tree(refcount.RUN_DIR),
    }


def differences(before, after):
    """Readable list of what changed between two host_state() values."""
    out = []
    for key in before:
        if before[key] == after[key]:
            continue
        if key in ("trees",):
            for root in before[key]:
                b, a = before[key][root], after[key][root]
                out += ["%s/%s: %s -> %s" % (root, p, b.get(p), a.get(p))
                        for p in sorted(set(b) | set(a)) if b.get(p) != a.get(p)]
        elif key in ("devices", "refcounts"):
            out.append("%s: %s -> %s" % (key, before[key], after[key]))
        else:
            out.append("%s: -%s +%s" % (key, sorted(set(before[key]) - set(after[key])),
                                         sorted(set(after[key]) - set(before[key]))))
    return out
