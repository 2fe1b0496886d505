"""Stand-in for pip's get-pip.py, for hosts that cannot reach ci-files.testing.ansible.com.

ansible-test bootstraps pip in each sanity venv by running a cached get-pip
script (~/.ansible/test/cache/get_pip_<version>.py) with pip's install
arguments. This one installs the pip bundled with Python (ensurepip), then
runs that pip with the same arguments, so that the pinned pip and the
sanity requirements come from the configured package index like any other
pip install.
"""

import ensurepip
import runpy
import sys

if __name__ == "__main__":
    ensurepip.bootstrap(upgrade=False, default_pip=True)
    # get-pip's own flags; pip install has no such options.
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    sys.argv = ["pip", "install"] + args
    runpy.run_module("pip", run_name="__main__", alter_sys=True)
