#!/bin/bash
# Build the control protocol's libFuzzer target with clang and run it.
#
#   scripts/fuzz.sh [SECONDS]   build, then fuzz for SECONDS (default 60)
#
# Run it from a configured tree (it needs config.h from ./configure), or
# set BUILDDIR to one. The corpus and any crash files go to work/fuzz/ in
# the build tree. FUZZ_BUILD_ONLY=1 builds without running (make fuzz).
set -euo pipefail

readonly SECONDS_TO_RUN=${1:-60}
srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=${BUILDDIR:-$PWD}
CC=${CC:-clang}

[[ -f $builddir/config.h ]] ||
	{ echo "fuzz.sh: no config.h in $builddir; run ./configure first or set BUILDDIR" >&2; exit 1; }
command -v "$CC" >/dev/null ||
	{ echo "fuzz.sh: $CC not found; install clang and libclang-rt-dev" >&2; exit 1; }

workdir=$builddir/work/fuzz
mkdir -p "$workdir/corpus" "$workdir/crashes"
binary=$workdir/ctl_fuzz

sources=(util log mrerr flags cfg imapc imapc_mailbox imapc_message
	imapc_append imapc_tls ctl_proto ctl_net ctl_peer ctl_session
	ctl_commands ctl_server)
files=()
for s in "${sources[@]}"; do files+=("$srcdir/src/$s.c"); done

# shellcheck disable=SC2046 # pkg-config output is a list of flags
"$CC" -g -O1 -std=c11 -D_GNU_SOURCE -pthread \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-I"$builddir" -I"$srcdir/src" \
	$(pkg-config --cflags libetpan gnutls json-c) \
	"$srcdir/fuzz/ctl_fuzz.c" "${files[@]}" \
	$(pkg-config --libs libetpan gnutls json-c | sed -e 's/-specs=[^ ]*//g') \
	-liniparser -o "$binary"
echo "fuzz.sh: built $binary"
[[ ${FUZZ_BUILD_ONLY:-0} == 1 ]] && exit 0

# Seed inputs: one per command, so that the fuzzer starts from valid
# requests. The first byte picks the session kind (see ctl_fuzz.c).
seed() { printf '%b' "$2" >"$workdir/corpus/seed-$1"; }
seed capa '\x00CAPA\r\nVERSION 1\r\nQUIT\r\n'
seed auth '\x00AUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3\r\nMODE\r\n'
seed bind '\x02BIND m1\r\nINIT BEGIN m1\r\nINIT END result=ok messages=1 bytes=2 rejected=0\r\n'
seed status '\x02BIND m1\r\nSTATUS pending=1 last_error="a \\"b\\""\r\nINIT REQUEST\r\nSTATUS\r\n'
seed tls '\x01STARTTLS\r\nAUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3\r\n'

"$binary" -max_total_time="$SECONDS_TO_RUN" -max_len=8192 \
	-artifact_prefix="$workdir/crashes/" -print_final_stats=1 \
	"$workdir/corpus"
