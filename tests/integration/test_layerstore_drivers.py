"""The layer store's orphan check and gc on every driver (devicemapper in
the VM: test_devicemapper.test_in_qemu_vm runs this file's devicemapper
cases there): only layers nothing references are found and removed."""

import io
import os
import tarfile

import pytest

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import layerstore, new
from tests.support.backends import BACKENDS, backend_home

pytestmark = pytest.mark.root
STRAY = "f" * 64


def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path):
    request.node.user_properties.append(("driver", request.param))
    with backend_home(request.param, str(tmp_path)) as (home, options):
        drv = new(request.param, home, options)
        try:
            yield layerstore.LayerStore(os.path.dirname(home), drv, check_engine=False)
        finally:
            drv.cleanup()


def test_orphans_lists_only_unreferenced_layers(store):
    base = store.register(tar_of({"etc/hostname": b"base\n"}))
    child = store.register(tar_of({"etc/motd": b"child\n"}), base.chain_id)
    store.create_rw_layer("ctr", child.chain_id)
    assert store.orphans() == []
    store.driver.create(STRAY, base.cache_id)
    assert store.orphans() == [STRAY]


def test_gc_removes_the_stray_and_nothing_else(store):
    base = store.register(tar_of({"etc/hostname": b"base\n"}))
    child = store.register(tar_of({"etc/motd": b"child\n"}), base.chain_id)
    store.create_rw_layer("ctr", child.chain_id)
    store.driver.create(STRAY, child.cache_id)
    kept = sorted(store.driver.layer_ids() - {STRAY})
    assert store.gc() == [STRAY]
    assert not store.driver.exists(STRAY)
    assert sorted(store.driver.layer_ids()) == kept
    assert store.verify(base.chain_id) and store.verify(child.chain_id)
    assert store.gc() == [] and store.orphans() == []
