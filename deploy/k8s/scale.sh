#!/usr/bin/env bash
# Scale the raftmq StatefulSet safely, one Raft member at a time: ./scale.sh REPLICAS
#
# Changing `replicas` alone is not enough: Raft only counts members that were added to its
# membership, one change at a time, by the leader. So for each pod this script
#   scale up   (raftmq-<n> for n = current .. REPLICAS-1, lowest first):
#     1. adds it to the membership (`raftmq cluster add-member`, run in a running member),
#     2. raises replicas by one: the pod starts, asks the members, finds itself and catches up,
#     3. waits until it is ready and caught up with the leader (`raftmq wait-caught-up`);
#   scale down (raftmq-<n> for n = current-1 .. REPLICAS, highest first, as the StatefulSet does):
#     1. drains it (`raftmq drain`: hands off the leadership, checks the rest hold a quorum),
#     2. removes it from the membership (`raftmq cluster remove-member`),
#     3. lowers replicas by one and waits until the pod is gone,
#     4. deletes its PersistentVolumeClaim, so that its old log is never revived: a later
#        scale-up starts that ordinal afresh, as a new member.
# Any failed step stops the script with the cluster in a consistent state (every member is a
# running pod): fix the cause and run it again; steps already done are skipped or harmless.
#
# Environment: NAMESPACE (default raftmq), STATEFULSET (raftmq), HEADLESS_SERVICE
# (raftmq-headless), CLUSTER_DOMAIN (cluster.local), RAFT_PORT (7000), HTTP_PORT (8080),
# COORDINATOR (the member that runs the membership commands; default <statefulset>-0),
# KUBECTL (kubectl), READY_TIMEOUT_S (600: a new member may replay or receive a large log).
set -euo pipefail

NAMESPACE=${NAMESPACE:-raftmq}
STATEFULSET=${STATEFULSET:-raftmq}
HEADLESS_SERVICE=${HEADLESS_SERVICE:-raftmq-headless}
CLUSTER_DOMAIN=${CLUSTER_DOMAIN:-cluster.local}
RAFT_PORT=${RAFT_PORT:-7000}
HTTP_PORT=${HTTP_PORT:-8080}
COORDINATOR=${COORDINATOR:-${STATEFULSET}-0}
KUBECTL=${KUBECTL:-kubectl}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-600}
LOCAL_URL="http://127.0.0.1:${HTTP_PORT}"

say() { echo "scale.sh: $*" >&2; }
die() { say "$*"; exit 1; }

usage() {
    sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

k() { "$KUBECTL" -n "$NAMESPACE" "$@"; }
# `raftmq ...` inside a pod's broker container.
in_pod() { local pod=$1; shift; k exec "$pod" -c raftmq -- raftmq "$@"; }

current_replicas() { k get statefulset "$STATEFULSET" -o 'jsonpath={.spec.replicas}'; }

raft_address() { echo "$1.${HEADLESS_SERVICE}.${NAMESPACE}.svc.${CLUSTER_DOMAIN}:${RAFT_PORT}"; }

wait_pod_ready() {
    local pod=$1 deadline=$((SECONDS + READY_TIMEOUT_S))
    # `kubectl wait` fails at once on a pod the StatefulSet has not created yet.
    until k get pod "$pod" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "pod $pod was not created within ${READY_TIMEOUT_S} s"
        sleep 2
    done
    local left=$((deadline - SECONDS))
    k wait --for=condition=Ready "pod/$pod" --timeout="$((left > 1 ? left : 1))s" >/dev/null \
        || die "pod $pod is not ready; see: $KUBECTL -n $NAMESPACE logs $pod"
}

add_one() {
    local ordinal=$1 pod="${STATEFULSET}-$1"
    say "adding $pod to the Raft membership"
    in_pod "$COORDINATOR" cluster add-member "$pod" "$(raft_address "$pod")" --url "$LOCAL_URL" \
        --timeout 30 >/dev/null || die "could not add $pod to the membership"
    k scale statefulset "$STATEFULSET" --replicas="$((ordinal + 1))" >/dev/null
    wait_pod_ready "$pod"
    in_pod "$COORDINATOR" wait-caught-up "$pod" --url "$LOCAL_URL" --timeout "$READY_TIMEOUT_S" \
        || die "$pod did not catch up with the leader"
    say "$pod is a member and caught up"
}

remove_member() {
    local pod=$1 output
    if output=$(in_pod "$COORDINATOR" cluster remove-member "$pod" --url "$LOCAL_URL" \
        --timeout 30 2>&1); then
        return 0
    fi
    # A run stopped half-way may have removed it already.
    if grep -q member_not_found <<<"$output"; then
        say "$pod is not a member (any more)"
        return 0
    fi
    say "$output"
    return 1
}

remove_one() {
    local ordinal=$1 pod="${STATEFULSET}-$1" attempt
    for attempt in 1 2 3; do
        say "draining $pod (attempt $attempt)"
        in_pod "$pod" drain --url "$LOCAL_URL" --timeout 50 || die "could not drain $pod"
        # Refused (cannot_remove_leader) only if the pod won an election again since the drain.
        remove_member "$pod" && break
        [ "$attempt" -lt 3 ] || die "could not remove $pod from the membership"
    done
    say "removed $pod from the membership; stopping it"
    k scale statefulset "$STATEFULSET" --replicas="$ordinal" >/dev/null
    k wait --for=delete "pod/$pod" --timeout=120s >/dev/null 2>&1 || true
    if k get pod "$pod" >/dev/null 2>&1; then
        die "pod $pod is still there; delete its claim data-$pod once it is gone"
    fi
    # The StatefulSet's whenScaled: Delete policy may have done it already.
    k delete pvc "data-$pod" --ignore-not-found >/dev/null
    say "$pod is gone, and its volume claim data-$pod with it"
}

main() {
    [ $# -eq 1 ] || usage
    local target=$1 current ordinal
    [[ "$target" =~ ^[1-9][0-9]*$ ]] || die "REPLICAS must be a positive integer, got '$target'"
    current=$(current_replicas) || die "no StatefulSet $STATEFULSET in namespace $NAMESPACE"
    [[ "$current" =~ ^[0-9]+$ ]] || die "cannot read the replicas of $STATEFULSET (got '$current')"
    if [ "$target" -eq "$current" ]; then
        say "$STATEFULSET already has $target replicas"
        return 0
    fi
    if [[ "$COORDINATOR" == "${STATEFULSET}-"* ]] && [[ "${COORDINATOR##*-}" =~ ^[0-9]+$ ]] \
        && [ "${COORDINATOR##*-}" -ge "$target" ]; then
        die "COORDINATOR $COORDINATOR would be removed itself; pick a member that stays"
    fi
    say "scaling $STATEFULSET from $current to $target replicas, one member at a time"
    if [ "$target" -gt "$current" ]; then
        for ((ordinal = current; ordinal < target; ordinal++)); do add_one "$ordinal"; done
    else
        for ((ordinal = current - 1; ordinal >= target; ordinal--)); do remove_one "$ordinal"; done
    fi
    say "done: $STATEFULSET has $target replicas, each a Raft member"
}

main "$@"
