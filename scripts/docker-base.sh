#!/usr/bin/env bash
# Builds the local worker base image from Debian's busybox-static package,
# for machines with a Docker engine but no image registry: nothing is pulled.
#
#   scripts/docker-base.sh [IMAGE]     (default devops-base:busybox)
#
# It downloads the .deb with `apt-get download` (an apt source is needed, not
# a registry), unpacks it with dpkg-deb, lays out a root filesystem with one
# link per busybox applet (/bin/sh, /bin/hostname, /usr/bin/awk...), a minimal
# /etc (passwd, group, nsswitch, CA certificates) and /tmp, and turns it into
# an image with `docker import`. An image that already exists is kept; set
# FORCE=1 to rebuild it.
set -euo pipefail

IMAGE=${1:-devops-base:busybox}
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists (FORCE=1 rebuilds it)"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building base image $IMAGE from Debian's busybox-static"
deb=$(ls /var/cache/apt/archives/busybox-static_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  # apt-get download writes to the current directory; run it as _apt-readable.
  # On a fresh machine the package lists may be empty: update them once.
  (cd "$work" && chmod 755 . && apt-get download -q busybox-static >/dev/null 2>&1) ||
    { apt-get update -qq >/dev/null 2>&1 && (cd "$work" && apt-get download -q busybox-static >/dev/null 2>&1); } || {
    echo "apt-get download busybox-static failed (after apt-get update)" >&2
    exit 1
  }
  deb=$(ls "$work"/busybox-static_*.deb)
fi
version=$(dpkg-deb -f "$deb" Version)
dpkg-deb -x "$deb" "$work/pkg"

root=$work/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/ssl/certs,root,tmp,data,proc,sys,dev,run,var/tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
install -m 0755 "$work/pkg/bin/busybox" "$root/bin/busybox"
# One hard link per applet, where busybox itself says it belongs.
"$root/bin/busybox" --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  ln -f "$root/bin/busybox" "$root/$applet"
done

cat >"$root/etc/passwd" <<'TXT'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
devops:x:10001:10001:devops:/data:/bin/false
TXT
cat >"$root/etc/group" <<'TXT'
root:x:0:
nogroup:x:65534:
devops:x:10001:
TXT
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi

tar --numeric-owner --owner=0 --group=0 -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/sh"]' \
  --change "LABEL org.opencontainers.image.title=devops-base org.opencontainers.image.description=\"busybox-static $version from Debian, imported locally\" org.opencontainers.image.version=$version" \
  --message "busybox-static $version from Debian" \
  - "$IMAGE" >/dev/null
echo "built $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
