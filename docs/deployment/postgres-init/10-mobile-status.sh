#!/bin/sh
# Runs once, when the postgres volume is first initialized: the library's own role and
# database beside Dagster's (the image created the `dagster` role and database from
# POSTGRES_USER / POSTGRES_DB). The password comes from the environment, never from a file
# in the repository.
set -eu
: "${MOBILE_STATUS_PG_PASSWORD:?set MOBILE_STATUS_PG_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v password="$MOBILE_STATUS_PG_PASSWORD" <<'SQL'
CREATE ROLE mobile_status LOGIN PASSWORD :'password';
CREATE DATABASE mobile_status OWNER mobile_status;
REVOKE ALL ON DATABASE mobile_status FROM PUBLIC;
SQL
