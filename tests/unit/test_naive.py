"""NaiveDiffDriver over a trivial directory driver: Docker's fsdiff.go."""

import os
import shutil
import time

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.naive import (
    NaiveDiffDriver)


class DirDriver(NaiveDiffDriver):
    """Layers are plain directories; get/put are counted, nothing is mounted."""

    name = "test-dirs"

    def __init__(self, home):
        super().__init__(home)
        self.refs = {}

    def create(self, id, parent=None, opts=None):
        path = os.path.join(self.home, id)
        if parent:
            shutil.copytree(os.path.join(self.home, parent), path, symlinks=True)
        else:
            os.makedirs(path)

    def get(self, id, mount_label=""):
        self.refs[id] = self.refs.get(id, 0) + 1
        return os.path.join(self.home, id)

    def put(self, id):
        self.refs[id] -= 1


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_diff_apply_round_trip(tmp_path):
    drv = DirDriver(str(tmp_path))
    drv.create("base")
    base = drv.get("base")
    for i in range(10):
        write(os.path.join(base, "dir", "file-%d" % i), b"x" * 64)
        os.utime(os.path.join(base, "dir", "file-%d" % i), ns=(10 ** 18, 10 ** 18))
    drv.put("base")
    drv.create("upper", "base")
    upper = drv.get("upper")
    write(os.path.join(upper, "dir", "file-0"), b"y" * 64)
    write(os.path.join(upper, "added"), b"z" * 64)
    os.unlink(os.path.join(upper, "dir", "file-1"))
    drv.put("upper")

    changes = drv.changes("upper", "base")
    assert [(c.kind, c.path) for c in changes] == [
        ("A", "/added"), ("C", "/dir"), ("C", "/dir/file-0"), ("D", "/dir/file-1")]
    assert drv.diff_size("upper", "base") == 128

    start = time.time()
    stream = drv.diff("upper", "base")
    assert drv.refs == {"base": 0, "upper": 1}      # mounted until closed
    drv.create("copy", "base")
    size = drv.apply_diff("copy", "base", stream)
    stream.close()
    # Docker sleeps to the next whole second so mtimes stay comparable.
    assert time.time() >= int(start) + 1
    assert drv.refs == {"base": 0, "upper": 0, "copy": 0}
    assert size == 128
    assert drv.changes("copy", "upper") == []
    assert sorted(os.listdir(os.path.join(str(tmp_path), "copy", "dir"))) == [
        "file-%d" % i for i in range(10) if i != 1]


def test_diff_without_parent_is_the_whole_tree(tmp_path):
    drv = DirDriver(str(tmp_path))
    drv.create("base")
    write(os.path.join(drv.get("base"), "a", "b"), b"b")
    drv.put("base")
    with drv.diff("base") as stream:
        drv.create("other")
        assert drv.apply_diff("other", None, stream) == 1
    assert drv.refs["base"] == 0
    assert [(c.kind, c.path) for c in drv.changes("other")] == [("A", "/a"), ("A", "/a/b")]
