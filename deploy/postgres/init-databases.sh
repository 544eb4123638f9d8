#!/usr/bin/env bash
# PostgreSQL's first start (the official image sources /docker-entrypoint-initdb.d/*.sh as the
# superuser): one database per service, each owned by a role of its own that can connect to
# that database alone (CONNECT is revoked from PUBLIC). Passwords come from <ROLE>_DB_PASSWORD
# (USERS_DB_PASSWORD, ORDERS_DB_PASSWORD, ...), the same variables docker-compose.yml gives the
# services (its defaults are for a development machine only); a missing one stops the script.
set -euo pipefail

for database in users orders payments inventory notifications; do
	variable="${database^^}_DB_PASSWORD"
	if [[ -z "${!variable:-}" ]]; then
		echo "init-databases.sh: $variable is not set: no role is made without a password" >&2
		exit 1
	fi
	password="${!variable}"
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
		-v role="$database" -v password="$password" <<-'SQL'
		CREATE ROLE :"role" LOGIN PASSWORD :'password';
		CREATE DATABASE :"role" OWNER :"role";
		REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
	SQL
	# Nothing in its database is anyone else's either (PostgreSQL 15 already keeps CREATE on
	# the public schema from PUBLIC; this also keeps them from reading it).
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$database" \
		-c "REVOKE ALL ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO \"$database\";" \
		>/dev/null
	echo "database $database, owned by role $database"
done
# Nor may a service's role open the server's own databases (it could list the others' roles and
# sessions there); the superuser still can.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
	-c "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC; REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;" \
	>/dev/null
