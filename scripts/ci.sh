#!/bin/bash
# The test command: install what is missing, build, run the Check unit
# and Dovecot tests, then the end-to-end tests (on the SpamAssassin
# corpus, and of "mailrepl status" with both agents), and the release
# artefacts (distcheck, the Debian package). Prints Check's
# summary lines and a final "N passed, N failed" line; exits non-zero on
# any failure.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1

bash scripts/install-deps.sh || exit 1
if [ ! -f Makefile ]; then
	autoreconf -fi >/dev/null 2>&1 && ./configure -q || {
		echo "ci: configure failed" >&2
		exit 1
	}
fi
make -j2 >build.log 2>&1 || {
	tail -40 build.log
	echo "ci: build failed (see build.log)" >&2
	exit 1
}

passed=0
failed=0

# Unit and Dovecot tests (Check); each prints its own summary line.
make -j2 check >check.log 2>&1
check_rc=$?
for log in tests/check_*.log; do
	[ -f "$log" ] || continue
	summary=$(grep -E '^[0-9]+%: Checks: ' "$log" | tail -1)
	if [ -z "$summary" ]; then
		echo "${log%.log}: no Check summary (crashed?)"
		tail -20 "$log"
		failed=$((failed + 1))
		continue
	fi
	echo "${log%.log}: $summary"
	checks=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<<"$summary")
	bad=$(sed -E 's/.*Failures: ([0-9]+), Errors: ([0-9]+).*/\1+\2/' \
		<<<"$summary")
	bad=$((bad))
	passed=$((passed + checks - bad))
	failed=$((failed + bad))
	[ "$bad" -eq 0 ] || grep -E ':[EF]:' "$log" | head -20
done

# tests/manpages.py prints PASS and FAIL lines instead of a Check summary.
if [ -f tests/manpages.log ]; then
	grep -E '^(PASS|FAIL): ' tests/manpages.log
	passed=$((passed + $(grep -c '^PASS: ' tests/manpages.log)))
	failed=$((failed + $(grep -c '^FAIL: ' tests/manpages.log)))
else
	echo "FAIL: tests/manpages.py did not run"
	failed=$((failed + 1))
fi

if [ "$check_rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
	echo "ci: make check failed without a failing Check test:"
	tail -30 check.log
	failed=$((failed + 1))
fi

# End-to-end tests: "mailrepl init" on the corpus (run.sh), the agent's
# running replication (live.sh), status with both agents (status.sh),
# then distcheck and the Debian package (package-test.sh). Each test
# prints "PASS: name" or "FAIL: name".
for script in tests/e2e/run.sh tests/e2e/live.sh tests/e2e/status.sh \
	scripts/package-test.sh; do
	e2e_out=$(mktemp)
	bash "$script" 2>&1 | tee "$e2e_out"
	e2e_pass=$(grep -c '^PASS: ' "$e2e_out")
	e2e_fail=$(grep -c '^FAIL: ' "$e2e_out")
	if [ "$e2e_pass" -eq 0 ] && [ "$e2e_fail" -eq 0 ]; then
		echo "FAIL: e2e $script ran no test"
		e2e_fail=1
	fi
	passed=$((passed + e2e_pass))
	failed=$((failed + e2e_fail))
	rm -f "$e2e_out"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
