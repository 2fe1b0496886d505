#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: migration_wait
short_description: Wait for a background driver_migration, printing its progress
version_added: 0.1.0
description:
  - Polls the async job of a M(strata.graphdriver.driver_migration) task started with C(async) and C(poll=0)
    until it ends, and prints a line of progress (phase, layers, MiB, containers, seconds) from the module's
    O(strata.graphdriver.driver_migration#module:progress_file) whenever it changed, every O(interval) seconds.
  - Returns the migration's own result, and fails as it failed. Removes the job's result file when done.
  - One task, looping on the controller, however long the migration takes. The
    C(strata.graphdriver.driver_migration) role uses it.
  - This is an action plugin; it runs on the controller and reaches the host through the connection.
author:
  - Strata graphdriver team (@strata)
requirements:
  - nothing on the managed host beyond what C(ansible.builtin.async_status) needs; the polling runs on the controller
options:
  jid:
    description: The C(ansible_job_id) of the async driver_migration task.
    type: str
    required: true
  progress_file:
    description: The progress file given to the migration; without it nothing is printed while waiting.
    type: path
  interval:
    description: Seconds between polls.
    type: float
    default: 10
  timeout:
    description:
      - Seconds to wait at most. The job is not stopped then; the task fails and says so.
    type: float
    default: 86400
attributes:
  check_mode:
    support: none
    description: There is no job in check mode; the role does not start one.
  diff_mode:
    support: none
    description: Nothing to show.
  action:
    support: full
    description: Runs on the controller.
  platform:
    support: full
    platforms: linux
    description: Target OS/families that can be operated against.
    details:
      - The hosts the migration runs on, Linux only.
notes:
  - The job's own module decides C(changed); this task reports it.
seealso:
  - module: strata.graphdriver.driver_migration
  - module: ansible.builtin.async_status
'''

EXAMPLES = r'''
- name: Migrate in the background
  strata.graphdriver.driver_migration:
    target: overlay2
    progress_file: /run/strata-graphdriver/migration.json
  async: 86400
  poll: 0
  register: job

- name: Wait for it, printing progress every 10 s
  strata.graphdriver.migration_wait:
    jid: "{{ job.ansible_job_id }}"
    progress_file: /run/strata-graphdriver/migration.json
  register: migration
'''

RETURN = r'''
progress:
  description: The last progress line printed, if any.
  returned: always
  type: str
  sample: "vfs -> overlay2: layers, layers 2/5, 310.4/902.0 MiB, containers 0/3, 4.1 s"
finished:
  description: Whether the job ended (always true on return).
  returned: always
  type: bool
'''

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            jid=dict(type='str', required=True),
            progress_file=dict(type='path'),
            interval=dict(type='float', default=10),
            timeout=dict(type='float', default=86400),
        ),
        supports_check_mode=False,
    )
    module.fail_json(msg='strata.graphdriver.migration_wait is an action plugin: it runs on the controller')


if __name__ == '__main__':
    main()
