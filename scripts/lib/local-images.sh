# shellcheck shell=bash
# Local Docker base images for machines that reach no container registry.
#
# Sourced by scripts/deploy-checks and scripts/cluster-container-test. Builds a Debian bookworm
# root filesystem with debootstrap (from the Debian mirror, which is reachable), caches it as a
# tarball and imports it with `docker import`. Production builds keep using the official images;
# these stand in for them in CI only.
#
# Needs: bash with `set -euo pipefail`, root or sudo (debootstrap and chroot), docker.

LOCAL_IMAGES_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

# Runs a command as root: directly when we are root, else through sudo (GitHub's runners).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages on the host when a command is missing.
ensure_host_command() {
  local command_name=$1
  shift
  if ! command -v "$command_name" >/dev/null 2>&1; then
    echo "installing $* (for $command_name)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# in_rootfs ROOTFS COMMAND...: runs COMMAND inside ROOTFS with a clean environment (the host's
# *_CA_BUNDLE/SSL_CERT_* variables would point at the rootfs's own CA bundle otherwise).
in_rootfs() {
  local rootfs=$1
  shift
  as_root chroot "$rootfs" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# build_rootfs_tarball TARBALL [PACKAGE...] [-- SHELL_COMMAND]
# Makes a minbase bookworm root filesystem, adds ca-certificates and the packages, runs the
# optional shell command inside it, and writes it as TARBALL. Does nothing when TARBALL exists.
build_rootfs_tarball() {
  local tarball=$1
  shift
  local packages=(ca-certificates) extra_command=
  while [ "$#" -gt 0 ]; do
    if [ "$1" = "--" ]; then
      extra_command=$2
      break
    fi
    packages+=("$1")
    shift
  done
  if [ -s "$tarball" ]; then
    echo "rootfs: cached $tarball"
    return 0
  fi
  ensure_host_command debootstrap debootstrap debian-archive-keyring
  mkdir -p "$(dirname "$tarball")"
  local rootfs
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/boxoffice-rootfs.XXXXXX")
  # Registered so an interrupted build does not leave a 200 MB directory behind.
  LOCAL_IMAGES_ROOTFS=$rootfs
  echo "rootfs: debootstrap bookworm from $LOCAL_IMAGES_MIRROR (packages: ${packages[*]})"
  as_root debootstrap --variant=minbase bookworm "$rootfs" "$LOCAL_IMAGES_MIRROR" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    echo "debootstrap failed (log above)" >&2
    return 1
  }
  # Name resolution inside the chroot for apt-get; the file is emptied again before packing.
  as_root cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  # Packages must not start their services inside the chroot (redis-server would).
  as_root sh -c "printf '#!/bin/sh\nexit 101\n' > '$rootfs/usr/sbin/policy-rc.d' && chmod 0755 '$rootfs/usr/sbin/policy-rc.d'"
  in_rootfs "$rootfs" apt-get update -qq >>"$rootfs.log" 2>&1
  in_rootfs "$rootfs" apt-get install -y -qq --no-install-recommends "${packages[@]}" >>"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    echo "apt-get install in the rootfs failed (log above)" >&2
    return 1
  }
  if [ -n "$extra_command" ]; then
    # Downloads in the setup command (pip) trust what the host trusts, a TLS-inspecting
    # proxy's CA included where there is one; the bundle is removed before packing.
    as_root cp /etc/ssl/certs/ca-certificates.crt "$rootfs/tmp/host-ca-certificates.crt"
    in_rootfs "$rootfs" PIP_CERT=/tmp/host-ca-certificates.crt /bin/sh -c "$extra_command" \
      >>"$rootfs.log" 2>&1 || {
      tail -n 30 "$rootfs.log" >&2
      echo "setup command in the rootfs failed (log above)" >&2
      return 1
    }
  fi
  in_rootfs "$rootfs" apt-get clean
  as_root sh -c ": > '$rootfs/etc/resolv.conf'; rm -rf '$rootfs'/var/lib/apt/lists/* '$rootfs'/var/cache/apt/*.bin \
    '$rootfs/usr/sbin/policy-rc.d' '$rootfs/tmp/host-ca-certificates.crt'"
  as_root tar -C "$rootfs" -cf "$tarball.partial" .
  as_root chown "$(id -u):$(id -g)" "$tarball.partial"
  mv "$tarball.partial" "$tarball"
  as_root rm -rf "$rootfs" "$rootfs.log"
  LOCAL_IMAGES_ROOTFS=
  echo "rootfs: wrote $tarball ($(du -h "$tarball" | cut -f1))"
}

# Removes a half-built root filesystem; call from the caller's EXIT trap.
cleanup_rootfs() {
  if [ -n "${LOCAL_IMAGES_ROOTFS:-}" ]; then
    as_root rm -rf "$LOCAL_IMAGES_ROOTFS" "$LOCAL_IMAGES_ROOTFS.log" || true
  fi
}

# import_image TARBALL IMAGE: imports the tarball unless IMAGE already holds exactly it (the
# tarball's checksum is kept in a label).
import_image() {
  local tarball=$1 image=$2 checksum current
  checksum=$(sha256sum "$tarball" | cut -d' ' -f1)
  current=$(docker image inspect --format '{{ index .Config.Labels "org.boxoffice.rootfs-sha256" }}' "$image" 2>/dev/null || true)
  if [ "$current" = "$checksum" ]; then
    echo "image: $image is up to date"
    return 0
  fi
  docker import \
    --change "LABEL org.boxoffice.rootfs-sha256=$checksum" \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$image" >/dev/null
  echo "image: imported $image"
}
