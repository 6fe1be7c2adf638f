#!/usr/bin/env bash
# Buildroot post-build script: $1 = TARGET_DIR, $2 = board directory (BR2_ROOTFS_POST_SCRIPT_ARGS).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/prepare-rootfs.sh" "$1"
