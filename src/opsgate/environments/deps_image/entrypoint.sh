#!/bin/sh
# Entrypoint of opsgate's dependency image: the parts of the official postgres and redis images'
# entrypoints that opsgate relies on, so the same container definition runs on either image.
#   postgres ARGS...      first start: initdb with POSTGRES_USER/POSTGRES_PASSWORD, create POSTGRES_DB;
#                         then exec postgres ARGS as the postgres user (PGDATA kept across stop/start).
#   redis-server ARGS...  exec as the redis user in /data.
set -eu

as_user() { user=$1; shift; exec setpriv --reuid="$user" --regid="$user" --init-groups "$@"; }

case "${1:-}" in
postgres)
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    export PATH="$bin:$PATH"
    PGDATA=${PGDATA:-/var/lib/postgresql/data}
    export PGDATA
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required on first start}"
        user=${POSTGRES_USER:-postgres}
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
        chown postgres "$pwfile"
        setpriv --reuid=postgres --regid=postgres --init-groups \
            initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C --no-sync
        rm -f "$pwfile"
        echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
        db=${POSTGRES_DB:-$user}
        if [ "$db" != "postgres" ]; then
            # A server on the Unix socket only (no TCP port taken) to create the database, as the official image does.
            setpriv --reuid=postgres --regid=postgres --init-groups \
                pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
            setpriv --reuid=postgres --regid=postgres --init-groups \
                psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$user" -d postgres -q \
                -c "CREATE DATABASE \"$db\""
            setpriv --reuid=postgres --regid=postgres --init-groups pg_ctl -D "$PGDATA" -m fast -w stop
        fi
        echo "PostgreSQL init process complete; ready for start up."
    fi
    as_user postgres "$@"
    ;;
redis-server)
    mkdir -p /data
    chown redis:redis /data
    cd /data
    as_user redis "$@"
    ;;
*)
    exec "$@"
    ;;
esac
