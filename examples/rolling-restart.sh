#!/usr/bin/env bash
# Restart the nodes behind wsproxy one at a time without dropping users on the floor:
# for each NAME: drain it (no new connections; open ones may finish until the deadline, then the engine
# closes the rest spread over [timeouts] drain_spread so they reconnect to the other nodes gradually),
# wait until it has no connections, run the restart command, wait until the health check says it is up,
# then undrain it. Stops at the first failure with a message saying what state it left the node in.
#
#   examples/rolling-restart.sh [options] RESTART_COMMAND NAME...
#   examples/rolling-restart.sh "systemctl restart app@{}" b1 b2 b3 b4
#
# RESTART_COMMAND is run with `bash -c`, with every {} replaced by the node's name; it should return once
# the node is started (systemctl restart does, for a Type=notify service). Options:
#   -d, --deadline S       seconds a draining node's connections may stay before they are closed (30)
#   --drain-timeout S      give up if the node still has connections this long after the drain (deadline + 60)
#   --up-timeout S         give up if the node is not up this long after the restart (60)
#   --no-rebalance         do not run `wsproxy rebalance --wait` after the last node (it moves the clients back
#                          onto the nodes restarted last, which otherwise hold few or none)
#   --control PATH         the engine's control socket (default: $WSPROXY_CONTROL, else wsproxy's default)
# Environment: WSPROXY, the wsproxy command (default: wsproxy).
# Exit status: 0 all restarted; 1 a step failed (the message names the node and step); 2 usage.
set -euo pipefail

PROG=rolling-restart
read -r -a WSPROXY_CMD <<< "${WSPROXY:-wsproxy}"
deadline=30
drain_timeout=""
up_timeout=60
rebalance=1
control=()
current=""   # the node being worked on, and how far it got, for the message if we stop early
step=""

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

is_seconds() {
    [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]
}

while [[ $# -gt 0 ]]; do
    case $1 in
        -d|--deadline) [[ $# -ge 2 ]] && is_seconds "$2" || usage; deadline=$2; shift 2 ;;
        --drain-timeout) [[ $# -ge 2 ]] && is_seconds "$2" || usage; drain_timeout=$2; shift 2 ;;
        --up-timeout) [[ $# -ge 2 ]] && is_seconds "$2" || usage; up_timeout=$2; shift 2 ;;
        --no-rebalance) rebalance=0; shift ;;
        --control) [[ $# -ge 2 ]] || usage; control=(--control "$2"); shift 2 ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) echo "$PROG: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[[ $# -ge 2 ]] || usage
restart_command=$1
shift
names=("$@")
if [[ -z $drain_timeout ]]; then
    drain_timeout=$(awk -v d="$deadline" 'BEGIN { print d + 60 }')
fi
for name in "${names[@]}"; do
    [[ $name =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { echo "$PROG: invalid server name '$name'" >&2; exit 2; }
done

wsproxy() {
    "${WSPROXY_CMD[@]}" "$@" "${control[@]}"
}

on_exit() {
    local code=$?
    if [[ $code -ne 0 && -n $current ]]; then
        case $step in
            drain) echo "$PROG: $current may be draining: check it, then \`wsproxy undrain $current\`" >&2 ;;
            restart|wait-up|undrain)
                echo "$PROG: $current is left draining (no new users); once it is healthy: \`wsproxy undrain $current\`" >&2 ;;
        esac
    fi
}
trap on_exit EXIT

# Before touching anything: every node must exist and be up (taking one out while another is down would
# leave fewer nodes than the operator thinks).
for name in "${names[@]}"; do
    wsproxy wait-up "$name" --timeout 0 > /dev/null \
        || die "$name is not known to the engine or not up (see above); nothing was restarted"
done

for name in "${names[@]}"; do
    current=$name
    restart=${restart_command//\{\}/$name}

    step=drain
    echo "==> $name: draining (deadline ${deadline} s)"
    wsproxy drain "$name" --deadline "$deadline" --wait --timeout "$drain_timeout" \
        || die "$name: drain failed or it still had connections after ${drain_timeout} s; not restarted"

    step=restart
    echo "==> $name: restarting: $restart"
    restart_status=0
    bash -c "$restart" || restart_status=$?
    [[ $restart_status -eq 0 ]] || die "$name: restart command failed (exit $restart_status): $restart"

    step=wait-up
    echo "==> $name: waiting until it is up (at most ${up_timeout} s)"
    wsproxy wait-up "$name" --fresh --timeout "$up_timeout" || die "$name: not up ${up_timeout} s after the restart"

    step=undrain
    wsproxy undrain "$name" || die "$name: undrain failed"
    echo "==> $name: done"
    current=""
    step=""
done
echo "$PROG: restarted ${names[*]}"
if [[ $rebalance -eq 1 ]]; then
    echo "==> rebalancing"
    wsproxy rebalance --wait --timeout 300 || echo "$PROG: warning: rebalance did not finish (see above)" >&2
fi
