# shellcheck shell=bash
# image/need.sh — sourced by the image commands (image/build, image/qemu, image/bundle):
# install the host tools they need with apt-get, the same way everywhere (idempotent).
#
#   need_tools NAME COMMAND:PACKAGE...
#
# Installs the package of every COMMAND that is not on PATH (as root, else through sudo),
# saying so on stderr as "NAME: installing …"; returns non-zero when apt-get fails.
need_tools() {
	local who=$1 t
	local missing=()
	shift
	for t in "$@"; do
		command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	echo "$who: installing ${missing[*]}" >&2
	"${sudo[@]}" apt-get update -q >&2 &&
		DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
			"${missing[@]}" >&2
}
