#!/bin/sh
# PID 1 of a lab guest, started by the image's /sbin/mbrec-init once /mnt/src (the source tree, read-only) is
# mounted. Mounts what BCC needs, makes mbrec importable, runs the job from /mnt/out/job.json, writes the exit
# status to /mnt/out/status-<role> and powers off. Lines starting with "mbrec-lab:" are shown to the user.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root LC_ALL=C.UTF-8

role=a
keep=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        mbrec.role=*) role="${arg#mbrec.role=}" ;;
        mbrec.keep=*) keep="${arg#mbrec.keep=}" ;;
    esac
done
echo "mbrec-lab: init on $(uname -r), role $role, $(cut -d' ' -f1 /proc/uptime) s after the kernel started"

mountpoint -q /run || mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/pts /dev/shm /run/lock   # /var/lock links to /run/lock
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug      # BCC 0.26 looks for /sys/kernel/debug/tracing first
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ulimit -l unlimited
hostname "lab-$role"
ip link set lo up

status=1
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 out /mnt/out; then
    echo "mbrec-lab: cannot mount the output folder over 9p"
else
    # An importable copy of mbrec (the source tree keeps analysis/ and bpf/ beside the package). The host packs
    # it as one tar: copying 70 small files over 9p takes 15 s under TCG, one sequential read well under 1 s.
    mkdir -p /tmp/pylib
    if [ -f /mnt/out/.pylib.tar ]; then
        tar -xf /mnt/out/.pylib.tar -C /tmp/pylib
    else
        cp -r /mnt/src/mbrec /tmp/pylib/mbrec
        [ -d /mnt/src/analysis ] && cp -r /mnt/src/analysis /tmp/pylib/mbrec/analysis
        [ -d /mnt/src/bpf ] && cp -r /mnt/src/bpf /tmp/pylib/mbrec/bpf
    fi
    export PYTHONPATH=/tmp/pylib PYTHONDONTWRITEBYTECODE=1
    echo "mbrec-lab: [$(cut -d' ' -f1 /proc/uptime)] mbrec copied to /tmp/pylib; starting the job"
    cd /mnt/out
    python3 -m mbrec.lab.guest --role "$role" /mnt/out/job.json
    status=$?
    echo "$status" > "/mnt/out/status-$role"
    echo "mbrec-lab: job finished with exit status $status"
fi

if [ "$keep" = 1 ]; then
    echo "mbrec-lab: --keep: a shell in the guest (PYTHONPATH=/tmp/pylib); exit it to power off"
    setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'
fi
sync
umount /mnt/out 2>/dev/null
echo "mbrec-lab: powering off"
echo o > /proc/sysrq-trigger
sleep 30
