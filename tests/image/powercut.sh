# shellcheck shell=bash disable=SC2154 # $img and the helpers come from tests/image/run
# tests/image/powercut.sh — power cuts under load (issue 14 §4), sourced by tests/image/run
# after its boot tests (uses its pass/fail/figure, guest/guest_value, wait_console/wait_imap,
# cleanup_qemu and $img, $OUT, $OFFSET, $PY).
#
# The power-cut model: image/qemu gives the guest its SD card as a raw file with
# cache=writeback, and killing the QEMU process loses everything the guest kernel had not yet
# written to its virtual disk — its page cache, which on the data partition (ext4,
# commit=60, dirty pages written after 60 s) holds the store's non-durable redb commits.
# What the relay fdatasync'ed (its write-ahead log) had reached QEMU and survives. Writes
# QEMU had accepted but not flushed to the host's disk survive too (the host does not lose
# power), so this is weaker than a real card losing its own cache.
#
# One QEMU session from a fresh copy of the image: boot; 8 sender and 4 recipient accounts;
# then RELAYBOX_POWERCUTS times (default 2): tests/soak/remote.py runs 8 submitters (SMTP 465,
# TLS, AUTH) and 4 Delta-Chat-like receivers (IMAP 993: fetch, \Seen, \Deleted + UID
# EXPUNGE) through the forwarded ports and, 2–8 s in (at least 5 messages acknowledged),
# kills the QEMU process the moment the next `250` arrives; image/qemu boots the card again;
# the relay must come back, its log must show no panic, and every recipient's INBOX must hold
# every acknowledged message exactly once, none that was expunged with `OK`, and the \Seen
# flags that were set with `OK` (tests/soak/soaklib.py). The last check also compares every
# stored body with the one sent. Figures: boot to relay-ready after a cut, messages
# acknowledged per cut, log records replayed at each boot. Every wait is bounded; QEMU is
# always stopped (cleanup_qemu).

