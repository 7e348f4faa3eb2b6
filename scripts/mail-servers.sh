#!/usr/bin/env bash
# Tests only: start a real IMAP server (Dovecot) and a real SMTP server (OpenSMTPD) on loopback,
# with mailboxes under DIR, for the email channel's tests.
#   scripts/mail-servers.sh start DIR IMAP_PORT SMTP_PORT USER:PASSWORD...
#   scripts/mail-servers.sh stop DIR
# Every user gets DIR/home/USER/Maildir, served over IMAP with its password; SMTP delivers mail
# for USER@test.local there. Both run as root and drop to their own users (OpenSMTPD allows
# one instance per machine: a stale one of an earlier run is stopped first).
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?DIR}
case "$cmd" in
stop)
  [ -f "$dir/dovecot.pid" ] && kill "$(cat "$dir/dovecot.pid")" 2>/dev/null || true
  [ -f "$dir/smtpd.pid" ] && kill "$(cat "$dir/smtpd.pid")" 2>/dev/null || true
  exit 0
  ;;
start) ;;
*) echo "usage: $0 start|stop DIR ..." >&2; exit 2 ;;
esac
imap_port=${3:?IMAP_PORT}
smtp_port=${4:?SMTP_PORT}
shift 4
command -v dovecot >/dev/null && command -v smtpd >/dev/null || {
  echo "dovecot and smtpd are needed: scripts/deps.sh installs dovecot-imapd and opensmtpd" >&2
  exit 1
}
mkdir -p "$dir/run" "$dir/home"
: > "$dir/users"
: > "$dir/userbase"
for entry in "$@"; do
  user=${entry%%:*}
  pass=${entry#*:}
  mkdir -p "$dir/home/$user/Maildir/cur" "$dir/home/$user/Maildir/new" "$dir/home/$user/Maildir/tmp"
  echo "$user:{PLAIN}$pass" >> "$dir/users"
  echo "$user 65534:65534:$dir/home/$user" >> "$dir/userbase"
done
chown -R 65534:65534 "$dir/home"
chmod 755 "$dir" "$dir/home"
chmod 644 "$dir/users" "$dir/userbase"
cat > "$dir/dovecot.conf" <<CONF
base_dir = $dir/run
log_path = $dir/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/users
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=$dir/home/%u
}
mail_location = maildir:~/Maildir
service imap-login {
  chroot =
  inet_listener imap {
    port = $imap_port
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
}
CONF
cat > "$dir/smtpd.conf" <<CONF
table users file:$dir/userbase
listen on 127.0.0.1 port $smtp_port
action "deliver" maildir "$dir/home/%{rcpt.user}/Maildir" userbase <users>
match from any for domain "test.local" action "deliver"
CONF
chmod 644 "$dir/smtpd.conf"
pkill -f "^smtpd -d -f .*/smtpd.conf" 2>/dev/null || true
sleep 0.2
dovecot -F -c "$dir/dovecot.conf" > "$dir/dovecot.out" 2>&1 &
echo $! > "$dir/dovecot.pid"
smtpd -d -f "$dir/smtpd.conf" > "$dir/smtpd.out" 2>&1 &
echo $! > "$dir/smtpd.pid"
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$imap_port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$smtp_port") 2>/dev/null; then
    exit 0
  fi
  sleep 0.1
done
echo "the mail servers did not start; see $dir/dovecot.out and $dir/smtpd.out" >&2
cat "$dir/dovecot.out" "$dir/smtpd.out" >&2 || true
exit 1
