#!/usr/bin/env bash
# Boots the Debian kernel in QEMU (TCG, no KVM needed) with a small initramfs holding the vivid
# V4L2 test driver and the camera crate's `capture` example, and runs the capture scenarios inside
# the guest. Results land in OUT/<scenario>/ (frame PNGs, frames.tsv, stdout.txt) through a 9p share;
# the Rust test camera/tests/vivid_vm.rs checks them.
#
# Usage: run-vm.sh CAPTURE_BINARY WORKDIR
# Needs (scripts/setup installs them): qemu-system-x86, linux-image-amd64, busybox-static, cpio, kmod.
set -euo pipefail
capture_bin=$(realpath "$1")
work=$(mkdir -p "$2" && realpath "$2")
vm_timeout=${VIVID_VM_TIMEOUT:-300}
t0=$EPOCHREALTIME
say() { echo "[vivid-vm +$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')s] $*" >&2; }

for tool in qemu-system-x86_64 busybox cpio; do
  command -v "$tool" >/dev/null || { echo "vivid-vm: $tool missing (run scripts/setup)" >&2; exit 2; }
done

# The newest installed kernel that ships vivid.
kver=
for dir in $(ls -d /lib/modules/*/ 2>/dev/null | sort -V -r); do
  v=$(basename "$dir")
  if [ -f "$dir/kernel/drivers/media/test-drivers/vivid/vivid.ko" ] || ls "$dir"/kernel/drivers/media/test-drivers/vivid/vivid.ko* >/dev/null 2>&1; then
    [ -r "/boot/vmlinuz-$v" ] && { kver=$v; break; }
  fi
done
[ -n "$kver" ] || { echo "vivid-vm: no kernel with vivid in /lib/modules + /boot (install linux-image-amd64)" >&2; exit 2; }
moddir=/lib/modules/$kver
[ -f "$moddir/modules.dep" ] || { echo "vivid-vm: $moddir/modules.dep missing (run depmod $kver)" >&2; exit 2; }

# Boot the uncompressed kernel through its PVH entry when possible: several seconds faster under
# TCG than letting the emulated CPU decompress the bzImage.
boot=/boot/vmlinuz-$kver
if grep -q '^CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null && command -v xz >/dev/null; then
  vmlinux=$work/vmlinux-$kver
  if [ ! -s "$vmlinux" ]; then
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$boot" | head -1 | cut -d: -f1 || true)
    if [ -n "$off" ]; then
      tail -c +$((off + 1)) "$boot" | xz -dc 2>/dev/null > "$vmlinux.tmp" || true
      [ "$(head -c 4 "$vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && mv "$vmlinux.tmp" "$vmlinux"
      rm -f "$vmlinux.tmp"
    fi
  fi
  [ -s "$vmlinux" ] && boot=$vmlinux
fi
say "kernel $kver, booting $(basename "$boot")"

# ---- initramfs
root=$work/initramfs
rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,out,etc,lib64,lib/x86_64-linux-gnu,lib/modules}
cp "$(command -v busybox)" "$root/bin/busybox"
declare -A seen=()
order=()
add_module() {  # $1: path relative to moddir; dependencies first
  local rel=$1 dep
  [ -n "${seen[$rel]:-}" ] && return 0
  seen[$rel]=1
  for dep in $(awk -F': *' -v p="$rel" '$1 == p { print $2 }' "$moddir/modules.dep"); do add_module "$dep"; done
  order+=("$rel")
}
for name in virtio_pci 9pnet_virtio 9p vivid; do
  rel=$(awk -F: -v m="$name" '{ n = $1; sub(".*/", "", n); sub("\\.ko.*$", "", n); gsub("-", "_", n) } n == m { print $1; exit }' "$moddir/modules.dep")
  [ -n "$rel" ] || { echo "vivid-vm: module $name not in $moddir/modules.dep" >&2; exit 2; }
  add_module "$rel"
done
for rel in "${order[@]}"; do
  mkdir -p "$root/lib/modules/$(dirname "$rel")"
  case $rel in
    *.ko.xz) xz -dc "$moddir/$rel" > "$root/lib/modules/${rel%.xz}"; echo "${rel%.xz}" ;;
    *.ko.zst) zstd -qdc "$moddir/$rel" > "$root/lib/modules/${rel%.zst}"; echo "${rel%.zst}" ;;
    *) cp "$moddir/$rel" "$root/lib/modules/$rel"; echo "$rel" ;;
  esac
done > "$root/etc/modules.load"
# The capture example (debug info stripped: smaller initramfs, faster boot) and its shared libraries.
strip -o "$root/bin/capture" "$capture_bin" 2>/dev/null || cp "$capture_bin" "$root/bin/capture"
for lib in $(ldd "$capture_bin" | grep -o '/[^ ]*'); do
  case $lib in
    */ld-linux*) cp -L "$lib" "$root/lib64/" ;;
    *) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
  esac
done
cp "$(dirname "$0")/guest-init.sh" "$root/init"
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initramfs.cpio"
say "initramfs $(du -h "$work/initramfs.cpio" | cut -f1) with ${#order[@]} modules"

# ---- boot
out=$work/out
rm -rf "$out" && mkdir -p "$out"
serial=$work/serial.log
set +e
timeout -k 5 "$vm_timeout" qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
  -accel tcg -cpu max -m 512 -smp 1 -kernel "$boot" -initrd "$work/initramfs.cpio" \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off" -serial "file:$serial" \
  -virtfs "local,path=$out,mount_tag=vmout,security_model=none,id=vmout" </dev/null >"$work/qemu.log" 2>&1
rc=$?
set -e
tr -d '\r' < "$serial" > "$out/serial.txt" || true
say "qemu exited with $rc"
grep -E '^VM-' "$out/serial.txt" >&2 || true
[ $rc -eq 0 ] || { tail -30 "$out/serial.txt" >&2; cat "$work/qemu.log" >&2; exit 1; }
grep -q '^VM-DONE' "$out/serial.txt" || { echo "vivid-vm: the guest did not finish" >&2; tail -30 "$out/serial.txt" >&2; exit 1; }
