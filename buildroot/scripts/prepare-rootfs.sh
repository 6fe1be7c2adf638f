#!/usr/bin/env bash
# prepare-rootfs.sh TARGET_DIR — finish a Relaybox root filesystem tree before it is packed
# into the read-only squashfs. Shared by the Buildroot post-build script and image/build.
# Creates the mount points the init uses (LW-1/LW-2: nothing on the root is written at run
# time), replaces Buildroot's /var/log and /var/run symlinks with tmpfs mount points, and
# records the image version in /etc/os-release.
set -euo pipefail

target=${1:?usage: prepare-rootfs.sh TARGET_DIR}
[ -d "$target" ] || { echo "prepare-rootfs.sh: $target is not a directory" >&2; exit 1; }

for d in proc sys dev tmp run data var/lib/relaybox var/log; do
	if [ -L "$target/$d" ]; then
		rm -f "$target/$d"
	fi
	mkdir -p "$target/$d"
done
chmod 1777 "$target/tmp"
# /var/run and /var/tmp point into tmpfs.
rm -rf "$target/var/run" "$target/var/tmp"
ln -s ../run "$target/var/run"
ln -s ../tmp "$target/var/tmp"
# resolv.conf is written by the DHCP hook into /run.
rm -f "$target/etc/resolv.conf"
ln -s ../run/resolv.conf "$target/etc/resolv.conf"
# Buildroot's SysV/busybox init leftovers are not used: our /sbin/init is PID 1.
rm -f "$target/etc/inittab"

version=${RELAYBOX_VERSION:-unknown}
cat >"$target/etc/os-release" <<OS
NAME=Relaybox
ID=relaybox
PRETTY_NAME="Relaybox $version"
VERSION_ID=$version
OS
