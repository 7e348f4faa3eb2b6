#!/usr/bin/env bash
# Install the system packages nanoclaw needs (Debian/Ubuntu): bubblewrap, the sandbox; and
# python3 in /usr/bin, which the escape suite runs inside sandboxes.
set -euo pipefail
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
