#!/bin/sh
# The capture code and resend.js (the audio kept for a resume) have one source, presales_ws/static/ (the demo
# page serves them from there); the extension carries copies in lib/ so that the folder loads unpacked on its
# own. Run this after editing any of them.
# `--check` only compares and exits 1 if a copy is stale (tests/test_extension_browser.py runs it).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
source_dir="$here/../../presales_ws/static"
stale=0
for file in capture.js capture-worklet.js resend.js; do
  if [ "${1:-}" = "--check" ]; then
    if ! cmp -s "$source_dir/$file" "$here/lib/$file"; then
      echo "lib/$file differs from presales_ws/static/$file: run examples/chrome-extension/sync-capture.sh" >&2
      stale=1
    fi
  else
    cp "$source_dir/$file" "$here/lib/$file"
  fi
done
exit "$stale"
