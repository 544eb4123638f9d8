#!/usr/bin/env bash
# The official PostgreSQL image's start-up, as far as docker-compose.yml relies on it: on an
# empty PGDATA, initdb with POSTGRES_USER (default postgres) and POSTGRES_PASSWORD, run the
# scripts of /docker-entrypoint-initdb.d (*.sh sourced, *.sql through psql) on a server that
# listens on its socket only, then serve on every address with password (scram-sha-256) logins.
set -euo pipefail

if [[ $(id -u) == 0 ]]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

export POSTGRES_USER=${POSTGRES_USER:-postgres}
export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
if [[ ! -s $PGDATA/PG_VERSION ]]; then
	if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
		echo "POSTGRES_PASSWORD is not set: the superuser needs a password" >&2
		exit 1
	fi
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
	export PGUSER=$POSTGRES_USER PGHOST=/var/run/postgresql
	if [[ $POSTGRES_DB != postgres ]]; then
		psql -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
	fi
	for script in /docker-entrypoint-initdb.d/*; do
		case $script in
		*.sh) echo "running $script" && source "$script" ;;
		*.sql) echo "running $script" && psql -v ON_ERROR_STOP=1 -d "$POSTGRES_DB" -f "$script" ;;
		*) ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "PostgreSQL init process complete; ready for start up."
fi

if [[ ${1:-} == postgres ]]; then
	shift
	exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
