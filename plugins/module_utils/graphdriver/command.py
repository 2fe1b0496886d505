"""The one way this library runs an external tool.

Like community.general's CmdRunner, command lines are data: a ``Command`` is
an argv list that can be run or shown. In check mode the Ansible modules ask
for the plan (``str(cmd)``) instead of running it.
"""

import os
import shlex
import shutil
import subprocess

from .errors import CommandError, PrerequisitesMissing


class Command(object):
    def __init__(self, *argv):
        self.argv = [str(a) for a in argv]

    def __str__(self):
        return " ".join(shlex.quote(a) for a in self.argv)

    __repr__ = __str__

    def run(self, input=None, check=True, env=None, timeout=None):
        """Run it; return stdout as text. Raise CommandError on failure."""
        return run(self.argv, input=input, check=check, env=env, timeout=timeout)


def run(argv, input=None, check=True, env=None, timeout=None):
    argv = [str(a) for a in argv]
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    # LC_ALL=C: tools' messages are parsed and shown in errors.
    full_env = dict(full_env or os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(
            argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=full_env, timeout=timeout, universal_newlines=True,
            check=False)   # the return code is checked below, into a CommandError
    except FileNotFoundError:
        raise CommandError(argv, 127, "%s: command not found" % argv[0])
    except subprocess.TimeoutExpired:
        raise CommandError(argv, -1, "timed out after %ss" % timeout)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc.stdout


def require_tool(driver, name):
    """Return the tool's path, or raise PrerequisitesMissing naming it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not path:
        raise PrerequisitesMissing(driver, "the %r tool is not installed" % name)
    return path
