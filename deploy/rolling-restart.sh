#!/usr/bin/env bash
# Rolling restart of NATS servers, one at a time, each step gated by a running nats-insights:
#
#   deploy/rolling-restart.sh --restart 'systemctl restart nats-server@{}' n1 n2 n3
#
# For each SERVER, in the order given:
#   1. nats-insights preflight restart SERVER --wait WAIT   (until taking it down costs no quorum)
#   2. if it is the meta leader (preflight's `leader` field): the --step-down command, then
#      preflight again until another server leads
#   3. the --restart command, with {} replaced by SERVER
#   4. nats-insights wait healthy --server-name SERVER --timeout HEALTHY_TIMEOUT
# and stops at the first step that fails (exit 1), saying which. Put the meta leader last or let
# step 2 move leadership away first.
#
# Options:
#   --restart CMD          shell command restarting one server ({} is its server_name); required
#   --step-down CMD        shell command stepping the meta leader down (default:
#                          `nats server cluster step-down`; `-` to restart the leader as it is)
#   --wait D               how long preflight may wait for it to become safe (default 5m)
#   --healthy-timeout D    how long the group may take to be whole again (default 5m)
#   --dry-run              print what would run, ask preflight once per server, restart nothing
# The connection to the system account comes from the environment, as for every nats-insights
# command: NATS_INSIGHTS_CONFIG=deploy/nats-insights-client.toml (the read-only insights_client
# user) with NATS_PASSWORD, or NATS_URL, NATS_USER, NATS_INBOX_PREFIX, NATS_CONTEXT, ...
# NATS_INSIGHTS names the binary (default: nats-insights on PATH). Every decision is taken on
# preflight's exit code (0 safe, 1 not safe, 3 unknown) and its `leader` field, never its text;
# the binary takes answers only from a live instance of the service.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

insights=${NATS_INSIGHTS:-nats-insights}
restart=""
step_down="nats server cluster step-down"
wait_for=5m
healthy_timeout=5m
dry_run=false
servers=()
while [ $# -gt 0 ]; do
  case "$1" in
    --restart) restart=${2:?--restart needs a command}; shift 2 ;;
    --step-down) step_down=${2:?--step-down needs a command}; shift 2 ;;
    --wait) wait_for=${2:?--wait needs a duration}; shift 2 ;;
    --healthy-timeout) healthy_timeout=${2:?--healthy-timeout needs a duration}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "rolling-restart: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) servers+=("$1"); shift ;;
  esac
done
[ -n "$restart" ] || { echo "rolling-restart: --restart is required (see --help)" >&2; exit 2; }
[ ${#servers[@]} -gt 0 ] || { echo "rolling-restart: name the servers to restart (see --help)" >&2; exit 2; }

say() { echo "rolling-restart: $*" >&2; }

# Asks preflight whether $1 may restart, waiting up to $2 for it to be safe. Prints its `leader`
# field (true or false) and returns its exit code: 0 safe, 1 not safe, 3 unknown.
leads() {
  "$insights" preflight restart "$1" --wait "$2" --field leader
}

# Stops the roll after a refusal with exit code $2, showing the service's reasons.
refused() {
  say "$1: not safe to restart (preflight exit $2: $([ "$2" -eq 1 ] && echo not safe || echo unknown)); stopping here. Its reasons now:"
  "$insights" preflight restart "$1" >&2 || true
  exit 1
}

# Exits unless $2 is a `leader` field preflight can give.
check_field() {
  case "$2" in
    true | false) ;;
    *) say "$1: preflight gave no leader field ('$2'): is nats-insights older than this script?"; exit 1 ;;
  esac
}

for server in "${servers[@]}"; do
  say "$server: asking whether it may go down (waiting up to $wait_for)"
  code=0
  leader=$(leads "$server" "$wait_for") || code=$?
  [ "$code" -eq 0 ] || refused "$server" "$code"
  check_field "$server" "$leader"
  if [ "$leader" = true ]; then
    if [ "$step_down" = "-" ]; then
      say "$server leads the meta group; restarting it as it is (one election)"
    elif $dry_run; then
      say "$server leads the meta group; would run: $step_down"
    else
      say "$server leads the meta group; stepping it down: $step_down"
      sh -c "$step_down"
      # The service sees the new leader within a poll or two; the election may take seconds.
      tries=0
      while [ "$leader" = true ]; do
        tries=$((tries + 1))
        if [ "$tries" -gt 30 ]; then
          say "$server: still the meta leader 30 s after the step-down; stopping here"
          exit 1
        fi
        sleep 1
        code=0
        leader=$(leads "$server" "$wait_for") || code=$?
        [ "$code" -eq 0 ] || refused "$server" "$code"
        check_field "$server" "$leader"
      done
    fi
  fi
  command=${restart//\{\}/$server}
  if $dry_run; then
    say "$server: would run: $command"
    continue
  fi
  say "$server: restarting: $command"
  sh -c "$command"
  say "$server: waiting for the meta group to be whole again (up to $healthy_timeout)"
  if ! "$insights" wait healthy --server-name "$server" --timeout "$healthy_timeout"; then
    say "$server: the group is not whole after $healthy_timeout; stopping here"
    exit 1
  fi
done
say "done: ${servers[*]}"
