"""The entrypoint scripts of the local images: each the part of its official image's
`docker-entrypoint.sh` that testfleet relies on, for /bin/sh (dash) and the few tools the image
holds."""

from __future__ import annotations

# `bao` subcommands (from `bao -help`, OpenBao 2.7): the official entrypoint prepends `bao` to
# them. It finds them by grepping `bao --help "$1"`; this image has no grep.
BAO_SUBCOMMANDS = (
    *("agent", "audit", "auth", "debug", "delete", "kv", "lease", "list", "login", "monitor"),
    *("namespace", "operator", "patch", "path-help", "pki", "plugin", "policy", "print"),
    *("proxy", "read", "scan", "secrets", "ssh", "status", "token", "transit", "unwrap"),
    *("version", "version-history", "write"),
)


POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# testfleet-local/postgres: the part of the official postgres image's docker-entrypoint.sh that
# testfleet relies on. The image starts as uid 999 already, so there is no root step (no chown,
# no gosu).
set -e

# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
	set -- postgres "$@"
fi

if [ "$1" = 'postgres' ]; then
	shift
	: "${POSTGRES_USER:=postgres}"
	: "${POSTGRES_DB:=$POSTGRES_USER}"
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	mkdir -p "$PGDATA"
	chmod 700 "$PGDATA" || :
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
			echo >&2 'Error: Database is uninitialized and superuser password is not specified.'
			echo >&2 '       Set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust.'
			exit 1
		fi
		if [ -n "$POSTGRES_PASSWORD" ]; then
			# Through a pipe, as bash's <(...) would: the password is in no argv and no file.
			# shellcheck disable=SC2086
			printf '%s\n' "$POSTGRES_PASSWORD" | initdb -D "$PGDATA" \
				--username="$POSTGRES_USER" --pwfile=/dev/stdin -E UTF8 --locale=C \
				--auth-local=trust --auth-host=scram-sha-256 --no-sync $POSTGRES_INITDB_ARGS
		else
			# shellcheck disable=SC2086
			initdb -D "$PGDATA" --username="$POSTGRES_USER" -E UTF8 --locale=C \
				--auth-local=trust --auth-host=scram-sha-256 --no-sync $POSTGRES_INITDB_ARGS
		fi
		printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
		if [ "$POSTGRES_DB" != 'postgres' ]; then
			case "$POSTGRES_DB" in
			*'"'*)
				echo >&2 'Error: POSTGRES_DB must not contain a double quote.'
				exit 1
				;;
			esac
			# Single-user mode: no server to start and stop, and no tool besides postgres.
			printf 'CREATE DATABASE "%s";\n' "$POSTGRES_DB" \
				| postgres --single -D "$PGDATA" -c fsync=off postgres > /dev/null
		fi
	fi
	exec postgres -c listen_addresses='*' "$@"
fi

exec "$@"
"""

# Valkey and Redis: the official images' entrypoint. The official images also compile
# `protected-mode` to default to `no` (their Dockerfiles patch config.c); these binaries default
# to `yes`, which refuses every connection through a published port when no password is set. So
# `protected-mode no` goes *before* whatever the caller gives: a config file is included after
# it, command-line options come after it, and either can still turn protected mode back on.
RESP_ENTRYPOINT = r"""#!/bin/sh
# testfleet-local/@KIND@: the official @KIND@ image's docker-entrypoint.sh. The image starts as
# uid 999 already, so there is no root step (no chown, no setpriv).
set -e

# first arg is `-f` or `--some-option`
# or first arg is `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- @SERVER@ "$@"
fi

if [ "$1" = '@SERVER@' ]; then
	if [ ! -w . ]; then
		echo >&2 "error: directory is not writable by current user ($PWD)"
		exit 1
	fi
	shift
	case "$1" in
	-v | --version | -h | --help | --test-memory | --check-system | -)
		set -- @SERVER@ "$@"
		;;
	'' | -*)
		set -- @SERVER@ --protected-mode no "$@"
		;;
	*)
		case "$1" in
		/*) conf="$1" ;;
		*) conf="$PWD/$1" ;;
		esac
		wrapper="/tmp/docker-entrypoint-$$.conf"
		lines='protected-mode no\ninclude "%s"\n'
		if (umask 077 && printf "$lines" "$conf" > "$wrapper") 2> /dev/null; then
			shift
			set -- @SERVER@ "$wrapper" "$@"
		else
			set -- @SERVER@ "$@" --protected-mode no
		fi
		;;
	esac
fi

# set an appropriate umask (if one isn't set already)
um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"@EXTRA@
"""

OPENBAO_ENTRYPOINT = r"""#!/bin/sh
# testfleet-local/openbao: the official openbao image's docker-entrypoint.sh without its root-only
# steps (chown, setcap, su-exec: the image starts as uid 999 already) and without the
# BAO_*_INTERFACE lookups (no `ip` here).
set -e

# Prevent core dumps
ulimit -c 0

BAO_CONFIG_DIR=/openbao/config
if [ -n "$BAO_LOCAL_CONFIG" ]; then
	printf '%s\n' "$BAO_LOCAL_CONFIG" > "$BAO_CONFIG_DIR/local.json"
fi

# first arg is `-f` or `--some-option`
if [ "${1#-}" != "$1" ]; then
	set -- bao "$@"
fi

case "$1" in
server)
	shift
	# The official script also passes -dev-root-token-id="$BAO_DEV_ROOT_TOKEN_ID"; bao reads
	# that variable itself, so the token stays out of the argv.
	set -- bao server -config="$BAO_CONFIG_DIR" \
		-dev-listen-address="${BAO_DEV_LISTEN_ADDRESS:-0.0.0.0:8200}" "$@"
	;;
@SUBCOMMANDS@)
	set -- bao "$@"
	;;
esac

exec "$@"
"""

NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
