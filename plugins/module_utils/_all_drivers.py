# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import every driver module by name, so that Ansible ships them.

The library imports a driver on first use (``importlib``), which Ansible's
module packer cannot see; a module that asks about or uses drivers imports
this file instead.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

# pylint: disable=unused-import
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import aufs  # noqa: F401
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import btrfs  # noqa: F401
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import devicemapper  # noqa: F401
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import fuse_overlayfs  # noqa: F401
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import overlay  # noqa: F401
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import overlay2  # noqa: F401
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import vfs  # noqa: F401
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import zfs  # noqa: F401
