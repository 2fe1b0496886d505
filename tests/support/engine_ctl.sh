#!/bin/sh
# Start and stop a test host's private dockerd, the way systemctl does for the
# real engine: the driver_migration role's start/stop commands in the tests.
#
#   engine_ctl.sh start|stop HOSTDIR
#
# HOSTDIR/daemon.json is the engine's whole configuration (data-root,
# storage-driver, exec-root): the role and the modules read and rewrite that
# file, and the engine reads it at start, as on a real host. The socket is
# HOSTDIR/docker.sock, the pid file HOSTDIR/dockerd.pid, the log
# HOSTDIR/dockerd.log. "stop" only ever stops the dockerd whose pid it
# recorded, and waits for it and its containerd to exit.
#
# HOSTDIR/engine-prefix, when there, holds the prefix of another Engine build
# (Engine 26.1's, tests/support/dockerd.py): its dockerd, CLI and containerd
# run instead of the system's 20.10.
set -eu
action=${1:?usage: engine_ctl.sh start|stop HOSTDIR}
dir=${2:?usage: engine_ctl.sh start|stop HOSTDIR}
prefix=
[ -f "$dir/engine-prefix" ] && prefix=$(cat "$dir/engine-prefix")
if [ -n "$prefix" ]; then PATH=$prefix/usr/bin:$prefix/usr/sbin:$PATH; export PATH; fi
pidfile=$dir/dockerd.pid
sock=$dir/docker.sock

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop() {
  if running; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    i=0
    # dockerd stops its managed containerd before it exits
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

start() {
  running && return 0
  # setsid and no inherited descriptors: the daemon outlives the Ansible task
  setsid "$prefix/usr/sbin/dockerd" --config-file "$dir/daemon.json" -H "unix://$sock" --pidfile "$pidfile" \
    --bridge=none --iptables=false --ip-masq=false \
    >>"$dir/dockerd.log" 2>&1 </dev/null &
  i=0
  while [ $i -lt 300 ]; do
    if [ -S "$sock" ] && docker -H "unix://$sock" version >/dev/null 2>&1; then return 0; fi
    running || [ $i -lt 10 ] || break
    sleep 0.2; i=$((i + 1))
  done
  echo "dockerd did not answer on $sock; log tail:" >&2
  tail -n 20 "$dir/dockerd.log" >&2
  return 1
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
