#!/usr/bin/env bash
# Buildroot post-build script: $1 = TARGET_DIR, $2 = board directory (BR2_ROOTFS_POST_SCRIPT_ARGS).
# The image version comes from RELAYBOX_IMAGE_VERSION (set by buildroot/build). It cannot be
# RELAYBOX_VERSION: that is the relaybox package's own make variable ("local"), and make
# hands its value, not the caller's, to the scripts it runs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RELAYBOX_VERSION=${RELAYBOX_IMAGE_VERSION:-unknown} "$here/prepare-rootfs.sh" "$1"
