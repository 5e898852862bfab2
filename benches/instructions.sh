#!/usr/bin/env bash
# Instruction counts of the hot paths: builds benches/instructions.rs (bench profile, default
# features: mimalloc), runs each mode under callgrind counting only its measured_* function (and
# what it calls), and prints a Markdown table. For a given build (toolchain, Cargo.lock, flags)
# the counts are the same in every run and on every x86-64 machine with the same CPU features
# (glibc picks its memcpy/memcmp by CPUID, the store its kernels). Compare two builds by running
# this script on each.
#
# Usage: benches/instructions.sh [--keep] [mode...]
#   modes: decode append-existing append-new query restore (default: all)
#   --keep: keep the callgrind output files (for callgrind_annotate) and print where they are.
# Needs valgrind (callgrind) and cc. Runs from any directory; exits non-zero on any failure.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

all_modes=(decode append-existing append-new query restore)
keep=0
modes=()
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        decode | append-existing | append-new | query | restore) modes+=("$arg") ;;
        *)
            echo "unknown argument: $arg (modes: ${all_modes[*]}; flag: --keep)" >&2
            exit 2
            ;;
    esac
done
if [ "${#modes[@]}" -eq 0 ]; then
    modes=("${all_modes[@]}")
fi

command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 1; }
command -v cc > /dev/null || { echo "a C compiler (cc) is needed for the getrandom shim" >&2; exit 1; }

work_dir="$(mktemp -d -t otelscale-instructions.XXXXXX)"
if [ "$keep" -eq 1 ]; then
    echo "callgrind files in $work_dir" >&2
else
    trap 'rm -rf "$work_dir"' EXIT
fi

# What would otherwise differ between two runs of the same binary, and what fixes it:
# - std's HashMap keys come from getrandom(2), so where a new key lands in a small table (the
#   store's postings, metric name -> series) and how long its probe takes change by up to about
#   a hundred instructions a run (seen in append-new). This shim, preloaded into the measured
#   process only, makes getrandom return the same bytes every time (std calls it through libc,
#   so the preload replaces it).
# - mimalloc purges freed memory once a delay (1 s) has passed on the clock; under valgrind
#   that happens at a different point of each run (tens of thousands of instructions).
#   MIMALLOC_PURGE_DELAY=-1 turns the purge off.
cat > "$work_dir/fixed_getrandom.c" << 'SHIM'
/* getrandom(2) returning a fixed stream (a 64-bit LCG), for instruction counts only. */
#include <stddef.h>
#include <sys/types.h>

ssize_t getrandom(void *buffer, size_t length, unsigned int flags) {
    static unsigned long long state = 0x9E3779B97F4A7C15ull;
    unsigned char *bytes = buffer;
    (void)flags;
    for (size_t i = 0; i < length; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        bytes[i] = (unsigned char)(state >> 56);
    }
    return (ssize_t)length;
}
SHIM
cc -O2 -shared -fPIC -o "$work_dir/fixed_getrandom.so" "$work_dir/fixed_getrandom.c"

echo "building benches/instructions.rs (bench profile)..." >&2
cargo bench --bench instructions --no-run --message-format=json > "$work_dir/cargo.json"
binary="$(grep '"target":{[^}]*"name":"instructions"' "$work_dir/cargo.json" \
    | grep -o '"executable":"[^"]*"' | tail -n 1 | sed 's/^"executable":"//; s/"$//')"
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "could not find the instructions bench binary in cargo's output" >&2
    exit 1
fi
echo "binary: $binary" >&2

# Thousands separators in the integer part, independent of the locale.
group_digits() {
    local integer="${1%%.*}" fraction=""
    if [[ "$1" == *.* ]]; then
        fraction=".${1#*.}"
    fi
    echo "$(echo "$integer" | sed -e ':again' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 't again')$fraction"
}

rows=()
for mode in "${modes[@]}"; do
    function_name="measured_${mode//-/_}"
    out_file="$work_dir/callgrind.$mode.out"
    started_s=$SECONDS
    # A fixed, minimal environment: no OTELSCALE_* variable can change the limits, and the
    # initial stack (which holds the environment) is laid out the same for every caller.
    if ! env -i PATH=/usr/bin:/bin MIMALLOC_PURGE_DELAY=-1 LD_PRELOAD="$work_dir/fixed_getrandom.so" \
        valgrind --tool=callgrind --collect-atstart=no \
        --toggle-collect="instructions::$function_name" --callgrind-out-file="$out_file" \
        "$binary" "$mode" > "$work_dir/$mode.stdout" 2> "$work_dir/$mode.stderr"; then
        echo "mode $mode failed under valgrind; its output:" >&2
        cat "$work_dir/$mode.stdout" "$work_dir/$mode.stderr" >&2
        exit 1
    fi
    echo "$mode: $((SECONDS - started_s)) s under valgrind" >&2
    result_line="$(grep "^mode=$mode " "$work_dir/$mode.stdout" || true)"
    if [ "$(grep -c '^mode=' "$work_dir/$mode.stdout")" -ne 1 ] || [ -z "$result_line" ]; then
        echo "mode $mode: expected one 'mode=$mode units=... unit=...' line, got:" >&2
        cat "$work_dir/$mode.stdout" >&2
        exit 1
    fi
    units="$(echo "$result_line" | sed -n 's/.* units=\([0-9]*\) .*/\1/p')"
    unit="$(echo "$result_line" | sed -n 's/.* unit=\([a-z]*\)$/\1/p')"
    # With --collect-atstart=no the summary holds only what was collected inside the function.
    instructions="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out_file")"
    if [ -z "$units" ] || [ "$units" -eq 0 ] || [ -z "$instructions" ] || [ "$instructions" -eq 0 ]; then
        echo "mode $mode: no count (units '$units', instructions '$instructions'); did the" \
            "--toggle-collect pattern instructions::$function_name match a function?" >&2
        exit 1
    fi
    units_label="${unit}s"
    if [ "$unit" = series ]; then
        units_label=series
    fi
    per_unit="$(awk -v total="$instructions" -v units="$units" 'BEGIN { printf "%.1f", total / units }')"
    row="| \`$mode\` | $(group_digits "$instructions") | $(group_digits "$units") $units_label"
    rows+=("$row | **$(group_digits "$per_unit")** per $unit |")
done

echo "| mode | instructions (Ir) in the measured region | units | instructions per unit |"
echo "| --- | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
