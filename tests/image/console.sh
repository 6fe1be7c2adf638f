#!/usr/bin/env bash
# tests/image/console.sh — sourced: a QEMU guest driven through its serial console (a FIFO in,
# a log out), for tests/image/run (and the scripts it sources) and
# tests/bench/scripts/rss-in-image. The caller sets QDIR (console.in, console.log), QPID (the
# image/qemu process group) and HOLD (the process holding the FIFO open), and OFFSET for
# wait_imap.
# shellcheck disable=SC2034 # QDIR/QPID/HOLD are the caller's
QDIR=
QPID=
HOLD=
cleanup_qemu() {
	if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
		kill -TERM -- "-$QPID" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL -- "-$QPID" 2>/dev/null || true
	fi
	if [ -n "$HOLD" ]; then kill "$HOLD" 2>/dev/null || true; fi
	QPID=
	HOLD=
}
guest() { printf '%s\n' "$*" >"$QDIR/console.in"; }
# Wait (bounded) until the console log matches a regex; prints the matching line.
wait_console() { # wait_console REGEX SECONDS
	local deadline=$(($(date +%s) + $2))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		grep -aE "$1" "$QDIR/console.log" | tail -n 1 | grep . && return 0
		sleep 0.5
	done
	return 1
}
# Wait (bounded) until the console log has at least N lines matching a regex.
wait_count() { # wait_count REGEX N SECONDS
	local deadline=$(($(date +%s) + $3))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		[ "$(grep -acE "$1" "$QDIR/console.log")" -ge "$2" ] && return 0
		sleep 0.5
	done
	return 1
}
# Wait until the relay answers IMAP through the forwarded port; prints seconds waited.
wait_imap() { # wait_imap SECONDS
	local start deadline banner
	start=$(date +%s.%N)
	deadline=$(($(date +%s) + $1))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		banner=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$((OFFSET + 143)) && head -c 40 <&3" 2>/dev/null || true)
		if [[ "$banner" == "* OK"* ]]; then
			echo "$(date +%s.%N) $start" | awk '{ printf "%.1f\n", $1 - $2 }'
			return 0
		fi
		sleep 0.5
	done
	return 1
}
# A guest command's result, marked so the echoed command line does not match itself.
guest_value() { # guest_value NAME 'shell expression' SECONDS
	local tag="R${RANDOM}"
	guest "echo \"$tag\"\"=$1=\$($2)=END\""
	wait_console "^$tag=$1=.*=END" "$3" | sed -E "s/^$tag=$1=(.*)=END.*/\1/" | tr -d '\r'
}
