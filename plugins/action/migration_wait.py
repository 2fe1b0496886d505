# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for a background driver_migration and print its progress meanwhile.

One task that polls in a loop on the controller: an include that includes
itself once per poll nests deeper each time, and Ansible gives up after a
few hundred levels (a migration of some forty minutes at a 10 s poll).
"""

from __future__ import annotations

import base64
import json
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


def progress_line(state):
    """One line a person reads: what the migration has done so far."""
    mib = 1024 * 1024
    return ("%s -> %s: %s, layers %d/%d, %.1f/%.1f MiB, containers %d/%d, %s s" % (
        state["source"], state["target"], state["phase"], state["layers_done"], state["layers_total"],
        state["bytes_done"] / mib, state["bytes_total"] / mib, state["containers_done"],
        state["containers_total"], state["seconds"]))


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        dummy, args = self.validate_argument_spec(argument_spec={
            "jid": {"type": "str", "required": True},
            "progress_file": {"type": "path"},
            "interval": {"type": "float", "default": 10.0},
            "timeout": {"type": "float", "default": 86400.0},
        })
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        host = task_vars.get("inventory_hostname", "?") if task_vars else "?"
        deadline = time.monotonic() + args["timeout"]
        printed = None
        while True:
            status = self._status(args["jid"], "status", async_dir, task_vars)
            if status.get("finished"):
                self._status(args["jid"], "cleanup", async_dir, task_vars)
                result.update(status)
                result["progress"] = printed
                return result
            if status.get("failed"):
                raise AnsibleActionFail("cannot follow migration job %s: %s" % (args["jid"], status.get("msg")))
            if time.monotonic() > deadline:
                raise AnsibleActionFail("migration job %s still runs after %d s; it goes on in the background"
                                        % (args["jid"], args["timeout"]))
            line = self._progress(args["progress_file"], task_vars)
            if line is not None and line != printed:
                display.display("%s: %s" % (host, line))
                printed = line
            time.sleep(args["interval"])

    def _status(self, jid, mode, async_dir, task_vars):
        return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                    module_args={"jid": jid, "mode": mode, "_async_dir": async_dir})

    def _progress(self, path, task_vars):
        """The progress file's line, None while it is not there (yet)."""
        if not path:
            return None
        got = self._execute_module(module_name="ansible.legacy.slurp", task_vars=task_vars,
                                   module_args={"src": path})
        if got.get("failed") or "content" not in got:
            return None
        try:
            return progress_line(json.loads(base64.b64decode(got["content"])))
        except (ValueError, KeyError, TypeError):
            return None     # written by another version: not worth failing the migration
