# shellcheck shell=bash
# tests/image/ota.sh — the QEMU tests of signed A/B over-the-air updates (issue 7), sourced by
# tests/image/run after its image tests (uses its pass/fail/check/figure, guest/guest_value,
# wait_console/wait_count/wait_imap, cleanup_qemu and $bin, $OUT, $OFFSET, $PY).
#
# Builds three images with a test minisign key into tests/out/image/ota (never image/out):
# base (build 100), good (build 200) and fail (build 300: its daemon starts, but a wrapper
# caps max_message_size so the trial's SMTP-to-IMAP health check cannot pass). Bundles:
# good and fail on an HTTPS server on loopback (tests/image/update_server.py, test CA, reached
# by the guest as https://10.0.2.100/ through image/qemu --update-server); bad signature,
# corrupted image, other board, older build and a copy of good on a read-only ext4 disk
# (/dev/vdb in the guest) for installs by hand on the debug shell.
#
# One QEMU session, one boot after the other (max 8 boots):
#  1. slot A, build 100: relay checks "before"; web UI claimed; the four bad bundles are
#     refused by `relaybox update install` with their reason, the inactive slot's partitions
#     unchanged (hashed in sd.img); an install of good by hand is cut by killing QEMU while it
#     writes the inactive slot;
#  2. slot A again (power cut: no trial armed); "update now" on the status page with
#     latest.json offering build 200 → download, install, reboot;
#  3. trial of slot B: health check passes, committed (autoboot.txt [all] = 3), status page
#     shows build 200, relay checks "after" (accounts and messages kept); latest.json offers
#     build 300, "update now";
#  4. trial of slot A with the failing image: health check fails, plain reboot;
#  5. slot B (rolled back), the reason on the status page; boot-count 3 and good-a by hand;
#  6. the init switches to slot A (BOOT-6); 7. slot A boots.
# Every wait is bounded; QEMU and the update server are always stopped.

