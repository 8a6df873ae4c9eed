# shellcheck shell=bash
# Helpers for the deployment scripts that drive BoxOffice's REST API with curl.
#
# Sourced by scripts/deploy-checks and scripts/cluster-container-test. Globals: `base` (the
# node's URL), `token` (sent as a Bearer token when not empty) and `API_WORK` (a scratch
# directory); `request` sets `status` and leaves the body and headers in API_WORK.

# Stops the calling script with one line naming what went wrong.
fail() {
  echo "$(basename "$0"): FAILED: $*" >&2
  exit 1
}

# request METHOD PATH [BODY]
request() {
  local method=$1 path=$2 data=${3:-}
  local arguments=(-sS -X "$method" -o "$API_WORK/body" -D "$API_WORK/headers" -w '%{http_code}'
    --max-time 30 -H 'content-type: application/json')
  if [ -n "${token:-}" ]; then arguments+=(-H "authorization: Bearer $token"); fi
  if [ -n "$data" ]; then arguments+=(--data "$data"); fi
  status=$(curl "${arguments[@]}" "${base:?base is not set}$path")
}

# expect_status CODE WHAT: fails unless the last request answered CODE.
expect_status() {
  [ "$status" = "$1" ] || fail "$2 answered $status, expected $1: $(head -c 300 "$API_WORK/body")"
  echo "$2 -> $status"
}

# json_field NAME: a top-level field of the last response body.
json_field() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$API_WORK/body" "$1"
}

# auth_token: the X-Auth-Token header of the last response (signup, signin).
auth_token() {
  awk -F': ' 'tolower($1) == "x-auth-token" {print $2}' "$API_WORK/headers" | tr -d '\r'
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every half second until it succeeds.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within $limit s"
    sleep 0.5
  done
}

# random_hex: 32 random bytes as hex (secrets for a test run).
random_hex() {
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}