PCUTS=${RELAYBOX_POWERCUTS:-2}
PCDIR=$OUT/powercut
PY=${PY:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3

# The store's log lines of the current boot (syslog ring), marked so the echo does not match.
pc_store_log() {
	guest_value "$1" "logread | grep -E 'store: replayed|panicked' | tail -n 1" 20
}

powercut_session() {
	local POFF=$((OFFSET + 3000)) sd p1 i qemu after ready rc=0 line
	local readies=() acks=() replays=() checks_ok=0 back=0 under_load=0 panics=0
	QDIR=$(mktemp -d /tmp/relaybox-powercut.XXXXXX)
	rm -rf "$PCDIR"
	mkdir -p "$PCDIR"
	sd=$QDIR/sd.img
	cp "$img" "$sd"
	truncate -s +2G "$sd" # a card of its own size: image/qemu --card keep
	p1=$(($(sfdisk -d "$sd" 2>/dev/null | sed -n 's/^[^ ]*1 : start= *\([0-9]*\),.*/\1/p') * 512))
	# Limits out of the way: every client comes from QEMU's one NAT address.
	printf '[params]\r\nmail_domain = 127.0.0.1\r\nlog_stderr = true\r\nmax_load_1m = 10000\r\nmax_user_send_per_minute = 1000000\r\nmax_user_send_burst_size = 1000000\r\nmax_connections_per_ip = 10000\r\nmax_connection_rate_per_ip = 10000\r\nmax_connection_burst_per_ip = 10000\r\n' >"$QDIR/chatmail.ini"
	MTOOLS_SKIP_CHECK=1 mcopy -i "$sd@@$p1" "$QDIR/chatmail.ini" ::chatmail.ini || return 1
	mkfifo "$QDIR/console.in"
	sleep 100000 >"$QDIR/console.in" &
	# shellcheck disable=SC2034 # stopped by cleanup_qemu (tests/image/run)
	HOLD=$!
	: >"$QDIR/console.log"
	setsid image/qemu --port-offset "$POFF" --debug-shell --max-boots $((PCUTS + 2)) --card keep "$sd" \
		<"$QDIR/console.in" >"$QDIR/console.log" 2>&1 &
	QPID=$!
	OFFSET=$POFF # for wait_imap

	if ! wait_imap 180 >/dev/null; then
		fail powercut-boot "no IMAP banner on port $((POFF + 143)) within 180 s"
		return 1
	fi
	wait_console 'built-in shell|# ' 30 >/dev/null
	if ! timeout 400 "$PY" tests/soak/remote.py accounts --offset "$POFF" --state "$PCDIR" >"$PCDIR/accounts.log" 2>&1; then
		fail powercut-accounts "see $PCDIR/accounts.log"
		return 1
	fi

	for i in $(seq 1 "$PCUTS"); do
		qemu=$(pgrep -P "$QPID" qemu-system || true)
		if [ -z "$qemu" ]; then
			fail "powercut-$i" "no QEMU process under image/qemu"
			rc=1
			break
		fi
		after=$((2 + RANDOM % 7))
		timeout 330 "$PY" tests/soak/remote.py traffic --offset "$POFF" --state "$PCDIR" --ready-within 240 \
			--cut-pid "$qemu" --cut-after "$after" --cut "$i" >"$PCDIR/traffic-$i.log" 2>&1
		line=$(grep '^CHECK' "$PCDIR/traffic-$i.log" | tail -n 1)
		echo "$line"
		if [[ "$line" == *" ok "* ]]; then
			under_load=$((under_load + 1))
			acks+=("$(sed -n 's/.*"acked_before_cut": \([0-9]*\).*/\1/p' "$PCDIR/cut-$i.json")")
		fi
		# The cut ended QEMU: image/qemu boots the card again.
		if ! wait_console "image/qemu: boot $((i + 1)): " 60 >/dev/null || ! wait_imap 300 >/dev/null; then
			fail "powercut-$i-relay-back" "no boot $((i + 1)) or no IMAP within 300 s after the cut"
			# The relay's own words (syslog) into the console log, for the post-mortem.
			# shellcheck disable=SC2016 # $((…)) is expanded by the guest: the echoed command
			# line does not match, only the output does.
			guest 'logread | grep -v session | tail -n 40; echo "logread-end-$((40 + 2))"'
			wait_console 'logread-end-42' 20 >/dev/null
			rc=1
			break
		fi
		# Measured by remote.py: from the kill to the first IMAP login that works again.
		ready=$(sed -n 's/.*"ready_after_cut_s": \([0-9.]*\).*/\1/p' "$PCDIR/cut-$i.json" 2>/dev/null)
		[ -n "$ready" ] && readies+=("$ready")
		back=$((back + 1))
		wait_console 'built-in shell|# ' 30 >/dev/null
		line=$(pc_store_log "store$i")
		echo "boot $((i + 1)): IMAP login ${ready:-?} s after the cut; ${line:-no store replay line}"
		[[ "$line" == *panicked* ]] && panics=$((panics + 1))
		replays+=("$(sed -n 's/.*replayed \([0-9]*\) log records.*/\1/p' <<<"$line")")
		if timeout 300 "$PY" tests/soak/remote.py check --offset "$POFF" --state "$PCDIR" \
			--label "powercut-$i-check" >"$PCDIR/check-$i.log" 2>&1; then
			checks_ok=$((checks_ok + 1))
		else
			rc=1
		fi
		grep -A8 '^CHECK' "$PCDIR/check-$i.log" | head -n 9
	done
	if [ "$under_load" -eq "$PCUTS" ]; then
		pass powercut-cuts-under-load
	else
		fail powercut-cuts-under-load "$under_load of $PCUTS cuts came while messages were acknowledged (see $PCDIR/traffic-*.log)"
	fi
	if [ "$back" -eq "$PCUTS" ] && [ "$panics" -eq 0 ]; then
		pass powercut-relay-back-after-every-cut
	else
		fail powercut-relay-back-after-every-cut "$back of $PCUTS boots came back, $panics panics"
	fi
	if [ "$checks_ok" -eq "$PCUTS" ]; then
		pass powercut-acknowledged-kept-expunged-gone
	else
		fail powercut-acknowledged-kept-expunged-gone "$checks_ok of $PCUTS checks passed (see $PCDIR/check-*.log)"
	fi
	# The last state once more, every body compared with what was sent.
	if timeout 600 "$PY" tests/soak/remote.py check --offset "$POFF" --state "$PCDIR" --bodies \
		--label powercut-final-check >"$PCDIR/check-final.log" 2>&1; then
		pass powercut-final-check-bodies
	else
		fail powercut-final-check-bodies "see $PCDIR/check-final.log"
		rc=1
	fi
	grep '^CHECK' "$PCDIR/check-final.log"
	local total=0 a
	for a in "${acks[@]}"; do total=$((total + ${a:-0})); done
	figure "power cuts under load (QEMU killed): $PCUTS cuts, $total messages acknowledged before them, $(grep -ho '"lost": [0-9]*' "$PCDIR"/check-powercut-*-check.json 2>/dev/null | awk '{ s += $2 } END { print s + 0 }') lost"
	if [ ${#readies[@]} -gt 0 ]; then
		figure "power cut to relay-ready (QEMU TCG, boot included): median $(printf '%s\n' "${readies[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }') s, max $(printf '%s\n' "${readies[@]}" | sort -n | tail -n 1) s"
		figure "log records replayed at the boots after the cuts: $(printf '%s ' "${replays[@]}")"
	fi
	printf '%s\n' "cuts=$PCUTS under_load=$under_load back=$back checks_ok=$checks_ok panics=$panics acks=${acks[*]} ready=${readies[*]} replayed=${replays[*]}" >"$PCDIR/summary.txt"
	guest poweroff
	wait_console 'relaybox-init: poweroff now' 60 >/dev/null || true
	# image/qemu ends after the poweroff: wait for it (bounded), not for a fixed time.
	for _ in $(seq 1 100); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
	if [ "$rc" -ne 0 ]; then
		# The store as the failing boots left it (QEMU has stopped: the card is quiet).
		cleanup_qemu
		local p6
		p6=$(($(sfdisk -d "$sd" 2>/dev/null | sed -n 's/^[^ ]*6 : start= *\([0-9]*\),.*/\1/p') * 512))
		mkdir -p "$PCDIR/data-at-end"
		debugfs -R "rdump /relaybox $PCDIR/data-at-end" "$sd?offset=$p6" >"$PCDIR/rdump.log" 2>&1 &&
			echo "the data directory at the end is in $PCDIR/data-at-end"
	fi
	return $rc
}

if [ -f "$img" ]; then
	save_offset=$OFFSET
	pc_start=$(date +%s)
	powercut_session
	OFFSET=$save_offset
	figure "power-cut tests: $(($(date +%s) - pc_start)) s for $PCUTS cuts (boot, accounts, cuts, checks)"
	cp "$QDIR/console.log" "$OUT/console-powercut.log" 2>/dev/null
	cleanup_qemu
	rm -rf "$QDIR"
else
	fail powercut "no image to boot"
fi
