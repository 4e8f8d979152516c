#!/usr/bin/env bash
# The whole test suite: every test on Vulkan (Mesa lavapipe), then the kernel tests again on GL
# (Mesa llvmpipe) and on Dawn: independent shader compilers (naga to SPIR-V and to GLSL, Tint) that do
# disagree on edge cases.
# Ends with one summary line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
# the tests read real checkpoints and the study's trait files from ../shared: say first what is missing
shared=${INOCULUM_SHARED:-../shared}
missing=()
for f in models/stories260K/stories260K.bin models/stories260K/tok512.bin models/qwen3-tokenizer/tokenizer.json \
  models/qwen3-tokenizer/tokenizer_config.json data/persona_vectors/data_generation/trait_data_extract/evil.json \
  data/persona_vectors/data_generation/trait_data_eval/evil.json; do
  [ -f "$shared/$f" ] || missing+=("$shared/$f")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "the tests need $shared/${missing[0]#"$shared/"} (and $((${#missing[@]} - 1)) more file(s) from ../shared):" \
    "bash scripts/fetch-test-assets.sh fetches the public test assets (stories260K, tok512, the Qwen3 tokenizer," \
    "the persona-vectors trait files) into ../shared, checked against pinned SHA-256s"
  exit 1
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
log=$(mktemp)
status=0
strip() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
run() {
  local title=$1 out s attempt
  shift
  echo "== $title"
  out=$(mktemp)
  for attempt in 1 2; do
    "$@" 2>&1 | tee "$out"
    s=${PIPESTATUS[0]}
    # A test process killed by a signal after reporting that every test passed crashed at exit: Mesa's
    # GL driver under Deno does this intermittently ("double free or corruption" on teardown, about 1
    # run in 20 here). That is not a test result, so the step runs once more and only the rerun counts.
    if [ "$attempt" -eq 1 ] && [ "$s" -ge 128 ] && strip "$out" | grep -qE '^ok \| [0-9]+ passed \| 0 failed'; then
      echo "note: '$title' exited with status $s after all its tests passed (a crash at exit); running it again"
      continue
    fi
    break
  done
  cat "$out" >>"$log"
  rm -f "$out"
  [ "$s" -eq 0 ] || status=$s
}
run "static checks (fmt, lint, type check)" deno task check
checks_failed=$(( status != 0 ))
run "all tests on Vulkan (lavapipe)" env DENO_WEBGPU_BACKEND=vulkan deno test --unstable-webgpu -A tests/
run "kernel tests on GL (llvmpipe)" env DENO_WEBGPU_BACKEND=gl deno test --unstable-webgpu -A tests/kernels_test.ts tests/matmul_test.ts tests/backward_test.ts
# a second WebGPU implementation, Dawn (the Tint compiler): Dawn's own backend, or on a machine without a GPU
# its OpenGL backend over llvmpipe (lib/gpu/device.ts)
run "kernel, gradient and model tests on Dawn" env INOCULUM_WEBGPU=dawn deno test --unstable-webgpu -A tests/kernels_test.ts tests/matmul_test.ts tests/backward_test.ts tests/train_grad_test.ts tests/model_test.ts
# deno test closes each run with "ok | N passed | M failed (time)"; add them up
read -r passed failed < <(strip "$log" | awk '/^(ok|FAILED) \| [0-9]+ passed/ {
  for (i = 1; i <= NF; i++) { if ($(i+1) == "passed") p += $i; if ($(i+1) == "failed") f += $i } }
  END { print p + 0, f + 0 }')
rm -f "$log"
echo
# the static checks count as one test, so that a formatting or type error shows in the summary
[ "$checks_failed" -eq 1 ] && echo "static checks failed (see the top of this log)"
echo "$(( ${passed:-0} + 1 - checks_failed )) passed, $(( ${failed:-0} + checks_failed )) failed"
exit $status
