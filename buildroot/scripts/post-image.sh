#!/usr/bin/env bash
# Buildroot post-image script: $1 = BINARIES_DIR, $2 = board directory
# (BR2_ROOTFS_POST_SCRIPT_ARGS). Collects the kernel, DTBs and firmware of the Raspberry Pi
# build into one boot-slot directory and assembles BINARIES_DIR/relaybox.img with the shared
# genimage layout (scripts/make-sdimage.sh), then compresses it with a checksum.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${1:?BINARIES_DIR}
board=${2:?board directory}
# shellcheck source=/dev/null
. "$board/meta"

bootfiles=$bin/relaybox-bootfiles
rm -rf "$bootfiles"
mkdir -p "$bootfiles"
cp "$bin/Image" "$bootfiles/Image"
for dtb in $RELAYBOX_DTBS; do
	cp "$bin/$(basename "$dtb")" "$bootfiles/"
done
for f in $RELAYBOX_FIRMWARE; do
	cp "$bin/rpi-firmware/$f" "$bootfiles/"
done
if [ -d "$bin/rpi-firmware/overlays" ]; then
	cp -r "$bin/rpi-firmware/overlays" "$bootfiles/"
fi
cp "$board/config.txt" "$board/cmdline.txt" "$bootfiles/"

PATH=$HOST_DIR/bin:$HOST_DIR/sbin:$PATH "$here/make-sdimage.sh" "$board" "$bootfiles" \
	"$bin/rootfs.squashfs" "$bin"
xz -T0 -6 -k -f "$bin/relaybox.img"
(cd "$bin" && sha256sum relaybox.img.xz >relaybox.img.xz.sha256)
