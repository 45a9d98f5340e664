#!/bin/busybox sh
# PID 1 of the vivid test VM: load vivid, run the capture scenarios, write results to the 9p share.
/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/lib64
mount -t proc none /proc; mount -t sysfs none /sys; mount -t devtmpfs none /dev; mount -t tmpfs none /tmp
for m in $(cat /etc/modules.load); do
  case $m in
    # One instance, only a single-planar video capture node: /dev/video0, nothing else.
    */vivid.ko) insmod /lib/modules/$m n_devs=1 node_types=0x1 multiplanar=1 || echo "VM-ERR insmod $m" ;;
    *) insmod /lib/modules/$m || echo "VM-ERR insmod $m" ;;
  esac
done
i=0; while [ ! -e /dev/video0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -e /dev/video0 ] || echo "VM-ERR no /dev/video0"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmout /out || echo "VM-ERR 9p mount"
echo "VM-UP $(cut -d' ' -f1 /proc/uptime)"

run() {  # $1: scenario name, rest: capture arguments
  name=$1; shift
  mkdir -p /out/$name
  t=$(cut -d' ' -f1 /proc/uptime)
  capture --device /dev/video0 --width 640 --height 480 --fps 25 --out /out/$name "$@" > /out/$name/stdout.txt 2>&1
  echo "VM-RC $name $? $t $(cut -d' ' -f1 /proc/uptime)"
}
run yuyv --format YUYV --count 30 --out-size 320x240
run grey --format GREY --count 10 --out-size 320x240 --mono
run nv12 --format NV12 --count 10 --out-size 320x240
run y16 --format Y16 --count 5 --out-size 320x240 --mono

# Device loss: unbind vivid's platform device mid-stream (like unplugging a USB camera: open file
# handles get ENODEV, the node disappears), then bind it again; capture must reconnect and go on.
pdev=$(basename "$(ls -d /sys/bus/platform/drivers/vivid/vivid* 2>/dev/null | head -1)")
(
  sleep 2
  echo "$pdev" > /sys/bus/platform/drivers/vivid/unbind && echo "VM-UNBOUND $pdev $(cut -d' ' -f1 /proc/uptime)"
  sleep 1.5
  echo "$pdev" > /sys/bus/platform/drivers/vivid/bind && echo "VM-BOUND $pdev $(cut -d' ' -f1 /proc/uptime)"
) &
run replug --format YUYV --count 60 --out-size 64x48 --timeout-ms 1000 --max-seconds 120
wait
echo "VM-DONE $(cut -d' ' -f1 /proc/uptime)"
sync; umount /out 2>/dev/null; poweroff -f
