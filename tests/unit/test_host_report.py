"""The warnings an operator sees in driver_info and the fleet audit."""

from ansible_collections.strata.graphdriver.plugins.module_utils._driver_info import warnings
from ansible_collections.strata.graphdriver.plugins.module_utils._daemon_json import storage_opts_dict


def facts(**kw):
    base = {
        "data_root": "/var/lib/docker", "prior_state": [], "drivers": {
            "overlay2": {"supported": True, "reason": ""},
            "btrfs": {"supported": False, "reason": "not on btrfs"},
            "devicemapper": {"supported": True, "reason": ""}},
        "engine_version": "20.10.24", "running": None, "d_type": True, "error": None,
        "containerd_image_store_default": False, "thin_pool": None,
        "daemon_json": {"storage_driver": None, "containerd_snapshotter": None},
    }
    for key, value in kw.items():
        if key in ("storage_driver", "containerd_snapshotter"):
            base["daemon_json"][key] = value
        else:
            base[key] = value
    return base


def test_quiet_host_has_no_warning():
    assert warnings(facts()) == []


def test_several_valid_graphdrivers():
    w = warnings(facts(prior_state=["overlay2", "btrfs"]))
    assert any("several valid graphdrivers (overlay2, btrfs)" in x for x in w)
    # Naming a driver in daemon.json is Docker's way out of the trap.
    declared = facts(prior_state=["overlay2", "btrfs"], storage_driver="overlay2")
    assert not any("several valid" in x for x in warnings(declared))


def test_configured_driver_problems():
    assert any("cannot run (not on btrfs)" in x for x in warnings(facts(storage_driver="btrfs")))
    assert any("images are in overlay2" in x
               for x in warnings(facts(storage_driver="vfs", prior_state=["overlay2"])))
    assert any("no longer has" in x
               for x in warnings(facts(storage_driver="devicemapper", engine_version="25.0.1")))


def test_running_engine_differs():
    w = warnings(facts(storage_driver="overlay2", running={"driver": "vfs", "containerd_store": False}))
    assert any("restart the engine" in x for x in w)


def test_containerd_store_default_from_engine_29():
    w = warnings(facts(engine_version="29.0.0", containerd_image_store_default=True))
    assert any("containerd image store" in x for x in w)
    assert warnings(facts(engine_version="29.0.0", containerd_image_store_default=True,
                          containerd_snapshotter=False)) == []


def test_storage_opts_dict():
    assert storage_opts_dict(["overlay2.size=10G", "dm.basesize = 20G", "flag"]) == {
        "overlay2.size": "10G", "dm.basesize": "20G", "flag": ""}


def test_graphdriver_store_left_for_the_rollback_is_not_hidden_images():
    # after a migration onto the containerd store, storage-driver names its snapshotter and the
    # graphdriver store stays for the rollback: not a hidden-images warning
    after = facts(storage_driver="overlayfs", containerd_snapshotter=True, prior_state=["overlay2"],
                  running={"driver": "overlayfs", "containerd_store": True})
    assert not any("hidden" in x for x in warnings(after))
    assert any("containerd image store (snapshotter overlayfs)" in x for x in warnings(after))
