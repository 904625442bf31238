#!/bin/bash
# The test command of guestfb: host tier, then guest tier (QEMU TCG guest, real
# /dev/udmabuf). Idempotent; the second run only builds what changed.
#
#  1. scripts/setup-host.sh (packages; returns at once once done)
#  2. reserves a few 2 MiB hugepages on the host for the host tier's hugetlb tests
#  3. scripts/guest/setup.sh (guest kernel, modules, initramfs under target/guest/)
#  4. host tier:  unit tests, tests/*.rs except guest_*, doctests
#  5. guest tier: tests/guest_*.rs, each binary in one fresh guest, single-threaded
#
# Writes target/test-report.txt (host_passed=N, guest_passed=M, ...). Fails when any
# test fails, when a guest test skips, or when the guest tier passed nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "test: cargo not found (install rustup)" >&2; exit 1; }

REPORT=target/test-report.txt
LOGS=target/test-logs
mkdir -p "$LOGS"
rm -f "$REPORT"

# Sums "test result: ok. N passed" / "FAILED. N passed" lines of a libtest log.
passed_in() {
    { grep -E '^test result: ' "$1" || true; } \
        | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{ s += $1 } END { print s + 0 }'
}

# --- 1. host packages -----------------------------------------------------------------
scripts/setup-host.sh

# --- 2. host hugepages ------------------------------------------------------------------
HOST_HUGEPAGES=4
pool=/sys/kernel/mm/hugepages/hugepages-2048kB
free=$(cat "$pool/free_hugepages" 2>/dev/null || echo 0)
if ((free < HOST_HUGEPAGES)); then
    total=$(cat "$pool/nr_hugepages" 2>/dev/null || echo 0)
    want=$((total + HOST_HUGEPAGES - free))
    if [[ $(id -u) == 0 ]] && echo "$want" >/proc/sys/vm/nr_hugepages 2>/dev/null \
        && (($(cat "$pool/free_hugepages") >= HOST_HUGEPAGES)); then
        echo "test: reserved 2 MiB hugepages on the host (vm.nr_hugepages $total -> $want) for the host tier"
    else
        echo "test: WARNING: could not reserve $HOST_HUGEPAGES free 2 MiB hugepages on the host" \
            "(free: $free); the host hugetlb test will fail"
    fi
else
    echo "test: $free free 2 MiB hugepages on the host"
fi

# --- 3. guest kernel and initramfs --------------------------------------------------------
scripts/guest/setup.sh
# The nested real guest (tests/guest_nested.rs): a virtio-gpu initramfs for that kernel.
scripts/guest/nested-setup.sh

# --- lint: the code standard is part of the suite ------------------------------------------
lint_rc=0
echo "test: lint: cargo fmt --check, cargo clippy --all-targets --all-features -D warnings," \
    "the fuzz target builds"
{
    cargo fmt --check && cargo clippy --all-targets --all-features -- -D warnings \
        && cargo check --quiet --manifest-path fuzz/Cargo.toml
} 2>&1 \
    | tail -n 40 || lint_rc=$?
if ((lint_rc != 0)); then
    echo "test: FAIL: lint" >&2
fi

# --- fuzz smoke: every fuzz target built and run on random inputs ------------------------
# (Uninstrumented: a smoke that the targets build and hold up, not a soak; the soak is
# `cargo fuzz run`, see the README's Fuzzing section.)
fuzz_rc=0
FUZZ_RUNS=${GUESTFB_FUZZ_RUNS:-20000}
echo "test: fuzz smoke: each target on $FUZZ_RUNS random inputs"
{
    cargo build --quiet --manifest-path fuzz/Cargo.toml --bins \
        && for target in fuzz/fuzz_targets/*.rs; do
            name=$(basename "$target" .rs)
            fuzz/target/debug/"$name" -runs="$FUZZ_RUNS" -seed=1 2>&1 | tail -n 1 | sed "s/^/$name: /"
            ((${PIPESTATUS[0]} == 0)) || exit 1
        done
} 2>&1 | tail -n 20 || fuzz_rc=$?
if ((fuzz_rc != 0)); then
    echo "test: FAIL: fuzz smoke" >&2
fi

# --- 4. host tier ---------------------------------------------------------------------------
host_tests=()
guest_tests=()
for file in tests/*.rs; do
    name=$(basename "$file" .rs)
    case $name in
        guest_*) guest_tests+=(--test "$name") ;;
        *) host_tests+=(--test "$name") ;;
    esac
done

status=0
start=$SECONDS
echo "test: host tier: unit tests, $((${#host_tests[@]} / 2)) integration test binaries, doctests"
host_rc=0
{
    # Examples first: host tests run the viewer binary.
    cargo build --all-features --examples 2>&1 \
        && cargo test --all-features --lib "${host_tests[@]}" 2>&1 \
        && cargo test --all-features --doc 2>&1
} | tee "$LOGS/host.log" || host_rc=$?
host_passed=$(passed_in "$LOGS/host.log")
host_seconds=$((SECONDS - start))
echo "test: host tier: $host_passed passed, exit $host_rc, ${host_seconds} s"
((host_rc == 0)) || status=1
((lint_rc == 0)) || status=1
((fuzz_rc == 0)) || status=1

# --- 5. guest tier -----------------------------------------------------------------------
start=$SECONDS
guest_rc=0
guest_passed=0
guest_skips=0
if ((${#guest_tests[@]} == 0)); then
    echo "test: guest tier: no tests/guest_*.rs" >&2
    status=1
else
    echo "test: guest tier: $((${#guest_tests[@]} / 2)) binaries, one QEMU guest each"
    # guest_nested boots two nested QEMUs (TCG in TCG: 7 to 17 minutes seen) inside its
    # guest, then runs nine checks on them: up to 40 minutes for that one binary.
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$ROOT/scripts/guest/run.sh GUESTFB_REQUIRE_GUEST=1 \
        GUESTFB_GUEST_TIMEOUT=${GUESTFB_GUEST_TIMEOUT:-2400} \
        cargo test --all-features "${guest_tests[@]}" -- --test-threads=1 2>&1 \
        | tee "$LOGS/guest.log" || guest_rc=$?
    guest_passed=$(passed_in "$LOGS/guest.log")
    guest_skips=$({ grep -E '^SKIP ' "$LOGS/guest.log" || true; } | wc -l)
fi
guest_seconds=$((SECONDS - start))
echo "test: guest tier: $guest_passed passed, $guest_skips skipped, exit $guest_rc, ${guest_seconds} s"
((guest_rc == 0)) || status=1
if ((guest_skips > 0)); then
    echo "test: FAIL: guest tier tests skipped (they did not run in the guest)" >&2
    status=1
fi
if ((guest_passed == 0)); then
    echo "test: FAIL: the guest tier passed no tests" >&2
    status=1
fi

cat >"$REPORT" <<EOF
lint_exit=$lint_rc
fuzz_exit=$fuzz_rc
host_passed=$host_passed
host_exit=$host_rc
host_seconds=$host_seconds
guest_passed=$guest_passed
guest_skipped=$guest_skips
guest_exit=$guest_rc
guest_seconds=$guest_seconds
status=$([[ $status == 0 ]] && echo ok || echo FAILED)
EOF
echo "test: report in $REPORT:"
sed 's/^/  /' "$REPORT"
exit "$status"
