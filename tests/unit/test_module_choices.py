"""The driver names a module documents are the library's registry.

The argument specs take their choices from ``driver.registered()``;
ansible-doc reads the literal lists in DOCUMENTATION. A driver added to the
registry without its name in a module's documentation (or the reverse)
fails here, naming the module and the option.
"""

import importlib

import pytest
import yaml

from ansible_collections.strata.graphdriver.plugins.module_utils import _driver_migration, _storage_driver
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import registered

MODULES = "ansible_collections.strata.graphdriver.plugins.modules."


def documented_choices(module, option):
    doc = yaml.safe_load(importlib.import_module(MODULES + module).DOCUMENTATION)
    return doc["options"][option]["choices"]


@pytest.mark.parametrize("module, option, expected", [
    ("layer", "driver", registered()),
    ("data_root_check", "driver", registered(sources=True)),
    ("driver_migration", "target", _driver_migration.TARGETS),
    ("driver_migration", "source", _driver_migration.SOURCES),
    ("driver_migration", "snapshotter", _driver_migration.SNAPSHOTTERS),
    ("storage_driver", "name", _storage_driver.NAMES),
])
def test_documented_choices_are_the_registry(module, option, expected):
    assert documented_choices(module, option) == expected, "%s: %s" % (module, option)


def test_registry_has_the_read_only_sources_apart():
    # aufs and overlay are read as migration sources, never declared or written
    assert set(registered(sources=True)) - set(registered()) == {"aufs", "overlay"}
    assert "containerd" in _driver_migration.TARGETS and "containerd" not in registered(sources=True)
