#!/bin/bash
# A long viewer run on the demo guest with its memory and fds sampled: the leak check
# of the whole viewer (guestfb's test suite checks the library's own cycles).
#
#   scripts/soak-viewer.sh [SECONDS] [viewer options...]     (default 600 s, --gl auto)
#
# Starts a headless weston, runs the release viewer on it for SECONDS, samples the
# viewer's RSS and open fds every 10 s, and fails when either grows after the first
# minute's warm-up (RSS by more than 1 MiB, fds at all). Prints one line per sample and
# a summary; writes target/soak/samples.tsv.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if ! command -v cargo >/dev/null 2>&1 && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
fi
SECONDS_WANTED=${1:-600}
shift || true

scripts/setup-host.sh
cargo build --release --example viewer
OUT=$ROOT/target/soak
mkdir -p "$OUT"

eval "$(scripts/weston-headless.sh start --width 1024 --height 768 --kiosk --name guestfb-soak)"
trap 'scripts/weston-headless.sh stop "$XDG_RUNTIME_DIR" 2>/dev/null || true' EXIT
target/release/examples/viewer --size 1024x768 "$@" >"$OUT/viewer.log" 2>&1 &
viewer=$!

sample() {
    local rss fds
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$viewer/status")
    fds=$(find "/proc/$viewer/fd" -mindepth 1 -maxdepth 1 | wc -l)
    printf '%s\t%s\t%s\n' "$1" "$rss" "$fds"
}

printf 'seconds\trss_kib\tfds\n' >"$OUT/samples.tsv"
for ((t = 0; t <= SECONDS_WANTED; t += 10)); do
    kill -0 "$viewer" 2>/dev/null || {
        cat "$OUT/viewer.log" >&2
        echo "soak: the viewer exited after $t s" >&2
        exit 1
    }
    sample "$t" | tee -a "$OUT/samples.tsv"
    ((t == SECONDS_WANTED)) || sleep 10
done
kill -INT "$viewer"
wait "$viewer" || true
grep -E '^viewer: (presenting|[0-9]+ frames)' "$OUT/viewer.log" || true

# After the first minute nothing may grow.
awk -F'\t' 'NR > 1 && $1 >= 60 {
        if (!seen) { rss0 = $2; fds0 = $3; seen = 1 }
        if ($2 > rss_max) rss_max = $2
        if ($3 > fds_max) fds_max = $3
        last_rss = $2; last_fds = $3
    }
    END {
        printf "soak: from 60 s on: RSS %d -> %d KiB (max %d), fds %d -> %d (max %d)\n",
            rss0, last_rss, rss_max, fds0, last_fds, fds_max
        if (rss_max > rss0 + 1024 || fds_max > fds0) { print "soak: FAIL: growth"; exit 1 }
        print "soak: ok, nothing grew"
    }' "$OUT/samples.tsv"
