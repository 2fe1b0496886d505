"""Run real ``ansible-playbook`` against localhost and read the task results.

    res = run_tasks([{"strata.graphdriver.driver_info": {"data_root": d}}], check=True)
    res.results[0]["changed"]

The collection is found through .build (ANSIBLE_COLLECTIONS_PATH); modules
run with the system python3, as on a managed host.
"""

import json
import os
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, ".build")
BIN = os.path.dirname(sys.executable)
CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ansible_callbacks")
HOST_PYTHON = "/usr/bin/python3"


class PlaybookRun(object):
    def __init__(self, proc, records):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.records = records

    @property
    def results(self):
        """Results of the tasks, in order."""
        return [r["result"] for r in self.records]

    def by_task(self, name):
        return [r["result"] for r in self.records if r["task"] == name]

    def __repr__(self):
        return "<PlaybookRun rc=%s>\n%s\n%s" % (self.rc, self.stdout[-4000:], self.stderr[-2000:])


def ansible_env(**extra):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": BUILD,
        "ANSIBLE_CALLBACK_PLUGINS": CALLBACKS,
        "ANSIBLE_CALLBACKS_ENABLED": "record_results",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "PATH": BIN + os.pathsep + env.get("PATH", ""),
    })
    env.update(extra)
    return env


def run_playbook(playbook, check=False, diff=False, extra_vars=None, inventory=None, args=(), env=None):
    """Run ``playbook`` (a path); return a PlaybookRun with every task result."""
    fd, record = tempfile.mkstemp(prefix="strata-results-", suffix=".jsonl")
    os.close(fd)
    argv = [os.path.join(BIN, "ansible-playbook"), playbook]
    argv += ["-i", inventory or "localhost,"]
    if inventory is None:
        argv += ["-c", "local", "-e", "ansible_python_interpreter=%s" % HOST_PYTHON]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    argv += list(args)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, cwd=ROOT,
                              env=ansible_env(STRATA_RECORD_FILE=record, **(env or {})))
        with open(record) as f:
            records = [json.loads(line) for line in f if line.strip()]
    finally:
        os.unlink(record)
    return PlaybookRun(proc, records)


def run_tasks(tasks, check=False, diff=False, extra_vars=None):
    """Run ``tasks`` (list of task dicts) in a one-play playbook on localhost."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    fd, path = tempfile.mkstemp(prefix="strata-play-", suffix=".yml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(play, f, sort_keys=False)
    try:
        return run_playbook(path, check=check, diff=diff, extra_vars=extra_vars)
    finally:
        os.unlink(path)


def run_module(module, params, check=False, diff=False):
    """One task of ``strata.graphdriver.<module>``; returns (PlaybookRun, result)."""
    task = {"name": module, "strata.graphdriver." + module: params, "ignore_errors": True}
    run = run_tasks([task], check=check, diff=diff)
    assert run.records, run
    record = run.records[-1]
    result = dict(record["result"])
    result["failed"] = record["status"] == "failed"
    return run, result
