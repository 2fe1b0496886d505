"""Skips that count: on the reference machine a skip must be on the list.

The reference machine (Debian 12, root, `make test` from .ci/run, which sets
STRATA_REFERENCE_MACHINE=1) knows which skips to expect: those of
tests/allowed_skips.txt, each a reviewed line with the reason it is
allowed. Any other skip there (a backend that did not come up, a VM that did
not boot, a dockerd that did not answer) is listed at the end of the run and
turns its exit status red. Without the variable (a developer's partial or
unprivileged run) skips are only reported, as always.

The list is read by ``load``; a line is ``<test id glob> <reason regex>``
(the first run of blanks splits them): the glob must match the whole pytest
node id (``*`` and ``?`` are its only wildcards: brackets are literal, as in
a parameter id ``[vfs]``), the regex is searched in the skip reason. Comment lines (#)
above a rule say why it is allowed.
"""

import os
import re

ENV = "STRATA_REFERENCE_MACHINE"
LIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "allowed_skips.txt")


class Rule(object):
    def __init__(self, glob, pattern, where):
        self.glob = glob
        self.nodeid = re.compile(re.escape(glob).replace(r"\*", ".*").replace(r"\?", ".") + r"\Z")
        self.pattern = re.compile(pattern)
        self.where = where

    def allows(self, nodeid, reason):
        return self.nodeid.match(nodeid) is not None and self.pattern.search(reason) is not None


def parse(text, source="<text>"):
    """Rules from ``text``; a malformed line is a ValueError naming it."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        where = "%s:%d" % (source, number)
        if len(parts) != 2:
            raise ValueError("%s: expected '<test id glob> <reason regex>': %r" % (where, line))
        try:
            rules.append(Rule(parts[0], parts[1], where))
        except re.error as e:
            raise ValueError("%s: bad reason regex %r: %s" % (where, parts[1], e))
    return rules


def load(path=LIST):
    with open(path) as f:
        return parse(f.read(), os.path.relpath(path))


def reason_of(report):
    """The skip reason pytest shows (without its "Skipped: " prefix)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


class Checker(object):
    """The pytest plugin: records skips, fails the session on unexpected ones."""

    def __init__(self, path=LIST):
        self.path = path
        self.skipped = []        # (nodeid, reason)
        self.unexpected = []

    def _record(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append((report.nodeid, reason_of(report)))

    def pytest_runtest_logreport(self, report):
        self._record(report)

    def pytest_collectreport(self, report):
        self._record(report)

    def pytest_sessionfinish(self, session, exitstatus):
        if os.environ.get(ENV) != "1":
            return
        rules = load(self.path)
        self.unexpected = [(n, r) for n, r in self.skipped
                           if not any(rule.allows(n, r) for rule in rules)]
        if self.unexpected and session.exitstatus == 0:
            session.exitstatus = 1      # pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.unexpected:
            return
        terminalreporter.section("skips not allowed on the reference machine (%s=1)" % ENV,
                                 red=True)
        for nodeid, reason in self.unexpected:
            terminalreporter.write_line("%s: %s" % (nodeid, reason), red=True)
        terminalreporter.write_line(
            "%d unexpected skip(s): make the backend work here, or add a reviewed line to %s"
            % (len(self.unexpected), os.path.relpath(self.path)), red=True)
