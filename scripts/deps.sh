#!/usr/bin/env bash
# Install the system packages nanoclaw needs (Debian/Ubuntu): bubblewrap, the sandbox; and
# python3 in /usr/bin, which the escape suite runs inside sandboxes.
#   scripts/deps.sh          what nanoclaw needs to run
#   scripts/deps.sh --test   also the mail servers the email tests start on loopback
#                            (Dovecot, OpenSMTPD); the tests run their own instances on
#                            their own ports, not the packages' services; and the MCP servers
#                            from PyPI the MCP tests run in sandboxes (scripts/mcp-servers.sh)
set -euo pipefail
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ "${1:-}" = "--test" ]; then
  command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd)
  command -v smtpd >/dev/null 2>&1 || missing+=(opensmtpd)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if [ "${1:-}" = "--test" ]; then
  "$(dirname "$0")/mcp-servers.sh"
fi
