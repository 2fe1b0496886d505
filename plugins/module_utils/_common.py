# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module of the collection shares: the options several take,
declared once (documented once in ``doc_fragments/daemon.py``), and one way
to run a plan in check mode and for real.

A plan (``_zfs_pool.ZpoolPlan``, ``_storage_driver.Plan``, ...) has one shape:

- ``changed``: whether the run changes anything;
- ``commands``: what a run does, in order (``Command`` objects or words);
- ``before``: the state found;
- ``planned()``: the state a run would leave (check mode);
- ``apply()``: does it and returns the state left;
- ``result(after)``: the module's own return values;
- optionally ``diff(after)``, when before/after are not what diff mode
  shows (None: no diff to show).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy

from ansible_collections.strata.graphdriver.plugins.module_utils import _daemon_json as daemon_json
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import engine
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.dataroot import DataRoot
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import GraphDriverError

# The options of group/strata.graphdriver.docker (meta/runtime.yml).
DATA_ROOT_ARGS = dict(
    data_root=dict(type='path'),
    daemon_json=dict(type='path', default=daemon_json.DEFAULT_PATH),
)
DOCKER_HOST_ARGS = dict(
    docker_host=dict(type='str', default=engine.DEFAULT_HOST),
)
FORCE_ARGS = dict(
    force=dict(type='bool', default=False),
)


def argument_spec(*shared, **own):
    """One module's argument spec: the shared option sets, then its own."""
    spec = {}
    for part in shared:
        spec.update(copy.deepcopy(part))    # each module its own dicts
    spec.update(own)
    return spec


def data_root_of(params):
    """(DataRoot, daemon.json as a dict) as dockerd decides: O(data_root),
    else daemon.json's data-root, else Docker's default."""
    config = daemon_json.read(params['daemon_json'])
    return DataRoot(params['data_root'] or daemon_json.data_root(config)), config


def run_plan(module, make_plan, result=None, verify=None, running_hint=None):
    """Make the plan, apply it unless in check mode, and return the result:
    ``changed``, ``commands``, the plan's own fields and ``diff``. A
    GraphDriverError fails the module with what was known so far, and so
    does ``verify(plan)`` when it returns a message; a running engine's
    refusal adds ``running_hint`` (what to do about it) and its evidence."""
    result = dict(result or {}, changed=False, commands=[])
    try:
        plan = make_plan()
        result.update(commands=[str(c) for c in plan.commands])     # known, should the run fail
        after = plan.planned() if module.check_mode else plan.apply()
        result.update(plan.result(after))
        # a real run may find less to do than planned (another run did it)
        result.update(changed=plan.changed, commands=[str(c) for c in plan.commands])
    except engine.EngineRunning as e:
        module.fail_json(msg='%s; %s' % (e, running_hint) if running_hint else str(e), evidence=e.evidence,
                         **result)
    except GraphDriverError as e:
        module.fail_json(msg=str(e), **result)
    if module._diff:
        diff = plan.diff(after) if hasattr(plan, 'diff') else {'before': plan.before, 'after': after}
        if diff is not None:
            result['diff'] = diff
    problem = verify(plan) if verify else None
    if problem:
        module.fail_json(msg=problem, **result)
    return result
