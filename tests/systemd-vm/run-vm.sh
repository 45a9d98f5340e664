#!/usr/bin/env bash
# The package on a real systemd: boots a Debian bookworm VM (rootfs made by mmdebstrap from the
# Debian archive and cached; the Debian kernel + initrd of this machine; QEMU TCG, no KVM needed),
# where tests/systemd-vm/guest-test.sh installs the .deb with `apt install ./autoneural_*.deb`,
# loads vivid and checks the service with systemctl, busctl, journalctl and runuser. The unit, the
# bus policy and the sysusers/tmpfiles snippets are the packaged ones, unchanged (dpkg --verify).
#
# Usage (as root: the rootfs keeps its owners):
#   tests/systemd-vm/run-vm.sh DEB [WORKDIR]
#   e.g. tests/systemd-vm/run-vm.sh "$(scripts/package-deb)" target/systemd-vm
# Results: WORKDIR/share/out/results.txt (PASS/FAIL lines), journal.txt, serial.txt; exit status 0
# only when every check passed. Too slow for `cargo test` (about 10-15 minutes on 1 TCG CPU); CI
# runs it as its own job.
# Needs: mmdebstrap, qemu-system-x86, linux-image-amd64 (kernel + initrd in /boot), e2fsprogs.
# Environment: AUTONEURAL_VM_CACHE (rootfs cache, default ~/.cache/autoneural/systemd-vm),
#   SYSTEMD_VM_TIMEOUT (seconds, default 1800), SYSTEMD_VM_MEM (MiB, default 2048).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -ge 1 ] || { sed -n '2,18p' "$0" >&2; exit 2; }
deb=$(realpath "$1")
work=$(mkdir -p "${2:-$repo/target/systemd-vm}" && realpath "${2:-$repo/target/systemd-vm}")
cache=${AUTONEURAL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autoneural/systemd-vm}
vm_timeout=${SYSTEMD_VM_TIMEOUT:-1800}
vm_mem=${SYSTEMD_VM_MEM:-2048}
t0=$EPOCHREALTIME
say() { echo "[systemd-vm +$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')s] $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "systemd-vm: run as root (the rootfs image keeps file owners)" >&2; exit 2; }
[ -f "$deb" ] || { echo "systemd-vm: $deb: no such package" >&2; exit 2; }
for tool in qemu-system-x86_64 mmdebstrap mkfs.ext4 depmod; do
  command -v "$tool" >/dev/null || { echo "systemd-vm: $tool missing (apt install qemu-system-x86 mmdebstrap e2fsprogs kmod)" >&2; exit 2; }
done

# ---- the kernel: the newest installed one with vivid and an initrd (which mounts /dev/vda).
kver=
for dir in $(ls -d /lib/modules/*/ 2>/dev/null | sort -V -r); do
  v=$(basename "$dir")
  if ls "$dir"/kernel/drivers/media/test-drivers/vivid/vivid.ko* >/dev/null 2>&1 && [ -r "/boot/vmlinuz-$v" ] && [ -r "/boot/initrd.img-$v" ]; then
    kver=$v; break
  fi
done
[ -n "$kver" ] || { echo "systemd-vm: no kernel with vivid + /boot/vmlinuz + /boot/initrd.img (apt install linux-image-amd64)" >&2; exit 2; }
moddir=/lib/modules/$kver

# ---- the rootfs, cached by its package list.
packages=systemd,systemd-sysv,dbus,udev,kmod,procps,libstdc++6,libgcc-s1
key=$(echo "bookworm $packages" | sha256sum | cut -c1-12)
tarball=$cache/bookworm-$key.tar
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  say "building the rootfs with mmdebstrap (cached in $tarball)"
  mmdebstrap --variant=apt --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    bookworm "$tarball.tmp" > "$work/mmdebstrap.log" 2>&1 || { tail -20 "$work/mmdebstrap.log" >&2; exit 1; }
  mv "$tarball.tmp" "$tarball"
  say "rootfs built"
fi

# ---- the disk image: the rootfs, the kernel modules the test needs, the harness unit.
root=$work/root
rm -rf "$root" && mkdir -p "$root"
tar -C "$root" -xpf "$tarball"
declare -A seen=()
add_module() {  # $1: path relative to moddir; its dependencies too
  local rel=$1 dep
  [ -n "${seen[$rel]:-}" ] && return 0
  seen[$rel]=1
  for dep in $(awk -F': *' -v p="$rel" '$1 == p { print $2 }' "$moddir/modules.dep"); do add_module "$dep"; done
  mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
  cp "$moddir/$rel" "$root/lib/modules/$kver/$rel"
}
for name in vivid 9p 9pnet_virtio virtio_pci virtio_blk virtio_rng ext4; do
  rel=$(awk -F: -v m="$name" '{ n = $1; sub(".*/", "", n); sub("\\.ko.*$", "", n); gsub("-", "_", n) } n == m { print $1; exit }' "$moddir/modules.dep")
  [ -n "$rel" ] || { echo "systemd-vm: module $name not in $moddir/modules.dep" >&2; exit 2; }
  add_module "$rel"
done
cp "$moddir"/modules.builtin* "$moddir/modules.order" "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
echo autoneural-vm > "$root/etc/hostname"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"
mkdir -p "$root/mnt/vm"
cat > "$root/etc/systemd/system/autoneural-vmtest.service" <<'EOF'
[Unit]
Description=autoneural package test (tests/systemd-vm)
After=multi-user.target
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStartPre=/sbin/modprobe -a 9pnet_virtio 9p
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmshare /mnt/vm
ExecStart=/bin/bash /mnt/vm/guest-test.sh
ExecStopPost=/bin/systemctl --no-block poweroff
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/autoneural-vmtest.service "$root/etc/systemd/system/multi-user.target.wants/autoneural-vmtest.service"
# No login prompt on the console (it would interleave with the test's lines).
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
image=$work/disk.img
rm -f "$image"
mkfs.ext4 -q -F -L autoneural-vm -d "$root" "$image" 2G
rm -rf "$root"
say "disk image ready (kernel $kver)"

# ---- the share: the package, the guest script, the default rules, results under out/.
share=$work/share
rm -rf "$share" && mkdir -p "$share/out"
cp "$deb" "$share/"
cp "$here/guest-test.sh" "$share/"
cp "$repo/policies/rules/default.toml" "$share/rules.toml"

serial=$work/serial.txt
say "booting (timeout ${vm_timeout}s)"
set +e
timeout -k 5 "$vm_timeout" qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
  -accel tcg -cpu max -m "$vm_mem" -smp 1 \
  -kernel "/boot/vmlinuz-$kver" -initrd "/boot/initrd.img-$kver" \
  -append "root=/dev/vda rw console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off systemd.show_status=0" \
  -drive "file=$image,format=raw,if=virtio,cache=unsafe" \
  -device virtio-rng-pci \
  -serial "file:$serial.raw" \
  -virtfs "local,path=$share,mount_tag=vmshare,security_model=none,id=vmshare" </dev/null >"$work/qemu.log" 2>&1
rc=$?
set -e
tr -d '\r' < "$serial.raw" > "$serial" || true
say "qemu exited with $rc"
results=$share/out/results.txt
[ -f "$results" ] || { echo "systemd-vm: no results (guest-test.sh did not run?)" >&2; tail -40 "$serial" >&2; cat "$work/qemu.log" >&2; exit 1; }
cat "$results" >&2
grep -q '^DONE' "$results" || { echo "systemd-vm: the guest did not finish (qemu rc $rc)" >&2; tail -40 "$serial" >&2; exit 1; }
if grep -q '^FAIL' "$results"; then
  echo "systemd-vm: $(grep -c '^FAIL' "$results") check(s) failed; journal: $share/out/journal.txt" >&2
  exit 1
fi
say "all $(grep -c '^PASS' "$results") checks passed"
