#!/bin/bash
# Install the Debian packages that building, testing and the demo need.
# Runs apt-get only for packages that are missing, so a second run is
# quick. Needs root.
set -euo pipefail

packages=(
	autoconf automake make gcc pkg-config
	libetpan-dev libiniparser-dev check libsqlite3-dev libgnutls28-dev
	libjson-c-dev libcurl4-gnutls-dev libsasl2-modules
	dovecot-core dovecot-imapd openssl python3 procps ca-certificates
	iproute2
)
# The corpus comes from the npm registry; any Node.js with npm will do.
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
		grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}; run as root" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive

# A temporary policy-rc.d keeps a newly installed dovecot-core from
# starting the system Dovecot on *:143 and *:993: the tests and the demo
# run their own. An existing policy-rc.d is left as it is.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
