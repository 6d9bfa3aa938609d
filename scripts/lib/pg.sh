# shellcheck shell=bash
# Shared Postgres helpers, sourced (never copied) by scripts/up.sh, scripts/down.sh,
# scripts/test.sh and scripts/dtmcli_check.sh:
#
#   source "scripts/lib/pg.sh"
#   pg_ensure                          # find or start a server, export PG_URL
#   pg_create_databases coordinator trans_out trans_in stock
#   pg_drop_databases dtmcli_stock     # drop if present
#   pg_stop_private                    # stop the private cluster (only if one runs)
#
# pg_ensure uses PG_URL (default postgres://postgres@127.0.0.1:5432, no database name and no
# trailing slash: a service's DATABASE_URL is "$PG_URL/<db>"). If a server answers there, it is
# used. Otherwise, if Postgres' own initdb and pg_ctl are installed (on PATH or under
# /usr/lib/postgresql/*/bin), a private throwaway cluster is created under target/pg/
# (trust auth, superuser "postgres", listening on 127.0.0.1 only, on a free port) and PG_URL
# is pointed at it; PG_STARTED_HERE=1 then tells the caller it started it. Otherwise it stops
# with a message saying how to get a server.
#
# Knobs: PG_URL, PG_PRIVATE_DIR (default <repo>/target/pg), PG_PRIVATE_PORT (default: the first
# free port from 55432), PG_RUN_AS (user that owns the private cluster when running as root,
# since initdb refuses root; default postgres).

PG_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PG_PRIVATE_DIR="${PG_PRIVATE_DIR:-$PG_REPO_ROOT/target/pg}"
PG_RUN_AS="${PG_RUN_AS:-postgres}"
# Set to 1 by pg_ensure when it started the private cluster (callers then own stopping it).
export PG_STARTED_HERE=0

pg_log() { printf '[pg] %s\n' "$*" >&2; }

pg_die() {
  printf '[pg] error: %s\n' "$*" >&2
  exit 1
}

# The path of a Postgres server-side tool (initdb, pg_ctl): PATH first, then Debian's
# versioned directories (newest first), where these tools live off PATH.
pg_find_bin() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  while IFS= read -r dir; do
    if [[ -x "$dir/$name" ]]; then
      echo "$dir/$name"
      return 0
    fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
  return 1
}

# Succeeds when a server accepts connections (and, with psql, logins) at the server URL $1.
pg_answers() {
  local url=$1
  if command -v psql >/dev/null 2>&1; then
    PGCONNECT_TIMEOUT=3 psql "$url/postgres" -XqtA -c 'SELECT 1' >/dev/null 2>&1
  elif command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -t 3 -d "$url/postgres"
  else
    pg_die "neither psql nor pg_isready is installed; install the Postgres client (apt-get install postgresql-client)"
  fi
}

# Runs a server-side tool as the cluster's owner: initdb and postgres refuse to run as root.
pg_as_owner() {
  if [[ $EUID -ne 0 ]]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$PG_RUN_AS" -- "$@"
  else
    su -s /bin/sh "$PG_RUN_AS" -c "$(printf '%q ' "$@")"
  fi
}

# Prints the first TCP port from $1 on which nothing listens on 127.0.0.1.
pg_free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}

# The URL of the private cluster if it is running, else nothing (and failure).
pg_private_url() {
  local port_file="$PG_PRIVATE_DIR/port" port
  [[ -f "$PG_PRIVATE_DIR/data/postmaster.pid" && -f "$port_file" ]] || return 1
  port=$(<"$port_file")
  pg_answers "postgres://postgres@127.0.0.1:$port" || return 1
  echo "postgres://postgres@127.0.0.1:$port"
}

