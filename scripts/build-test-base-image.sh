#!/usr/bin/env bash
# Tests only: this machine's Docker engine has no images and cannot pull, so build a small base
# image from this host's own binaries (bash, coreutils, python3 and the libraries they load),
# then build the project's agent image on top of it.
#   ./scripts/build-test-base-image.sh  ->  nanoclaw-agent:test
set -euo pipefail
cd "$(dirname "$0")/.."
if docker image inspect nanoclaw-agent:test >/dev/null 2>&1; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
bins="bash sh dash cat ls echo head tail id sleep touch mkdir rm ln cp mv env grep sed find tr cut sort wc du dd stat
      mknod yes true false printf test chown chmod getent mount umount su unshare nsenter nohup setsid
      python3 python3.11 readlink dirname basename uname ps pgrep kill timeout"
mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/etc" "$root/tmp"
# Copy the shared libraries a binary or module loads.
copy_libs() {
  { ldd "$1" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -Ln "$lib" "$root$lib"
  done
}
for b in $bins; do
  # The system binaries, not whatever a user PATH (pyenv shims, ...) puts first.
  p=""
  for d in /usr/bin /usr/sbin /bin /sbin; do [ -x "$d/$b" ] && { p="$d/$b"; break; }; done
  [ -n "$p" ] && [ -e "$p" ] || continue
  cp -L "$p" "$root/usr/bin/$b"
  copy_libs "$p"
done
# nanoclaw's own binary (the init) needs libgcc_s, as Debian's images have.
for lib in /lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do
  [ -e "$lib" ] && { mkdir -p "$root$(dirname "$lib")"; cp -Ln "$lib" "$root$lib"; }
done
if [ -d /usr/lib/python3.11 ]; then
  cp -r /usr/lib/python3.11 "$root/usr/lib/"
  for so in /usr/lib/python3.11/lib-dynload/*.so; do copy_libs "$so"; done
fi
ln -s usr/bin "$root/bin"
[ -d "$root/lib64" ] || ln -s usr/lib64 "$root/lib64"
[ -d "$root/lib" ] || ln -s usr/lib "$root/lib"
printf 'root:x:0:0:root:/root:/bin/bash\nagent:x:1000:1000:agent:/workspace:/bin/bash\n' > "$root/etc/passwd"
printf 'root:x:0:\nagent:x:1000:\n' > "$root/etc/group"
tar -C "$root" -c . | docker import - nanoclaw-test-base:latest >/dev/null
./scripts/build-agent-image.sh nanoclaw-agent:test --build-arg BASE=nanoclaw-test-base:latest --build-arg INSTALL_PACKAGES=0 >/dev/null