OTA=$OUT/ota
PY=${PY:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
USRV=
ota_cleanup() {
	cleanup_qemu
	[ -n "$USRV" ] && kill "$USRV" 2>/dev/null
	USRV=
}

# Partition N's byte offset and size in an image: "OFFSET SIZE".
part_range() { # part_range IMAGE N
	sfdisk -d "$1" 2>/dev/null | sed -n "s/^[^ ]*$2 : start= *\([0-9]*\), *size= *\([0-9]*\),.*/\1 \2/p" |
		awk '{ print $1 * 512, $2 * 512 }'
}
# sha256 of partitions 3 and 5 (boot-b, root-b: slot A's inactive slot) of an image.
slot_b_hash() { # slot_b_hash IMAGE
	local n off size
	for n in 3 5; do
		read -r off size < <(part_range "$1" "$n")
		dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$size" status=none | sha256sum | cut -d' ' -f1
	done | tr '\n' ' '
}
# `[all] boot_partition=` of the autoboot.txt in an image's partition 1 (what the next plain
# boot uses).
autoboot_all() { # autoboot_all IMAGE
	local off
	read -r off _ < <(part_range "$1" 1)
	MTOOLS_SKIP_CHECK=1 mtype -i "$1@@$off" ::autoboot.txt 2>/dev/null | tr -d '\r' |
		awk '/^\[/ { s = $0; next } s == "[all]" && /^boot_partition=/ { v = substr($0, 16) } END { print v }'
}
make_test_ca() { # make_test_ca DIR: ca.pem, and server.pem/server.key for IP 10.0.2.100
	local d=$1
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj "/CN=Relaybox test update CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" || return 1
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-subj "/CN=10.0.2.100" -keyout "$d/server.key" -out "$d/server.csr" || return 1
	printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
		'extendedKeyUsage=serverAuth' 'subjectAltName=IP:10.0.2.100' >"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
		-days 2 -extfile "$d/server.ext" -out "$d/server.pem"
}
# latest.json on the update server offering build N (bundle relaybox-N.tar next to it).
offer() { # offer N
	local f=$OTA/srv/relaybox-$1.tar
	printf '{"build": %s, "version": "test-%s", "bundle_url": "relaybox-%s.tar", "size": %s}\n' \
		"$1" "$1" "$1" "$(stat -c %s "$f" 2>/dev/null || echo 0)" >"$OTA/srv/latest.json.tmp"
	mv "$OTA/srv/latest.json.tmp" "$OTA/srv/latest.json"
}

# --- web UI (status page) ---------------------------------------------------------------------
UI=
JAR=
UI_PASSWORD=ota-test-password-2718281828
ui() { curl -sk --max-time 30 -c "$JAR" -b "$JAR" "$@"; }
csrf_of() { grep -o 'name="csrf" value="[^"]*"' | head -n 1 | sed 's/.*value="//; s/"$//'; }
# Text of the element with id=$1 on the status page.
ui_status_field() { # ui_status_field ID
	ui "$UI/admin/status" | tr -d '\n' | grep -o "id=\"$1\"[^>]*>[^<]*" | head -n 1 | sed 's/^[^>]*>//'
}
# Claim with the setup code from the console and set the admin password (logged in after).
ui_claim() {
	local code page token where
	code=$(grep -aE 'relaybox-init: setup code: ' "$QDIR/console.log" | tail -n 1 |
		sed -E 's/.*setup code: ([A-Z0-9-]+).*/\1/' | tr -d '\r')
	[ -n "$code" ] || { echo "no setup code on the console"; return 1; }
	for _ in $(seq 1 20); do
		page=$(ui "$UI/admin/claim" || true)
		[[ "$page" == *'name="csrf"'* ]] && break
		sleep 1
	done
	token=$(printf '%s' "$page" | csrf_of)
	where=$(ui -o /dev/null -w '%{redirect_url}' --data-urlencode "csrf=$token" \
		--data-urlencode "code=$code" "$UI/admin/claim/code")
	[[ "$where" == */admin/password ]] || { echo "claim went to '$where'"; return 1; }
	token=$(ui "$UI/admin/password" | csrf_of)
	where=$(ui -o /dev/null -w '%{redirect_url}' --data-urlencode "csrf=$token" \
		--data-urlencode "password=$UI_PASSWORD" --data-urlencode "confirm=$UI_PASSWORD" \
		"$UI/admin/password")
	[[ "$where" == */admin/ ]] || { echo "password went to '$where'"; return 1; }
	ui "$UI/admin/status" | grep -q 'id="update-state"' || { echo "no update state on the status page"; return 1; }
}
# Log in again if the session is gone (the key lives on /data, so normally it is not).
ui_login() {
	local page token
	page=$(ui "$UI/admin/status")
	[[ "$page" == *'id="update-state"'* ]] && return 0
	token=$(ui "$UI/admin/login" | csrf_of)
	ui -o /dev/null --data-urlencode "csrf=$token" --data-urlencode "password=$UI_PASSWORD" "$UI/admin/login"
	ui "$UI/admin/status" | grep -q 'id="update-state"'
}
# "Update now" on the status page.
ui_update_now() {
	local token where
	ui_login || { echo "cannot log in to the web UI"; return 1; }
	token=$(ui "$UI/admin/status" | csrf_of)
	where=$(ui -o "$OTA/update-now.html" -w '%{http_code} %{redirect_url}' --data-urlencode "csrf=$token" "$UI/admin/update/now")
	[[ "$where" == *" "*/admin/status ]] || { echo "update now answered '$where': $(head -c 300 "$OTA/update-now.html")"; return 1; }
}

# Wait (bounded) until image/qemu reports boot N; prints its line.
wait_boot() { # wait_boot N SECONDS
	wait_console "image/qemu: boot $1: " "$2"
}
# The running slot as "root-a /dev/vda4" (kernel argument and mounted root).
guest_slot() {
	guest_value slot "echo \$(grep -o 'relaybox.root=[a-z-]*' /proc/cmdline | cut -d= -f2) \$(grep ' / ' /proc/mounts | cut -d' ' -f1)" 20
}

ota_build() { # ota_build NAME BUILD [OVERLAY]
	local name=$1 no=$2 overlay=${3:-}
	mkdir -p "$OTA/$name"
	RELAYBOX_IMAGE_OUT=$OTA/$name RELAYBOX_BIN=$bin RELAYBOX_NO_XZ=1 RELAYBOX_BUILD=$no \
		RELAYBOX_UPDATE_PUBKEY=$OTA/keys/test.pub RELAYBOX_ROOT_OVERLAY=$overlay \
		image/build >"$OTA/build-$name.log" 2>&1
}
ota_bundle() { # ota_bundle NAME OUT [image/bundle options]
	local name=$1 out=$2
	shift 2
	RELAYBOX_IMAGE_OUT=$OTA/$name image/bundle --key "$OTA/keys/test.key" --out "$out" "$@" >>"$OTA/bundles.log" 2>&1
}

ota_prepare() {
	rm -rf "$OTA"
	mkdir -p "$OTA/keys" "$OTA/srv" "$OTA/disk" "$OTA/certs" "$OTA/overlay/usr/bin" "$OTA/overlay/usr/libexec/relaybox"
	minisign -G -W -p "$OTA/keys/test.pub" -s "$OTA/keys/test.key" >/dev/null || return 1
	minisign -G -W -p "$OTA/keys/other.pub" -s "$OTA/keys/other.key" >/dev/null || return 1
	make_test_ca "$OTA/certs" >"$OTA/certs.log" 2>&1 || { cat "$OTA/certs.log"; return 1; }
	# The failing image: the real daemon behind a wrapper that caps max_message_size far below
	# the health check's test message (the relay runs; its trial cannot pass OTA-5).
	cp "$bin" "$OTA/overlay/usr/libexec/relaybox/relaybox-real"
	cat >"$OTA/overlay/usr/bin/relaybox" <<'SH'
#!/bin/sh
# Test image (tests/image/ota.sh): a relay whose trial health check must fail.
real=/usr/libexec/relaybox/relaybox-real
if [ "$1" = serve ] && [ "$2" = --config ] && [ -f "$3" ]; then
	grep -v '^max_message_size' "$3" | awk '{ print } /^\[params\]/ { print "max_message_size = 200" }' >/tmp/relaybox-capped.ini
	exec "$real" serve --config /tmp/relaybox-capped.ini
fi
exec "$real" "$@"
SH
	chmod 0755 "$OTA/overlay/usr/bin/relaybox"
	local t0
	t0=$(date +%s)
	ota_build base 100 || { echo "base build failed: $OTA/build-base.log"; return 1; }
	ota_build good 200 || { echo "good build failed: $OTA/build-good.log"; return 1; }
	ota_build fail 300 "$OTA/overlay" || { echo "fail build failed: $OTA/build-fail.log"; return 1; }
	figure "update tests: three test images built in $(($(date +%s) - t0)) s"
	ota_bundle good "$OTA/srv/relaybox-200.tar" || return 1
	ota_bundle fail "$OTA/srv/relaybox-300.tar" || return 1
	# The bad ones (from the good build).
	RELAYBOX_IMAGE_OUT=$OTA/good image/bundle --key "$OTA/keys/other.key" --build 201 \
		--out "$OTA/disk/badsig.tar" >>"$OTA/bundles.log" 2>&1 || return 1
	ota_bundle good "$OTA/disk/other.tar" --build 202 --compatible relaybox-other || return 1
	ota_bundle good "$OTA/disk/older.tar" --build 50 || return 1
	cp "$OTA/srv/relaybox-200.tar" "$OTA/disk/good.tar"
	cp "$OTA/srv/relaybox-200.tar" "$OTA/disk/corrupt.tar"
	# One byte of the root image flipped after signing: the manifest's hash no longer matches.
	python3 - "$OTA/disk/corrupt.tar" <<'PY' || return 1
import sys, tarfile
path = sys.argv[1]
with tarfile.open(path) as t:
    m = t.getmember("root.squashfs")
    off = m.offset_data + m.size // 2
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xFF]))
PY
	local kb
	kb=$(du -sk "$OTA/disk" | cut -f1)
	mke2fs -q -t ext4 -L bundles -d "$OTA/disk" "$OTA/bundles.ext4" "$((kb * 12 / 10 + 8192))k" || return 1
	figure "update bundle (good, build 200): $(stat -c %s "$OTA/srv/relaybox-200.tar") bytes (uncompressed tar: boot-a, boot-b, root)"
}

