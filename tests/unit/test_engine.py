"""engine: which data-root a dockerd command line uses; no engine on a fresh dir."""

import json
import os
import socket
import threading

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import engine


def test_data_root_from_flags(tmp_path):
    cfg = str(tmp_path / "none.json")
    assert engine.dockerd_data_root(["dockerd", "--data-root", "/a"]) == "/a"
    assert engine.dockerd_data_root(["dockerd", "--data-root=/b"]) == "/b"
    assert engine.dockerd_data_root(["dockerd", "-g", "/c"]) == "/c"
    assert engine.dockerd_data_root(["dockerd", "--config-file", cfg]) == "/var/lib/docker"


def test_data_root_from_daemon_json(tmp_path):
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"data-root": "/srv/docker"}))
    assert engine.dockerd_data_root(["dockerd", "--config-file", str(cfg)]) == "/srv/docker"


def test_fresh_directory_has_no_engine(tmp_path):
    assert engine.running_evidence(str(tmp_path)) == []
    engine.ensure_stopped(str(tmp_path))


def test_stale_pidfile_is_not_an_engine(tmp_path):
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text("%d" % os.getpid())  # alive, but not a dockerd
    assert engine.running_evidence(str(tmp_path), pidfile=str(pidfile)) == []


def test_socket_reporting_the_root_is_an_engine(tmp_path):
    root = str(tmp_path / "data")
    path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def answer():
        conn, _addr = srv.accept()
        conn.recv(65536)
        body = json.dumps({"DockerRootDir": root}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    try:
        evidence = engine.running_evidence(root, sockets=[path])
    finally:
        t.join(5)
        srv.close()
    assert len(evidence) == 1 and path in evidence[0]
    assert root in str(engine.EngineRunning(root, evidence))
