#!/usr/bin/env bash
# Usage: scripts/compose_check.sh
#
# Runs the project's own docker-compose.yml as a user would (`docker-compose up -d --build`) and
# checks what the README promises, through the published ports only:
#
#   1. every service becomes healthy, and the image weighs under 200 MB;
#   2. every published port listens on 127.0.0.1 only (docker-compose port, ss, and a refused
#      connection on the machine's other addresses);
#   3. fireTcc commits: 30 leaves bank A's account 1 and reaches bank B's account 1, nothing
#      stays frozen, and `query` shows each branch's confirm and cancel ops (confirm succeed);
#   4. fireTccRollback answers 409 and moves nothing;
#   5. firePurchase takes one unit of stock and its price from the buyer to the merchant;
#   6. fireTccNested commits with the child branch 0201 registered by the nested AP;
#   7. /admin serves the admin page;
#   8. a transaction whose Confirm is delayed (TransIn's first Confirm answers 500, retried
#      20 s later) survives `docker-compose restart coordinator`: it is still pending
#      when the coordinator restarts, and the restarted one finishes it exactly once (30 credited,
#      not 60).
#
# Then `docker-compose down -v` (also on failure). It prints one line per check and a summary
# with timings, and stops at the first broken check with the tail of the service's log.
#
# Needs a Docker engine with docker-compose (1.29 or later) and the base images the Dockerfile and
# compose file name (rust:1-bookworm, debian:bookworm-slim, postgres:15), pulled or built. Where
# Docker Hub cannot be reached, a machine without them can get them from
# ../shared/tools/compose-standins/build.sh (what .ci/run does).
#
# Environment:
#   COMPOSE_PROJECT_NAME   default tcc-compose-check: containers, network and volume of the check,
#                          apart from a `docker-compose up` of your own (project "main" or the
#                          directory's name); its volume is deleted at the end
#   POSTGRES_HOST_PORT (5432), APP_HOST_PORT (8080), TRANS_OUT_HOST_PORT (8081),
#   TRANS_IN_HOST_PORT (8082), STOCK_HOST_PORT (8083), COORDINATOR_HOST_PORT (36789):
#                          the host ports, as in docker-compose.yml; each must be free
#   COMPOSE_KEEP=1         leaves the stack running at the end (down -v is then yours to run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/http.sh
source "$ROOT/scripts/lib/http.sh"

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-tcc-compose-check}"
# Host port variables of docker-compose.yml: variable, default, service, container port.
PORTS=(
  "POSTGRES_HOST_PORT 5432 postgres 5432"
  "APP_HOST_PORT 8080 app 8080"
  "TRANS_OUT_HOST_PORT 8081 trans-out 8081"
  "TRANS_IN_HOST_PORT 8082 trans-in 8082"
  "STOCK_HOST_PORT 8083 stock 8083"
  "COORDINATOR_HOST_PORT 36789 coordinator 36789"
)
for entry in "${PORTS[@]}"; do
  read -r var default _ <<<"$entry"
  export "$var=${!var:-$default}"
done
APP="http://127.0.0.1:$APP_HOST_PORT/api"
BANK_A="http://127.0.0.1:$TRANS_OUT_HOST_PORT/api"
BANK_B="http://127.0.0.1:$TRANS_IN_HOST_PORT/api"
STOCK="http://127.0.0.1:$STOCK_HOST_PORT/api"
TM="http://127.0.0.1:$COORDINATOR_HOST_PORT"
DTM="$TM/api/dtmsvr"
# The most the image may weigh, in MB.
IMAGE_BUDGET_MB=200
# The delayed Confirm's retry interval (seconds, the transaction's retry_interval): longer than
# a restart of the coordinator (a graceful stop, at most docker's 10 s, then the start and its
# first health check), so the retry is still pending when the restarted coordinator is up.
RETRY_INTERVAL=20

