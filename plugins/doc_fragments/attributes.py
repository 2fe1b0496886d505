# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    """The ``attributes`` every module of the collection documents.

    Modules extend with ``strata.graphdriver.attributes`` plus one of the
    specific fragments below, the way community.docker and community.crypto
    share theirs.
    """

    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: linux
    details:
      - Linux only, as Docker's graphdrivers are (mounts, ioctls, C(/proc)).
'''

    # For modules that only read: nothing to change, nothing to diff.
    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
'''

    # For modules that change the host and report a plan in check mode.
    CHANGES = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - In check mode the module runs no command that changes the host and returns in C(commands) the exact
        command lines it would run.
  diff_mode:
    support: full
  idempotent:
    support: full
'''
