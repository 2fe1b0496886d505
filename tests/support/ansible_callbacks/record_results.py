# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: append every task result to the JSON-lines file
named by $STRATA_RECORD_FILE, so that tests read real results, not stdout."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
name: record_results
type: aggregate
short_description: Record task results as JSON lines (tests only)
description: Appends one JSON object per task result to the file named by E(STRATA_RECORD_FILE).
'''

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'record_results'
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, result, status):
        path = os.environ.get('STRATA_RECORD_FILE')
        if not path:
            return
        entry = {
            'host': result._host.get_name(),
            'task': result._task.get_name(),
            'status': status,
            'result': result._result,
        }
        with open(path, 'a') as f:
            f.write(json.dumps(entry, default=str) + '\n')

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')
