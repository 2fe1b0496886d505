#!/bin/sh
# A private dockerd for labs, the demo and molecule: everything under one
# directory LAB (config LAB/daemon.json, data-root LAB/docker, exec-root
# LAB/exec, socket LAB/docker.sock, pid LAB/dockerd.pid, log LAB/dockerd.log).
# The storage_driver role calls "restart" as its restart command on hosts
# without systemd. It only ever stops the dockerd whose pid it recorded.
#
#   lab-dockerd.sh start|stop|restart|status LAB
set -eu
action=${1:?usage: lab-dockerd.sh start|stop|restart|status LAB}
lab=${2:?usage: lab-dockerd.sh start|stop|restart|status LAB}
pidfile=$lab/dockerd.pid
sock=$lab/docker.sock

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop() {
  if running; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

start() {
  running && return 0
  mkdir -p "$lab/exec" "$lab/docker"
  [ -f "$lab/daemon.json" ] || echo '{}' > "$lab/daemon.json"
  # setsid + no inherited descriptors: the daemon outlives the Ansible task.
  setsid dockerd --config-file "$lab/daemon.json" --data-root "$lab/docker" \
    --exec-root "$lab/exec" -H "unix://$sock" --pidfile "$pidfile" \
    --bridge=none --iptables=false --ip-masq=false \
    >>"$lab/dockerd.log" 2>&1 </dev/null &
  i=0
  while [ $i -lt 300 ]; do
    if docker -H "unix://$sock" version >/dev/null 2>&1; then return 0; fi
    sleep 0.2; i=$((i + 1))
  done
  echo "dockerd did not answer on $sock within 60s; log tail:" >&2
  tail -n 20 "$lab/dockerd.log" >&2
  return 1
}

case "$action" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) running ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
