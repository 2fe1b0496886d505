# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    """O(force), declared once: the collection's one confirmation for what
    destroys or hides data. Each module says what it confirms there, in its
    own O(force) description, which replaces this one."""

    DOCUMENTATION = r'''
options:
  force:
    description:
      - Confirm an operation that destroys or hides data. Without it such an operation is refused and the
        error says what it would have destroyed or hidden.
    type: bool
    default: false
'''