start=$SECONDS
CHECKS=()
log() { printf '[compose] %s\n' "$*"; }
pass() {
  CHECKS+=("$*")
  printf '[compose] ok: %s\n' "$*"
}

# fail SERVICE MESSAGE: the broken check, the tail of SERVICE's log, then exit (the trap
# takes the stack down).
fail() {
  local service=$1
  shift
  printf '[compose] FAILED: %s\n' "$*" >&2
  if [[ -n $service ]]; then
    printf '[compose] last lines of %s:\n' "$service" >&2
    compose logs --no-color --tail 40 "$service" >&2 || true
  fi
  exit 1
}

# docker-compose 1.29 builds with the `docker` command first on PATH; a host may carry another
# docker client ahead of the engine's own, so the one installed beside docker-compose comes first.
command -v docker-compose >/dev/null 2>&1 ||
  fail "" "docker-compose is not installed (Debian/Ubuntu: apt-get install docker.io docker-compose)"
PATH="$(dirname "$(command -v docker-compose)"):$PATH"
docker info >/dev/null 2>&1 ||
  fail "" "no Docker engine answers $(command -v docker) (start the Docker daemon)"
compose() { docker-compose --ansi never "$@"; }

cleanup() {
  local rc=$?
  if [[ ${COMPOSE_KEEP:-0} == 1 ]]; then
    log "COMPOSE_KEEP=1: the stack is left running (docker-compose -p $COMPOSE_PROJECT_NAME down -v)"
  else
    log "docker-compose down -v"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

# Succeeds when something accepts TCP connections at host $1, port $2.
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# 0. Every host port free: a port already taken would make `up` fail half-way, or worse, the
#    checks below would talk to whatever holds it.
compose down -v --remove-orphans >/dev/null 2>&1 || true
for entry in "${PORTS[@]}"; do
  read -r var _ service _ <<<"$entry"
  if listening 127.0.0.1 "${!var}"; then
    fail "" "port ${!var} ($var, $service) is already in use on 127.0.0.1: stop what holds it or choose another, e.g. $var=$((${!var} + 10000))"
  fi
done
trap cleanup EXIT

# 1. Build and start, then wait until every service reports healthy.
log "docker-compose up -d --build (project $COMPOSE_PROJECT_NAME)"
build_start=$SECONDS
compose up -d --build >"${TMPDIR:-/tmp}/compose-check-up.log" 2>&1 || {
  tail -40 "${TMPDIR:-/tmp}/compose-check-up.log" >&2
  fail "" "docker-compose up -d --build failed"
}
up_secs=$((SECONDS - build_start))
SERVICES=(postgres coordinator trans-out trans-in stock app)
container() { compose ps -q "$1"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(container "$1")"; }
wait_healthy() {
  local service deadline=$((SECONDS + 180))
  for service in "$@"; do
    until [[ $(health "$service") == healthy ]]; do
      ((SECONDS < deadline)) || fail "$service" "$service is not healthy after 180 s ($(health "$service"))"
      sleep 1
    done
  done
}
wait_healthy "${SERVICES[@]}"
pass "built and started in ${up_secs}s; all six services healthy after $((SECONDS - build_start))s"
# The image's size budget (docker's MB: 10^6 bytes). Debug info made it 545 MB; the Dockerfile
# ships the binaries stripped of it (symbols kept, for backtraces with function names).
image_mb=$(($(docker image inspect -f '{{.Size}}' tcc-sample:local) / 1000000))
((image_mb < IMAGE_BUDGET_MB)) ||
  fail "" "the image tcc-sample:local is ${image_mb} MB, over its budget of ${IMAGE_BUDGET_MB} MB"
pass "image tcc-sample:local is ${image_mb} MB (budget ${IMAGE_BUDGET_MB} MB)"

# 2. Loopback only: what docker-compose publishes, what listens on the host, and what answers
#    on the machine's other addresses.
others=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -v -e '^$' -e '^127\.' -e ':' | paste -sd ' ' || true)
for entry in "${PORTS[@]}"; do
  read -r var _ service port <<<"$entry"
  published=$(compose port "$service" "$port")
  [[ $published == "127.0.0.1:${!var}" ]] ||
    fail "$service" "$service's port $port is published on '$published', not 127.0.0.1:${!var}"
  while read -r local_address; do
    [[ $local_address == "127.0.0.1:${!var}" ]] ||
      fail "$service" "something listens on $local_address for $service ($var), not only on 127.0.0.1"
  done < <(ss -Hltn "sport = :${!var}" | awk '{print $4}')
  for address in $others; do
    if listening "$address" "${!var}"; then
      fail "$service" "$service answers on $address:${!var}, not only on the loopback"
    fi
  done
done
pass "every published port listens on 127.0.0.1 only (also refused on: ${others:-no other address})"

# "<balance> <trading_balance>" of account $2 at the bank whose API is $1.
account() {
  local reply
  reply=$(http GET "$1/accounts/$2")
  [[ ${reply%% *} == 200 ]] || fail "" "GET $1/accounts/$2 answered ${reply%% *}: ${reply#* }"
  echo "$(json_get balance <<<"${reply#* }") $(json_get trading_balance <<<"${reply#* }")"
}
# "<stock> <reserved> <price>" of product $1.
product() {
  local reply
  reply=$(http GET "$STOCK/products/$1")
  [[ ${reply%% *} == 200 ]] || fail stock "GET $STOCK/products/$1 answered ${reply%% *}: ${reply#* }"
  echo "$(json_get stock <<<"${reply#* }") $(json_get reserved <<<"${reply#* }") $(json_get price <<<"${reply#* }")"
}
# Both accounts as "A_balance A_trading B_balance B_trading".
accounts() { echo "$(account "$BANK_A" 1) $(account "$BANK_B" 1)"; }
# The coordinator's record of gid $1 as "status | branch_id op status; ...".
record() {
  http GET "$DTM/query?gid=$1" | cut -d' ' -f2- | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["transaction"]["status"], "|", "; ".join(
    "%s %s %s" % (b["branch_id"], b["op"], b["status"]) for b in d.get("branches", [])))'
}
# fire PATH EXPECTED_HTTP_STATUS: calls the AP, checks the status, prints the body.
fire() {
  local reply
  reply=$(http GET "$APP/$1")
  [[ ${reply%% *} == "$2" ]] || fail app "GET /api/$1 answered ${reply%% *}, expected $2: ${reply#* }"
  echo "${reply#* }"
}
# expect_moved LABEL BEFORE AFTER CHANGES: each of the four numbers of accounts() moved by the
# matching one of CHANGES ("A_balance A_trading B_balance B_trading").
expect_moved() {
  local label=$1 i from to change
  read -r -a from <<<"$2"
  read -r -a to <<<"$3"
  read -r -a change <<<"$4"
  for i in 0 1 2 3; do
    ((to[i] - from[i] == change[i])) ||
      fail trans-in "$label: accounts went from ($2) to ($3), expected changes ($4)"
  done
}

# 3. fireTcc.
before=$(accounts)
body=$(fire fireTcc 200)
gid=$(json_get gid <<<"$body")
[[ $(json_get status <<<"$body") == succeed ]] || fail app "fireTcc answered $body"
expect_moved fireTcc "$before" "$(accounts)" "-30 0 30 0"
rec=$(record "$gid")
for want in "01 confirm succeed" "02 confirm succeed" "01 cancel prepared" "02 cancel prepared"; do
  [[ $rec == succeed* && $rec == *"$want"* ]] || fail coordinator "query?gid=$gid shows '$rec', expected status succeed and '$want'"
done
pass "fireTcc: succeed, bank A -30, bank B +30, nothing frozen; query: $rec"

# 4. fireTccRollback.
before=$(accounts)
body=$(fire fireTccRollback 409)
[[ $(json_get status <<<"$body") == failed ]] || fail app "fireTccRollback answered $body"
expect_moved fireTccRollback "$before" "$(accounts)" "0 0 0 0"
pass "fireTccRollback: 409 failed, nothing moved ($(json_get reason <<<"$body"))"

# 5. firePurchase: one unit of product 1, paid by account 1 of bank A to account 1 of bank B.
read -r stock0 reserved0 price <<<"$(product 1)"
before=$(accounts)
body=$(fire 'firePurchase?product_id=1&quantity=1&buyer=1&merchant=1' 200)
[[ $(json_get status <<<"$body") == succeed ]] || fail app "firePurchase answered $body"
read -r stock1 reserved1 _ <<<"$(product 1)"
((stock1 == stock0 - 1 && reserved1 == reserved0)) ||
  fail stock "firePurchase: stock $stock0 -> $stock1, reserved $reserved0 -> $reserved1; expected one unit taken"
expect_moved firePurchase "$before" "$(accounts)" "-$price 0 $price 0"
pass "firePurchase: succeed, stock $stock0 -> $stock1, $price moved from buyer to merchant"

# 6. fireTccNested: the nested AP (branch 02's Try) registers TransIn as child 0201.
before=$(accounts)
body=$(fire fireTccNested 200)
gid=$(json_get gid <<<"$body")
[[ $(json_get status <<<"$body") == succeed ]] || fail app "fireTccNested answered $body"
rec=$(record "$gid")
[[ $rec == succeed* && $rec == *"0201 confirm succeed"* ]] ||
  fail coordinator "fireTccNested: query?gid=$gid shows '$rec', expected the child branch 0201 confirmed"
expect_moved fireTccNested "$before" "$(accounts)" "-30 0 30 0"
pass "fireTccNested: succeed with child branch 0201; query: $rec"

# 7. The admin page.
reply=$(http GET "$TM/admin")
[[ ${reply%% *} == 200 && $reply == *"<html"* ]] || fail coordinator "GET /admin answered ${reply:0:200}"
pass "/admin serves the admin page"

# 8. A Confirm pending across `docker-compose restart coordinator`, finished exactly once.
before=$(accounts)
body=$(fire "fireTcc?trans_in_confirm=error:1&retry_interval=$RETRY_INTERVAL" 200)
gid=$(json_get gid <<<"$body")
[[ $(json_get status <<<"$body") == submitted ]] ||
  fail app "fireTcc with TransIn's first Confirm failing answered $body, expected status submitted"
pending=$(accounts)
expect_moved "before the restart" "$before" "$pending" "0 30 0 0"
started=$(docker inspect -f '{{.State.StartedAt}}' "$(container coordinator)")
restart_start=$SECONDS
compose restart coordinator >/dev/null 2>&1 || fail coordinator "docker-compose restart coordinator failed"
[[ $(docker inspect -f '{{.State.StartedAt}}' "$(container coordinator)") != "$started" ]] ||
  fail coordinator "the coordinator was not restarted"
wait_healthy coordinator
restart_secs=$((SECONDS - restart_start))
rec=$(record "$gid")
[[ $rec == submitted* ]] ||
  fail coordinator "after the restart $gid is '$rec': its retry (retry_interval=${RETRY_INTERVAL}s) should still be pending"
deadline=$((SECONDS + RETRY_INTERVAL + 30))
until [[ $rec == succeed* ]]; do
  ((SECONDS < deadline)) || fail coordinator "$gid is still '$rec' $((RETRY_INTERVAL + 30))s after the restart"
  sleep 1
  rec=$(record "$gid")
done
expect_moved "after the restart" "$before" "$(accounts)" "-30 0 30 0"
pass "Confirm pending across 'docker-compose restart coordinator' (${restart_secs}s): finished by the restarted one, 30 credited once; query: $rec"

printf '\n[compose] summary (%ss in all):\n' "$((SECONDS - start))"
printf '  ok  %s\n' "${CHECKS[@]}"
