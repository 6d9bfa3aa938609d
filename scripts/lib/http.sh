# shellcheck shell=bash
# HTTP and JSON helpers for the scripts that drive the system over its APIs, sourced (never
# copied) by scripts/demo.sh, scripts/dtmrs_check.sh and scripts/compose_check.sh:
#
#   reply=$(http GET "$APP_URL/fireTcc")     # "<status> <body>"; status 000 when nothing answered
#   json_get transaction status <<<"$body"   # a value inside JSON, empty when absent
#   json_pretty <<<"$body"                   # indented, for people

# json_get FIELD...: reads JSON on stdin, prints the value at that path (object keys or list
# indexes), or nothing when absent. jq when installed, python3 otherwise.
json_get() {
  if command -v jq >/dev/null 2>&1; then
    local filter="" part
    for part in "$@"; do
      if [[ $part =~ ^[0-9]+$ ]]; then filter+="[$part]"; else filter+=".\"$part\""; fi
    done
    jq -r "${filter:-.} // empty" 2>/dev/null || true
  else
    python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
    for k in sys.argv[1:]:
        v = v[int(k)] if isinstance(v, list) else v[k]
except Exception:
    sys.exit(0)
if v is not None:
    print(v if not isinstance(v, (dict, list)) else json.dumps(v))
' "$@"
  fi
}

# Pretty-prints JSON on stdin (raw text if it is not JSON), indented by two spaces.
json_pretty() {
  local text
  text=$(cat)
  if command -v jq >/dev/null 2>&1 && jq . <<<"$text" >/dev/null 2>&1; then
    jq . <<<"$text"
  elif python3 -m json.tool <<<"$text" >/dev/null 2>&1; then
    python3 -m json.tool <<<"$text"
  else
    printf '%s\n' "$text"
  fi | sed 's/^/  /'
}

# http METHOD URL [JSON body] [curl args...]: prints "<status> <body>"; status 000 when
# nothing answered.
http() {
  local method=$1 url=$2 out status args=()
  if [[ $# -ge 3 && -n $3 ]]; then args=(-H 'content-type: application/json' --data-binary "$3"); fi
  args+=("${@:4}")
  out=$(curl -sS -X "$method" -w $'\n%{http_code}' --max-time 60 "${args[@]}" "$url" 2>/dev/null) || true
  status=${out##*$'\n'}
  printf '%s %s\n' "${status:-000}" "${out%$'\n'*}"
}
