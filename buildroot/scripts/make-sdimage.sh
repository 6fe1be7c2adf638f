#!/usr/bin/env bash
# make-sdimage.sh BOARD_DIR BOOTFILES_DIR ROOTFS_SQUASHFS OUT_DIR — assemble the Relaybox
# SD-card image with genimage and board/common/genimage.cfg. Shared by the Buildroot
# post-image script and image/build, so both produce the same partition layout.
#
# BOOTFILES_DIR holds what goes into each boot slot (kernel, DTBs, firmware, overlays,
# optionally config.txt/cmdline.txt; otherwise the board's are used). Slot B gets the same
# files with cmdline.txt pointing at root-b. Output: OUT_DIR/relaybox.img.
set -euo pipefail

board=${1:?usage: make-sdimage.sh BOARD_DIR BOOTFILES_DIR ROOTFS_SQUASHFS OUT_DIR}
bootfiles=${2:?missing BOOTFILES_DIR}
rootfs=${3:?missing ROOTFS_SQUASHFS}
out=${4:?missing OUT_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
common=$here/../board/common

# shellcheck source=/dev/null
. "$board/meta"
export RELAYBOX_PARTITION_TABLE RELAYBOX_BOOT_SIZE RELAYBOX_ROOT_SIZE RELAYBOX_DATA_SIZE

work=$(mktemp -d "${TMPDIR:-/tmp}/relaybox-sdimage.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/autoboot" "$stage/boot-a" "$stage/boot-b" "$stage/data" "$work/input" "$out"

# Partition 1: autoboot.txt (BOOT-1) and a note for headless setup.
cp "$common/autoboot.txt" "$stage/autoboot/autoboot.txt"
cat >"$stage/autoboot/README.txt" <<'TXT'
Relaybox: put your chatmail.ini here before the first boot (see chatmail.ini.example);
it is copied once to the data partition. autoboot.txt selects the boot slot: do not edit.
TXT
cat >"$stage/autoboot/chatmail.ini.example" <<'TXT'
[params]
# Your domain, or the device's IP address for a test setup without DNS.
mail_domain = chat.example.org
TXT

cp -r "$bootfiles"/. "$stage/boot-a/"
[ -f "$stage/boot-a/config.txt" ] || cp "$board/config.txt" "$stage/boot-a/config.txt"
[ -f "$stage/boot-a/cmdline.txt" ] || cp "$board/cmdline.txt" "$stage/boot-a/cmdline.txt"
cp -r "$stage/boot-a"/. "$stage/boot-b/"
sed -e 's/52424f58-0000-4000-8000-000000000004/52424f58-0000-4000-8000-000000000005/' \
	-e 's/relaybox\.root=root-a/relaybox.root=root-b/' \
	"$stage/boot-a/cmdline.txt" >"$stage/boot-b/cmdline.txt"
grep -q 'relaybox.root=root-b' "$stage/boot-b/cmdline.txt" || {
	echo "make-sdimage.sh: cmdline.txt does not name relaybox.root=root-a" >&2
	exit 1
}

# Pi 3: the boot ROM reads bootcode.bin from the first FAT partition of an MBR, so the
# image gets a hybrid MBR with partition 1 in it (untested on hardware).
cfg=$common/genimage.cfg
if [ "$RELAYBOX_PARTITION_TABLE" = hybrid ]; then
	[ -f "$stage/boot-a/bootcode.bin" ] && cp "$stage/boot-a/bootcode.bin" "$stage/autoboot/"
	sed '/image = "autoboot.vfat"/a\		partition-type = 0xC' "$cfg" >"$work/genimage.cfg"
	cfg=$work/genimage.cfg
fi

cp "$rootfs" "$work/input/rootfs.squashfs"
rm -f "$out/relaybox.img"
genimage --config "$cfg" --rootpath "$stage" --inputpath "$work/input" \
	--outputpath "$work/output" --tmppath "$work/tmp" >"$work/genimage.log" 2>&1 || {
	cat "$work/genimage.log" >&2
	exit 1
}
mv "$work/output/relaybox.img" "$out/relaybox.img"
echo "make-sdimage.sh: wrote $out/relaybox.img"
