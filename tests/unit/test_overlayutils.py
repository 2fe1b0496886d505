"""Pure helpers of the overlay-family drivers, against Docker's strings."""

import os
import re

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import (
    NotSupported, overlay2, overlayutils, projectquota)


def test_d_type_error_is_dockers_message():
    err = overlayutils.d_type_error("overlay2", "xfs")
    assert isinstance(err, NotSupported)
    assert err.reason == (
        "overlay2: the backing xfs filesystem is formatted without d_type support, which "
        "leads to incorrect behavior. Reformat the filesystem with ftype=1 to enable d_type "
        "support. Backing filesystems without d_type support are not supported.")
    assert "tune2fs" in overlayutils.d_type_error("overlay2", "extfs").reason


def test_link_ids_are_26_base32_characters():
    ids = {overlayutils.generate_id(overlay2.ID_LENGTH) for _i in range(200)}
    assert len(ids) == 200
    assert all(re.match(r"^[A-Z2-7]{26}$", i) for i in ids)


def test_128_lowers_fit_a_page():
    # moby's stated rule: ((idLength + len(linkDir) + 1) * maxDepth) <= (pageSize - 512)
    assert (overlay2.ID_LENGTH + len("l") + 1) * overlay2.MAX_DEPTH <= 4096 - 512
    # and the real relative mount data of a 128-lower rw layer with a 64-hex id
    lid = "A" * overlay2.ID_LENGTH
    layer = "f" * 64
    data = ("index=off,lowerdir=" + ":".join(["l/" + lid] * overlay2.MAX_DEPTH)
            + ",upperdir=%s/diff,workdir=%s/work" % (layer, layer))
    assert len(data) <= 4096 - 1


def test_mount_label_is_appended_as_selinux_context():
    assert overlay2.format_mount_label("lowerdir=a", "") == "lowerdir=a"
    assert (overlay2.format_mount_label("lowerdir=a", "system_u:object_r:x:s0")
            == 'lowerdir=a,context="system_u:object_r:x:s0"')


def test_sizes_parse_like_go_units_ram_in_bytes():
    assert projectquota.parse_size("50M") == 50 << 20
    assert projectquota.parse_size("50m") == 50 << 20
    assert projectquota.parse_size("10MiB") == 10 << 20
    assert projectquota.parse_size("1.5g") == 3 << 29
    assert projectquota.parse_size("4096") == 4096


def test_directory_size_counts_hard_links_once(tmp_path):
    (tmp_path / "a").write_bytes(b"12345")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"123")
    (tmp_path / "link").symlink_to("a")
    import os
    os.link(str(tmp_path / "a"), str(tmp_path / "d" / "hard"))
    assert overlayutils.directory_size(str(tmp_path)) == 5 + 3 + len("a")


@pytest.mark.parametrize("other_thread", [False, True], ids=["alone", "beside-a-thread"])
def test_run_in_directory_leaves_the_process_cwd(tmp_path, other_thread):
    """Alone it moves the process's cwd and puts it back; beside another
    thread it runs in a thread with a cwd of its own. Either way fn sees the
    directory, its error comes through, and the cwd is as it was."""
    import threading
    here = os.getcwd()
    stop = threading.Event()
    waiter = threading.Thread(target=stop.wait)
    if other_thread:
        waiter.start()
    try:
        assert overlayutils.run_in_directory(str(tmp_path), os.getcwd) == str(tmp_path)
        with pytest.raises(FileNotFoundError):
            overlayutils.run_in_directory(str(tmp_path), lambda: os.stat("no-such-entry"))
        with pytest.raises(FileNotFoundError):
            overlayutils.run_in_directory(str(tmp_path / "missing"), os.getcwd)
        assert os.getcwd() == here
    finally:
        stop.set()
        if other_thread:
            waiter.join()
