#!/usr/bin/env bash
# The whole test suite: every test on Vulkan (Mesa lavapipe), then the kernel tests again on GL
# (Mesa llvmpipe): two independent shader compilers that do disagree on edge cases.
# Ends with one summary line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
log=$(mktemp)
status=0
run() {
  echo "== $1"
  shift
  "$@" 2>&1 | tee -a "$log"
  local s=${PIPESTATUS[0]}
  [ "$s" -eq 0 ] || status=$s
}
run "static checks (fmt, lint, type check)" deno task check
checks_failed=$(( status != 0 ))
run "all tests on Vulkan (lavapipe)" env DENO_WEBGPU_BACKEND=vulkan deno test --unstable-webgpu -A tests/
run "kernel tests on GL (llvmpipe)" env DENO_WEBGPU_BACKEND=gl deno test --unstable-webgpu -A tests/kernels_test.ts tests/backward_test.ts
# deno test closes each run with "ok | N passed | M failed (time)"; add them up
read -r passed failed < <(sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '/^(ok|FAILED) \| [0-9]+ passed/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) == "passed") p += $i; if ($(i+1) == "failed") f += $i } }
  END { print p + 0, f + 0 }')
rm -f "$log"
echo
# the static checks count as one test, so that a formatting or type error shows in the summary
[ "$checks_failed" -eq 1 ] && echo "static checks failed (see the top of this log)"
echo "$(( ${passed:-0} + 1 - checks_failed )) passed, $(( ${failed:-0} + checks_failed )) failed"
exit $status