# Creates (once) and starts the private cluster; prints its URL.
pg_start_private() {
  local initdb pg_ctl data="$PG_PRIVATE_DIR/data" port
  if ! initdb=$(pg_find_bin initdb) || ! pg_ctl=$(pg_find_bin pg_ctl); then
    pg_die "no Postgres answers at $PG_URL and Postgres' initdb/pg_ctl are not installed. Either start a server there
     (with Docker: docker-compose up -d postgres), or point PG_URL at one
     (PG_URL=postgres://user@host:port), or install the server package (apt-get install postgresql)."
  fi
  if [[ $EUID -eq 0 ]] && ! id -u "$PG_RUN_AS" >/dev/null 2>&1; then
    pg_die "initdb cannot run as root and user '$PG_RUN_AS' does not exist; set PG_RUN_AS to a non-root user or PG_URL to a running server"
  fi
  mkdir -p "$PG_PRIVATE_DIR"
  if [[ $EUID -eq 0 ]]; then
    chown -R "$PG_RUN_AS" "$PG_PRIVATE_DIR"
  fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    pg_log "creating a private cluster in $data"
    rm -rf "$data"
    (cd "$PG_PRIVATE_DIR" && pg_as_owner "$initdb" -D "$data" -U postgres -A trust -E UTF8 \
      --no-locale >"$PG_PRIVATE_DIR/initdb.log" 2>&1) ||
      pg_die "initdb failed, see $PG_PRIVATE_DIR/initdb.log"
  fi
  port=${PG_PRIVATE_PORT:-$(pg_free_port 55432)}
  pg_log "starting the private cluster on 127.0.0.1:$port (log: $PG_PRIVATE_DIR/postgres.log)"
  # No Unix socket: its path would depend on the checkout's location (and has a length limit).
  (cd "$PG_PRIVATE_DIR" && pg_as_owner "$pg_ctl" -D "$data" -l "$PG_PRIVATE_DIR/postgres.log" \
    -w -t 60 -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" \
    start >/dev/null) || pg_die "pg_ctl start failed, see $PG_PRIVATE_DIR/postgres.log"
  echo "$port" >"$PG_PRIVATE_DIR/port"
  echo "postgres://postgres@127.0.0.1:$port"
}

# Finds or starts a server; exports PG_URL. Sets PG_STARTED_HERE=1 when it started one.
pg_ensure() {
  local url
  PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
  PG_URL="${PG_URL%/}"
  export PG_URL
  if pg_answers "$PG_URL"; then
    return 0
  fi
  if url=$(pg_private_url); then
    pg_log "no Postgres answers at $PG_URL; using the private cluster at $url"
  else
    pg_log "no Postgres answers at $PG_URL"
    url=$(pg_start_private) || exit 1
    PG_STARTED_HERE=1
  fi
  PG_URL=$url
  export PG_URL
}

# Creates each named database on $PG_URL unless it exists.
pg_create_databases() {
  local db out
  for db in "$@"; do
    [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || pg_die "invalid database name '$db'"
    if [[ -z $(psql "$PG_URL/postgres" -XqtA -c "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
      # Another process may create it between the check and here: "already exists" is fine.
      if ! out=$(psql "$PG_URL/postgres" -Xq -c "CREATE DATABASE \"$db\"" 2>&1) &&
        [[ $out != *"already exists"* ]]; then
        pg_die "cannot create database $db on $PG_URL: $out"
      fi
      pg_log "created database $db"
    fi
  done
}

# Drops each named database on $PG_URL if it exists, even with sessions still connected.
pg_drop_databases() {
  local db
  for db in "$@"; do
    [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || pg_die "invalid database name '$db'"
    PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/postgres" -Xq -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null ||
      pg_die "cannot drop database $db on $PG_URL"
  done
}

# Stops the private cluster if it runs. Does nothing to any other server.
pg_stop_private() {
  local pg_ctl data="$PG_PRIVATE_DIR/data"
  [[ -f "$data/postmaster.pid" ]] || return 0
  pg_ctl=$(pg_find_bin pg_ctl) || pg_die "pg_ctl not found, cannot stop the private cluster in $data"
  pg_log "stopping the private cluster in $data"
  (cd "$PG_PRIVATE_DIR" && pg_as_owner "$pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null)
}
