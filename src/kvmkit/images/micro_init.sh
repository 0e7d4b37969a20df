#!/bin/busybox sh
# kvmkit micro-guest /init: a busybox userland that reports what the guest sees on ttyS0.
# Root shells on ttyS0 and, with a VGA console, tty1.
# Markers: KVMKIT-GUEST-READY once; KVMKIT-STATUS every 2 s; KVMKIT-IP when DHCP binds;
# KVMKIT-DISK when /dev/vda holds an ext4 file system with /kvmkit-marker; KVMKIT-POWEROFF on the power button.
# Every command below before the ready marker is a shell builtin or one busybox process: under TCG each
# fork costs milliseconds. The applets' symlinks are in the archive already (kvmkit.images.micro).
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /var/run && mount -t devpts devpts /dev/pts
# Drivers for devices present at boot load before the ready marker. The SCSI stack, balloon, RNG and console
# drivers of absent devices load right after it (so hot-plugged ones still work) instead of delaying boot.
# A kernel with everything built in (the minimal kernel) lists no modules: nothing to scan.
later=""
if [ -s /etc/kvmkit-modules ]; then
  virtio=" "
  for d in /sys/bus/pci/devices/*; do
    read -r vendor < "$d/vendor" && [ "$vendor" = 0x1af4 ] && read -r id < "$d/device" && virtio="$virtio$id "
  done
  present() { for id in "$@"; do case "$virtio" in *" $id "*) return 0;; esac; done; return 1; }
  while read -r m; do
    case "$m" in
      scsi_common.ko|scsi_mod.ko|virtio_scsi.ko|sd_mod.ko) present 0x1004 0x1048 || { later="$later $m"; continue; };;
      virtio_balloon.ko) present 0x1002 0x1045 || { later="$later $m"; continue; };;
      virtio-rng.ko|virtio_rng.ko) present 0x1005 0x1044 || { later="$later $m"; continue; };;
      virtio_console.ko) present 0x1003 0x1043 || { later="$later $m"; continue; };;
    esac
    insmod "/lib/modules/$m" 2>/dev/null
  done < /etc/kvmkit-modules
fi
read -r cmdline < /proc/cmdline
host=micro probe=""
set -f  # the command line's words are not file patterns
for word in $cmdline; do
  case "$word" in
    kvmkit.hostname=?*) host=${word#kvmkit.hostname=};;
    kvmkit.probe=1) probe=1;;
  esac
done
set +f
hostname "$host" 2>/dev/null || hostname micro
echo "KVMKIT-GUEST-READY"
if [ -n "$probe" ]; then poweroff -f; fi
for m in $later; do insmod "/lib/modules/$m" 2>/dev/null; done

# Graceful shutdown on the ACPI power button (libvirt's shutdown / virsh shutdown).
acpid -c /etc/acpi -l /tmp/acpid.log

# A disk with an ext4 file system and /kvmkit-marker tells the test which disk it booted with.
if [ -b /dev/vda ] && mount -t ext4 -o ro /dev/vda /mnt 2>/dev/null; then
  [ -f /mnt/kvmkit-marker ] && echo "KVMKIT-DISK vda $(head -n1 /mnt/kvmkit-marker)"
  umount /mnt
fi

# DHCP on the first NIC; /etc/udhcpc.sh prints KVMKIT-IP.
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  udhcpc -i eth0 -s /etc/udhcpc.sh -b -t 20 -T 1 -x "hostname:$(hostname)" >/dev/null 2>&1
fi

# A root shell on the serial console for tests and operators (virsh console / kvmkit vm console).
( while true; do setsid cttyhack sh -l </dev/ttyS0 >/dev/ttyS0 2>&1; sleep 1; done ) &

# And one on the VGA text console (tty1) when the kernel drives one (vgacon, or fbcon on a frame buffer): the
# graphical console (VNC) types into it. Not cttyhack: it would reopen /dev/console, the serial port. The
# inner shell opens tty1 after setsid, so tty1 becomes its controlling terminal (Ctrl-C works there).
if grep -qsE 'VGA|frame buffer' /sys/class/vtconsole/vtcon*/name; then
  ( while true; do setsid sh -c 'echo "kvmkit micro-guest $(hostname): root shell on tty1" >/dev/tty1
      exec sh -l </dev/tty1 >/dev/tty1 2>&1'; sleep 1; done ) &
fi

# Status line every 2 s; online any vCPU that was hot-plugged.
while true; do
  for c in /sys/devices/system/cpu/cpu[0-9]*/online; do
    [ "$(cat "$c" 2>/dev/null)" = 0 ] && echo 1 > "$c" 2>/dev/null
  done
  up=$(cut -d' ' -f1 /proc/uptime)
  cpus=$(grep -c '^processor' /proc/cpuinfo)
  mem=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
  echo "KVMKIT-STATUS uptime=$up cpus=$cpus mem_total_kb=$mem"
  sleep 2
done
