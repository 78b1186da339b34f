#!/usr/bin/env bash
# The WebGPU adapter's install path on a machine that has never seen it (issue 15): a fresh Debian 12 (bookworm)
# made with debootstrap (minbase: no backports source, no Mesa, no Vulkan loader), then, inside it, the same
# .ci/install-lavapipe that .ci/run calls, then this checkout's WebGPU adapter test under CI=true (where a missing
# adapter fails the run instead of skipping). The host's node binary and this checkout are bind-mounted in; nothing
# else of the host is visible. Needs root, debootstrap and Debian's mirror; takes a few minutes (it downloads the
# base system), so it is a manual check, not part of `npm test`. Its result is recorded in docs/webgpu.md.
#
#   sudo scripts/ci/lavapipe-fresh-debian.sh [ROOT_DIR]     (default: a new directory under /tmp, removed after)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=${1:-$(mktemp -d /tmp/xp-bookworm-XXXXXX)}
keep=${1:+1}
mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  [ -n "$keep" ] || rm -rf --one-file-system "$root"
}
trap cleanup EXIT
bind() { if [ -d "$1" ]; then mkdir -p "$2"; else touch "$2"; fi; mount --bind "$1" "$2"; mounts+=("$2"); }

if [ ! -x "$root/usr/bin/apt-get" ]; then
  echo "fresh-debian: debootstrap bookworm (minbase) into $root"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "fresh-debian: before: mesa-vulkan-drivers $(chroot "$root" dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 'not installed'), backports source: $(chroot "$root" sh -c 'grep -rls bookworm-backports /etc/apt/ || echo none')"

mount -t proc proc "$root/proc"; mounts+=("$root/proc")
bind /dev "$root/dev"
bind /sys "$root/sys"
bind "$(readlink -f "$(command -v node)")" "$root/usr/bin/node"
bind "$repo" "$root/work/repo"
adapter_test() { chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp CI=true sh -c 'cd /work/repo && node node_modules/vitest/vitest.mjs run test/webgpu/adapter.test.ts'; }
if [ -z "$(chroot "$root" dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null)" ]; then
  echo "fresh-debian: the WebGPU adapter test before the install must fail (CI=true, no adapter):"
  if adapter_test > "$root/tmp/before.log" 2>&1; then echo "fresh-debian: it passed without an adapter" >&2; exit 1; fi
  grep -m1 -i "adapter" "$root/tmp/before.log" || true
fi
mkdir -p "$root/repo/.ci"
cp "$repo/.ci/install-lavapipe" "$root/repo/.ci/install-lavapipe"
chroot "$root" /repo/.ci/install-lavapipe
echo "fresh-debian: second run (idempotent: nothing fetched):"
chroot "$root" /repo/.ci/install-lavapipe

echo "fresh-debian: the WebGPU adapter test after the install (CI=true: no adapter fails)"
adapter_test
