# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""data_root_check as a plan (_common.run_plan): the findings of every
store checked are the state found; with repair, removing the repairable
ones is what a run does."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.strata.graphdriver.plugins.module_utils import _all_drivers  # noqa: F401 pylint: disable=unused-import
from ansible_collections.strata.graphdriver.plugins.module_utils._daemon_json import storage_opts_dict, storage_settings
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import fsck


class CheckPlan(object):
    def __init__(self, root, config, driver=None, storage_opts=None, verify=True, repair=False):
        self.root, self.repair = root, repair
        declared, declared_opts = storage_settings(config)
        self.checked, self.findings, self.repairable = [], [], []
        self.options = {}
        for name in [driver] if driver else root.layer_stores():
            opts = storage_opts if storage_opts is not None else (declared_opts if name == declared else [])
            self.options[name] = storage_opts_dict(opts)
            report = fsck.check(root.path, name, self.options[name], verify=verify)
            self.findings += [dict(f.as_dict(), driver=name) for f in report.findings]
            self.repairable += [dict(f.as_dict(), driver=name) for f in report.findings if f.repairable]
            self.checked.append(dict(driver=name, layers=report.layers, images=report.images,
                                     containers=report.containers, verified=report.verified,
                                     engine_running=report.engine_running))
        self.before = self.findings
        self.commands = ['remove %s (%s)' % (f['path'], f['kind']) for f in self.repairable] if repair else []

    @property
    def changed(self):
        return bool(self.commands)

    def planned(self):
        return self.repairable if self.repair else []

    def apply(self):
        repaired = []
        if self.repair:
            for name, opts in self.options.items():
                repaired += [dict(f.as_dict(), driver=name) for f in fsck.repair(self.root.path, name, opts)]
        return repaired

    def result(self, repaired):
        counts = {}
        for f in self.findings:
            counts[f['kind']] = counts.get(f['kind'], 0) + 1
        return dict(data_root=self.root.path, healthy=not self.findings, findings=self.findings, counts=counts,
                    checked=self.checked, repaired=repaired)

    def diff(self, repaired):
        return {'before': {'findings': self.findings},
                'after': {'findings': [f for f in self.findings if f not in repaired]}}
