# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    """Where a module finds the engine's data: the options of the
    C(group/strata.graphdriver.docker) action group, documented once.

    ``strata.graphdriver.daemon`` gives O(data_root) and O(daemon_json);
    modules that ask the running engine add ``strata.graphdriver.daemon.DOCKER_HOST``.
    Their argument spec is declared once too: ``module_utils/_common.py``
    (DATA_ROOT_ARGS, DOCKER_HOST_ARGS).
    """

    DOCUMENTATION = r'''
options:
  data_root:
    description:
      - Docker's data-root, which holds each driver's home and C(image/<driver>/).
      - Defaults to C(data-root) in O(daemon_json), else C(/var/lib/docker), as dockerd itself decides.
      - Can be set for a whole play with C(module_defaults) and C(group/strata.graphdriver.docker).
    type: path
  daemon_json:
    description:
      - Path of the engine's configuration file, read for the default of O(data_root) and the storage driver
        settings it declares.
      - Can be set for a whole play with C(module_defaults) and C(group/strata.graphdriver.docker).
    type: path
    default: /etc/docker/daemon.json
'''

    DOCKER_HOST = r'''
options:
  docker_host:
    description:
      - The running engine's API socket, C(unix://) only (the managed host's own engine).
      - When no engine answers there, the engine counts as stopped; that is not an error.
    type: str
    default: unix:///var/run/docker.sock
'''
