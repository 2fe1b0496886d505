# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ask a Docker engine what it really runs: ``docker info`` without the CLI.

The Engine API over its unix socket with the standard library only
(``http.client`` on an AF_UNIX socket), so that a managed host needs neither
the docker CLI nor the Docker SDK for Python. Also the installed engine's
version from ``dockerd --version`` when no engine is running.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import http.client
import json
import re

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.command import Command
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.engine import UnixHTTPConnection
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.errors import GraphDriverError

DEFAULT_HOST = "unix:///var/run/docker.sock"

# Engine 29 makes the containerd image store the default on fresh installs:
# layers then live in containerd snapshotters, not in a graphdriver home.
CONTAINERD_STORE_DEFAULT_SINCE = (29, 0)


class EngineAPIError(GraphDriverError):
    pass


def socket_path(docker_host):
    """'unix:///run/x.sock' or '/run/x.sock' -> '/run/x.sock'."""
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://"):]
    if docker_host.startswith("/"):
        return docker_host
    raise EngineAPIError("docker_host %r: only unix:// sockets are supported "
                         "(the engine of the managed host itself)" % docker_host)


class Engine(object):
    def __init__(self, docker_host=DEFAULT_HOST, timeout=10):
        self.docker_host = docker_host
        self.path = socket_path(docker_host)
        self.timeout = timeout

    def get(self, endpoint):
        """GET ``endpoint`` and decode its JSON; EngineAPIError when unreachable."""
        conn = UnixHTTPConnection(self.path, self.timeout)
        try:
            conn.request("GET", endpoint, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise EngineAPIError("no Docker engine answers on %s (%s)" % (self.docker_host, e))
        finally:
            conn.close()
        if resp.status != 200:
            raise EngineAPIError("GET %s on %s: HTTP %s %s" % (
                endpoint, self.docker_host, resp.status, body[:200].decode("utf-8", "replace")))
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise EngineAPIError("GET %s on %s: invalid JSON (%s)" % (endpoint, self.docker_host, e))

    def info(self):
        return self.get("/info")

    def version(self):
        return self.get("/version")


def running_engine(docker_host=DEFAULT_HOST):
    """What the running engine reports, or None when no engine answers.

    Keys: version, api_version, driver, driver_status (dict), data_root,
    containerd_store (bool: the engine keeps images in containerd).
    """
    engine = Engine(docker_host)
    try:
        info = engine.info()
        version = engine.version()
    except EngineAPIError:
        return None
    status = dict((k, v) for k, v in (info.get("DriverStatus") or []))
    return {
        "docker_host": docker_host,
        "version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "driver": info.get("Driver"),
        "driver_status": status,
        "data_root": info.get("DockerRootDir"),
        # The containerd store reports driver-type io.containerd.snapshotter.v1.
        "containerd_store": status.get("driver-type", "").startswith("io.containerd.snapshotter"),
    }


_VERSION_RE = re.compile(r"version\s+v?([0-9]+\.[0-9]+[0-9A-Za-z.+~-]*)")


def installed_version(dockerd="dockerd"):
    """'20.10.24+dfsg1' from ``dockerd --version``, or None when not installed."""
    try:
        out = Command(dockerd, "--version").run(timeout=30)
    except GraphDriverError:
        return None
    m = _VERSION_RE.search(out)
    return m.group(1).rstrip(",") if m else None
