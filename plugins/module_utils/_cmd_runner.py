# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""External tools' command lines as data, declared once per tool.

The idea of community.general's ``CmdRunner``, kept small: a tool is
declared once with how each named argument becomes argv; a call names the
arguments in order and gives their values, and gets a ``Command``
(graphdriver/command.py), which a plan runs or, in check mode, shows::

    ZPOOL = CmdRunner("zpool", create=fixed("create"), force=flag("-f"), name=positional())
    ZPOOL("create force name", force=True, name="tank")   # zpool create -f tank
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.command import Command


def fixed(*args):
    """Always these words (a subcommand, a fixed switch)."""
    return lambda value: list(args)


def flag(option):
    """``option`` when the value is true."""
    return lambda value: [option] if value else []


def option(name):
    """``name value``, or nothing for None."""
    return lambda value: [] if value is None else [name, str(value)]


def option_each(name, joined="%s=%s"):
    """``name k=v`` for each item of a dict (sorted), or ``name x`` for each of a list."""
    def fmt(value):
        if not value:
            return []
        items = ([joined % kv for kv in sorted(value.items())] if isinstance(value, dict)
                 else [str(v) for v in value])
        return [word for item in items for word in (name, item)]
    return fmt


def positional():
    """The value itself; each item of a list or tuple; nothing for None."""
    def fmt(value):
        if value is None:
            return []
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return fmt


class CmdRunner(object):
    """One external tool: ``CmdRunner(command, **arg_formats)``."""

    def __init__(self, command, **arg_formats):
        self.command = command.split() if isinstance(command, str) else list(command)
        self.arg_formats = arg_formats

    def __call__(self, args_order, **values):
        """The Command for the arguments named in ``args_order`` (a string of
        names, in order), each formatted from its value in ``values``."""
        argv = list(self.command)
        for name in args_order.split():
            if name not in self.arg_formats:
                raise KeyError("%s: no argument %r (declared: %s)"
                               % (self.command[0], name, ", ".join(sorted(self.arg_formats))))
            argv += self.arg_formats[name](values.get(name))
        return Command(*argv)