# --- the session --------------------------------------------------------------------------------
ota_session() {
	local UOFF=$((OFFSET + 2000)) p1 port sd before after out t0 t1 w0 w1 s qemu
	QDIR=$(mktemp -d /tmp/relaybox-otatest.XXXXXX)
	sd=$QDIR/sd.img
	cp "$OTA/base/relaybox.img" "$sd"
	truncate -s +2G "$sd" # a card of its own size: image/qemu --card keep
	read -r p1 _ < <(part_range "$sd" 1)
	printf '[params]\r\nmail_domain = 127.0.0.1\r\nupdate_url = https://10.0.2.100/latest.json\r\nupdate_check_interval = 10m\r\nupdate_window =\r\nupdate_health_attempts = 3\r\nupdate_health_retry = 5s\r\ntls_extra_roots = /run/autoboot/update-ca.pem\r\nlog_stderr = true\r\n' >"$QDIR/chatmail.ini"
	MTOOLS_SKIP_CHECK=1 mcopy -i "$sd@@$p1" "$QDIR/chatmail.ini" ::chatmail.ini || return 1
	MTOOLS_SKIP_CHECK=1 mcopy -i "$sd@@$p1" "$OTA/certs/ca.pem" ::update-ca.pem || return 1

	offer 100 # not newer than the running build: nothing to do yet
	rm -f "$OTA/port"
	python3 tests/image/update_server.py --dir "$OTA/srv" --cert "$OTA/certs/server.pem" \
		--key "$OTA/certs/server.key" --port-file "$OTA/port" --log "$OTA/server.log" 2>"$OTA/server.err" &
	USRV=$!
	for _ in $(seq 1 50); do [ -s "$OTA/port" ] && break; sleep 0.1; done
	port=$(cat "$OTA/port" 2>/dev/null)
	[ -n "$port" ] || { fail ota-update-server "no port: $(cat "$OTA/server.err")"; return 1; }

	mkfifo "$QDIR/console.in"
	sleep 100000 >"$QDIR/console.in" &
	# shellcheck disable=SC2034 # stopped by cleanup_qemu (tests/image/run)
	HOLD=$!
	: >"$QDIR/console.log"
	UI=https://127.0.0.1:$((UOFF + 443))
	JAR=$QDIR/cookies
	# Boot 1's card writes are throttled to 4 MiB/s: the install of good.tar (about 48 MB of
	# slots) then takes more than 10 s, so the power cut below lands inside the write however
	# fast the host is (unthrottled it can finish in under 2 s, between two polls).
	setsid image/qemu --port-offset "$UOFF" --debug-shell --max-boots 8 --update-server "$port" \
		--slow-first-boot $((4 * 1024 * 1024)) --card keep \
		--disk "$OTA/bundles.ext4" --append relaybox.trial_timeout=420 "$sd" \
		<"$QDIR/console.in" >"$QDIR/console.log" 2>&1 &
	QPID=$!

	# --- boot 1: slot A, build 100 ---
	OFFSET=$UOFF # for wait_imap
	if ! wait_imap 180 >/dev/null; then
		fail ota-boot "the base image did not come up"
		return 1
	fi
	wait_console 'built-in shell|# ' 30 >/dev/null
	sleep 1
	if timeout 600 "$PY" tests/image/relay_checks.py before "$UOFF" "$QDIR/state" >"$OUT/ota-relay-before.log" 2>&1; then
		pass ota-relay-before-update
	else
		fail ota-relay-before-update "see $OUT/ota-relay-before.log"
	fi
	if ui_claim >"$OUT/ota-ui-claim.log" 2>&1; then pass ota-status-page-claimed; else fail ota-status-page-claimed "see $OUT/ota-ui-claim.log"; fi
	s=$(guest_value perms "stat -c '%U %a' /dev/vda3 /dev/vda5 /dev/vda2 /dev/vda4 /dev/watchdog | tr '\\n' ' '; grep -c ' /run/autoboot vfat rw' /proc/mounts" 20)
	# BOOT-4: the daemon opened the watchdog (QEMU's i6300esb) and pets it.
	local dog
	dog=$(guest_value dog 'cat /sys/class/watchdog/watchdog0/state' 20)
	if [ "$dog" = active ]; then pass ota-daemon-arms-watchdog; else fail ota-daemon-arms-watchdog "watchdog0 state '$dog'"; fi
	# BOOT-6: the health check after a normal start marks the running slot good and resets the
	# init's boot counter (it counted this boot: 1).
	local marks=
	for _ in $(seq 1 15); do
		# shellcheck disable=SC2016 # expanded by the guest's shell
		marks=$(guest_value marks 'echo $(ls /data/relaybox/update | grep -x good-a) $(cat /data/relaybox/update/boot-count)' 20)
		[ "$marks" = "good-a 0" ] && break
		sleep 4
	done
	if [ "$marks" = "good-a 0" ]; then pass ota-normal-boot-marks-slot-good; else fail ota-normal-boot-marks-slot-good "got '$marks'"; fi
	if [ "$s" = "relaybox 660 relaybox 660 root 600 root 600 relaybox 600 1" ] &&
		grep -q ' /run/autoboot vfat rw,.*sync' <<<"$(guest_value abmount "grep ' /run/autoboot ' /proc/mounts" 20)"; then
		pass ota-init-grants-inactive-slot-watchdog-autoboot
	else
		fail ota-init-grants-inactive-slot-watchdog-autoboot "got '$s'"
	fi

	# Bad bundles: refused with their reason before any slot is touched (OTA-2, OTA-3).
	guest 'mkdir -p /run/bundles && mount -t ext4 -o ro /dev/vdb /run/bundles'
	sleep 2
	guest sync
	sleep 1
	before=$(slot_b_hash "$sd")
	local bad expect_re
	for bad in badsig:'bad signature' corrupt:'hash mismatch' other:'not for this board' older:'older build'; do
		expect_re=${bad#*:}
		bad=${bad%%:*}
		# "STATUS LAST-LINE" of the install (its reason is on stderr).
		out=$(guest_value "install-$bad" "relaybox update install --pubkey /etc/relaybox/update.pub /run/bundles/$bad.tar >/tmp/install.out 2>&1; echo \$? \$(tail -n 1 /tmp/install.out)" 180)
		if [[ "$out" == [1-9]*"$expect_re"* ]]; then
			pass "ota-refuses-$bad-bundle"
		else
			fail "ota-refuses-$bad-bundle" "expected '$expect_re', got '$out'"
		fi
	done
	# The same refusal through the status page's upload form (multipart: csrf, then bundle).
	local token where
	ui_login >/dev/null 2>&1
	token=$(ui "$UI/admin/status" | csrf_of)
	t0=$(date +%s)
	where=$(ui -o "$OTA/upload.html" -w '%{http_code} %{redirect_url}' -F "csrf=$token" \
		-F "bundle=@$OTA/disk/badsig.tar;type=application/x-tar" "$UI/admin/update/upload")
	s=
	if [[ "$where" == *" "*/admin/status ]]; then
		figure "upload of a $(stat -c %s "$OTA/disk/badsig.tar") byte bundle through the status page: $(($(date +%s) - t0)) s"
		for _ in $(seq 1 60); do
			s=$(ui_status_field update-error)
			[[ "$s" == *"bad signature"* ]] && break
			sleep 2
		done
	else
		s="upload answered '$where': $(sed 's/<[^>]*>//g' "$OTA/upload.html" | tr -s ' \n' ' ' | head -c 300)"
	fi
	if [[ "$s" == *"bad signature"* ]]; then pass ota-upload-refuses-bad-signature; else fail ota-upload-refuses-bad-signature "update-error: '$s'"; fi
	guest sync
	sleep 1
	after=$(slot_b_hash "$sd")
	if [ -n "$before" ] && [ "$before" = "$after" ]; then pass ota-bad-bundles-leave-slots-alone; else fail ota-bad-bundles-leave-slots-alone "slot B hashes $before → $after"; fi

	# Power cut while the inactive slot is written: kill QEMU at the first writes to vda3/vda5.
	w0=$(guest_value writes0 "cat /sys/block/vda/vda3/stat /sys/block/vda/vda5/stat | awk '{ s += \$7 } END { print s }'" 20)
	guest "relaybox update install --pubkey /etc/relaybox/update.pub /run/bundles/good.tar >/dev/console 2>&1 &"
	local cut=
	for _ in $(seq 1 120); do
		w1=$(guest_value writes "cat /sys/block/vda/vda3/stat /sys/block/vda/vda5/stat | awk '{ s += \$7 } END { print s }'" 10)
		if [ -n "$w1" ] && [ -n "$w0" ] && [ "$w1" -gt "$((w0 + 2048))" ]; then
			qemu=$(pgrep -P "$QPID" qemu-system || true)
			if [ -n "$qemu" ]; then
				kill -KILL "$qemu"
				cut=$w1
			fi
			break
		fi
		grep -aq 'installed version' "$QDIR/console.log" && break
		sleep 0.3
	done
	if [ -n "$cut" ]; then
		pass ota-power-cut-during-write
		figure "power cut after $(((cut - w0) / 2048)) MiB written to the inactive slot"
	else
		fail ota-power-cut-during-write "no write to the inactive slot seen, or the install finished first"
	fi
	# The cut must have come before the install armed its trial (that would make boot 2 a
	# trial of slot B and every later step meaningless).
	if grep -aq 'installed version' "$QDIR/console.log"; then
		fail ota-power-cut-before-install-end "the install finished before the power cut"
	fi

	# --- boot 2: the old slot, no trial armed ---
	if wait_boot 2 60 | grep -q 'partition 2 (all)' && wait_imap 180 >/dev/null; then
		wait_console 'built-in shell|# ' 30 >/dev/null
		sleep 1
		s=$(guest_slot)
		if [ "$s" = "root-a /dev/vda4" ]; then pass ota-power-cut-boots-old-slot; else fail ota-power-cut-boots-old-slot "got '$s'"; fi
	else
		fail ota-power-cut-boots-old-slot "no boot of partition 2 after the power cut"
	fi

	# Update now (status page) to build 200 from the HTTPS server.
	offer 200
	t0=$(date +%s)
	if ui_update_now >"$OUT/ota-update-now.log" 2>&1; then pass ota-status-page-update-now; else fail ota-status-page-update-now "see $OUT/ota-update-now.log"; fi
	# Without the button the agent's own first check (2 min after start) finds it too.
	if wait_count 'relaybox-init: reboot requested by the daemon' 1 400 >/dev/null; then
		t1=$(date +%s)
		figure "update to build 200: check, download, verify and install $((t1 - t0)) s (QEMU TCG, through the slirp guestfwd)"
		if grep -q 'range=bytes=' "$OTA/server.log"; then figure "the bundle download was resumed (HTTP range requests in the server log)"; fi
	else
		fail ota-update-installed "no reboot request within 400 s; update state: $(ui_status_field update-state) / $(ui_status_field update-error)"
	fi

	# --- boot 3: trial of slot B, committed after its health check ---
	if wait_boot 3 90 | grep -q 'partition 3 (tryboot)'; then
		t0=$(date +%s)
		local committed=
		for _ in $(seq 1 200); do
			[ "$(autoboot_all "$sd")" = 3 ] && { committed=1; break; }
			sleep 2
		done
		if [ -n "$committed" ]; then
			pass ota-update-committed
			figure "trial boot to commit on the card (boot, health check with SMTP 465 → IMAP 993, autoboot.txt): $(($(date +%s) - t0)) s"
		else
			fail ota-update-committed "autoboot.txt still boots partition $(autoboot_all "$sd") after 400 s"
		fi
		wait_imap 120 >/dev/null
		sleep 1
		# The daemon's log lines of the trial (log_stderr = true: syslog) into the console log.
		guest "logread | grep -E 'update|health' | cut -c1-300 | tail -n 30"
		sleep 2
		s=$(guest_value release "cat /etc/relaybox/release.json" 20)
		if [[ "$s" == *'"build": 200'* ]] && [ "$(guest_slot)" = "root-b /dev/vda5" ]; then pass ota-new-slot-runs-build-200; else fail ota-new-slot-runs-build-200 "release '$s'"; fi
		s=$(ui_status_field update-state)
		if [[ "$s" == *200* ]]; then pass ota-status-page-shows-new-build; else fail ota-status-page-shows-new-build "update-state: '$s'"; fi
		if timeout 600 "$PY" tests/image/relay_checks.py after "$UOFF" "$QDIR/state" >"$OUT/ota-relay-after.log" 2>&1; then
			pass ota-data-kept-after-update
		else
			fail ota-data-kept-after-update "see $OUT/ota-relay-after.log"
		fi
		grep '^CHECK' "$OUT/ota-relay-after.log"
	else
		fail ota-update-committed "no trial boot of partition 3"
	fi

	# A failing image (build 300): its trial fails the health check and falls back.
	offer 300
	t0=$(date +%s)
	ui_update_now >>"$OUT/ota-update-now.log" 2>&1
	if wait_count 'relaybox-init: reboot requested by the daemon' 2 400 >/dev/null; then
		offer 200 # the old slot must not fetch build 300 again
		figure "update to build 300: check, download, verify and install $(($(date +%s) - t0)) s"
	else
		fail ota-failing-update-installed "no reboot request within 400 s; update state: $(ui_status_field update-state) / $(ui_status_field update-error)"
	fi
	if wait_boot 4 90 | grep -q 'partition 2 (tryboot)'; then
		t0=$(date +%s)
		if wait_boot 5 500 | grep -q 'partition 3 (all)'; then
			figure "failed trial to fallback boot: $(($(date +%s) - t0)) s (health checks: 3 attempts, 5 s apart, from chatmail.ini; default 5, 30 s)"
			# OTA-5: the daemon's health check ended the trial, not the init's deadline.
			if grep -aq 'relaybox-init: trial of slot a not committed' "$QDIR/console.log"; then
				fail ota-failing-trial-ends-on-health-check "the trial ended by the init's deadline, not by the daemon's health check"
			else
				pass ota-failing-trial-ends-on-health-check
			fi
			wait_imap 180 >/dev/null
			wait_console 'built-in shell|# ' 30 >/dev/null
			sleep 1
			s=$(guest_slot)
			if [ "$s" = "root-b /dev/vda5" ] && [ "$(autoboot_all "$sd")" = 3 ]; then pass ota-failing-update-rolled-back; else fail ota-failing-update-rolled-back "slot '$s', autoboot $(autoboot_all "$sd")"; fi
			s=$(ui_status_field update-error)
			if [[ "$s" == *"(build 300) failed its health check"* ]]; then
				pass ota-failure-shown-on-status-page
				echo "update-error: $s"
			else
				fail ota-failure-shown-on-status-page "update-error: '$s' (expected build 300's failed health check)"
			fi
		else
			fail ota-failing-update-rolled-back "no plain boot of partition 3 after the failed trial"
		fi
	else
		fail ota-failing-update-rolled-back "no trial boot of partition 2"
	fi

	# BOOT-6: three boots without a passing health check and the other slot marked good.
	# First let this boot's own health check pass (it writes good-b and a count of 0).
	for _ in $(seq 1 40); do
		# shellcheck disable=SC2016 # expanded by the guest's shell
		[ "$(guest_value goodb 'echo $(cat /data/relaybox/update/boot-count) $(ls /data/relaybox/update/good-b)' 10)" = "0 /data/relaybox/update/good-b" ] && break
		sleep 3
	done
	guest 'echo 3 >/data/relaybox/update/boot-count && touch /data/relaybox/update/good-a && sync && reboot'
	if wait_console 'relaybox-init: slot b failed 3 boots without a passing health check: switching to slot a' 120 >/dev/null &&
		wait_boot 7 120 | grep -q 'partition 2 (all)'; then
		wait_imap 180 >/dev/null
		sleep 1
		s=$(guest_slot)
		if [ "$s" = "root-a /dev/vda4" ]; then pass ota-boot-counter-switches-slot; else fail ota-boot-counter-switches-slot "got '$s'"; fi
	else
		fail ota-boot-counter-switches-slot "no switch to slot a"
	fi
	guest poweroff
	wait_console 'relaybox-init: poweroff now' 60 >/dev/null || true
	sleep 2
	return 0
}

if [ -n "$bin" ] && [ -x "$bin" ]; then
	trap ota_cleanup EXIT
	if ota_prepare >"$OUT/ota-prepare.log" 2>&1; then
		pass ota-test-images-and-bundles
		grep '^FIGURE' "$OUT/ota-prepare.log" | sed 's/^FIGURE //' | while read -r l; do echo "FIGURE $l"; done
		save_offset=$OFFSET
		ota_session
		OFFSET=$save_offset
		cp "$QDIR/console.log" "$OUT/console-ota.log" 2>/dev/null
		cp "$OTA/server.log" "$OUT/ota-server.log" 2>/dev/null
		ota_cleanup
		rm -rf "$QDIR"
		# Logs, keys and certificates stay; the images and bundles (~1 GB on disk) go.
		rm -rf "$OTA/base" "$OTA/good" "$OTA/fail" "$OTA/disk" "$OTA/srv" "$OTA/overlay" "$OTA/bundles.ext4"
	else
		fail ota-test-images-and-bundles "see $OUT/ota-prepare.log"
		tail -n 20 "$OUT/ota-prepare.log"
	fi
else
	fail ota-tests "no daemon binary"
fi
