#!/bin/bash
# Test the release artefacts: "make distcheck", then the Debian package
# built from the distribution tarball (dpkg-buildpackage, lintian),
# installed on this machine and checked: versions, man pages, the
# systemd unit, the example config, the directories. Prints one
# "PASS: name" or "FAIL: name" line per check, and the seconds each
# stage took. Needs root and a configured tree (scripts/ci.sh makes
# one); apt-get contacts only the Debian mirror.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

pass() { echo "PASS: package $1"; }
fail() { echo "FAIL: package $1"; }
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}

version=$(sed -n 's/^AC_INIT(\[mailrepl\], \[\([^]]*\)\].*/\1/p' configure.ac)
work=$(mktemp -d /tmp/mailrepl-package.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Tools to build and inspect the package; devscripts is not needed.
tools=(dpkg-dev debhelper lintian fakeroot man-db python3)
missing=()
for package in "${tools[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null |
		grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "package-test: installing ${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null || {
		fail "build tools installed (${missing[*]})"
		exit 1
	}
fi

# make distcheck: the tarball builds, passes make check, installs and
# uninstalls cleanly out of tree.
start=$SECONDS
if make distcheck >"$work/distcheck.log" 2>&1; then
	pass "make distcheck"
else
	tail -40 "$work/distcheck.log"
	fail "make distcheck"
	exit 1
fi
echo "package-test: make distcheck took $((SECONDS - start)) s"

# The package is built from the tarball, so it needs nothing that only
# the git tree holds.
start=$SECONDS
tar -xzf "mailrepl-$version.tar.gz" -C "$work"
if (cd "$work/mailrepl-$version" && dpkg-buildpackage -us -uc -b) \
	>"$work/build.log" 2>&1; then
	pass "dpkg-buildpackage"
else
	tail -40 "$work/build.log"
	fail "dpkg-buildpackage"
	exit 1
fi
echo "package-test: dpkg-buildpackage took $((SECONDS - start)) s"
deb=$(ls "$work"/mailrepl_"$version"_*.deb)
echo "package-test: built $(basename "$deb")"

# lintian: warnings are printed, errors fail.
start=$SECONDS
lintian --fail-on none "$work"/mailrepl_"$version"_*.changes \
	>"$work/lintian.log" 2>&1
cat "$work/lintian.log"
if grep -q '^E: ' "$work/lintian.log"; then
	fail "lintian reports no errors"
else
	pass "lintian reports no errors"
fi
echo "package-test: lintian took $((SECONDS - start)) s"

# Install. A temporary policy-rc.d keeps a running systemd from starting
# the agent; the unit is only verified here.
was_installed=no
dpkg-query -W -f='${Status}' mailrepl 2>/dev/null |
	grep -q 'install ok installed' && was_installed=yes
had_dirs=no
[ -e /var/lib/mailrepl ] || [ -e /var/log/mailrepl ] && had_dirs=yes
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"; rm -rf "$work"' EXIT
fi
if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"$deb" >"$work/install.log" 2>&1; then
	pass "installs with apt-get"
else
	cat "$work/install.log"
	fail "installs with apt-get"
	exit 1
fi

check "mailrepl --version prints $version" \
	test "$(mailrepl --version)" = "mailrepl $version"
check "mailrepld --version prints $version" \
	test "$(mailrepld --version)" = "mailrepld $version"

# man -l with warnings on, as lintian runs it: any output on stderr is
# a rendering problem.
for page in /usr/share/man/man1/mailrepl.1.gz \
	/usr/share/man/man8/mailrepld.8.gz \
	/usr/share/man/man5/mailrepl.conf.5.gz; do
	if [ ! -f "$page" ]; then
		fail "man page $page installed"
		continue
	fi
	warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
		man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
	if [ -z "$warnings" ] && man -l "$page" 2>/dev/null | grep -q NAME; then
		pass "man -l $(basename "$page" .gz)"
	else
		echo "$warnings"
		fail "man -l $(basename "$page" .gz)"
	fi
done

unit=/lib/systemd/system/mailrepld.service
check "unit installed in $(dirname "$unit")" test -f "$unit"
if command -v systemd-analyze >/dev/null 2>&1; then
	if out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$out" ]; then
		pass "systemd-analyze verify mailrepld.service"
	else
		echo "$out"
		fail "systemd-analyze verify mailrepld.service"
	fi
else
	echo "package-test: systemd-analyze is not installed; the unit" \
		"was NOT verified"
fi

conf=/etc/mailrepl/mailrepl.conf
check "example config has mode 0600" \
	test "$(stat -c %a "$conf" 2>/dev/null)" = 600
status=$(mailrepl -c "$conf" status 2>&1)
rc=$?
echo "$status"
check "mailrepl status loads the example config (exit $rc)" test "$rc" -eq 0
check "logrotate rule installed" test -f /etc/logrotate.d/mailrepl
if command -v logrotate >/dev/null 2>&1; then
	check "logrotate accepts the rule" \
		logrotate -d /etc/logrotate.d/mailrepl >/dev/null 2>&1
fi
check "cron example installed" test -f /etc/cron.d/mailrepl
check "state directory exists" test -d /var/lib/mailrepl
check "log directory exists" test -d /var/log/mailrepl

# Leave the machine as it was: purge only what this test installed and
# created, so state and logs that were there before are kept.
if [ "$was_installed" = no ]; then
	if [ "$had_dirs" = no ]; then
		action=purge
	else
		action=remove
	fi
	if DEBIAN_FRONTEND=noninteractive apt-get "$action" -y -qq mailrepl \
		>"$work/remove.log" 2>&1; then
		pass "apt-get $action mailrepl"
	else
		cat "$work/remove.log"
		fail "apt-get $action mailrepl"
	fi
	if [ "$action" = purge ]; then
		check "purge removes the state and log directories" \
			test ! -e /var/lib/mailrepl -a ! -e /var/log/mailrepl
	fi
fi
