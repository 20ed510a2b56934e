#!/bin/sh
# Recorder overhead on the ab workload, in ONE lab VM boot (run from the host):
#   mbrec lab run -o OUT -- sh /mnt/src/bench/ab_overhead.sh [REQUESTS] [ROUNDS] [ATTACH...]
# apache2 on b, `ab -k -c 10 -n REQUESTS` from a, no injected delay (so the stack, not the
# network, limits the rate). Rounds alternate: without recording, then with `mbrec record` on
# a and b (all packet probes), once per ATTACH kind given (default: auto). Writes
# OUT/overhead.jsonl: one line per ab run.
set -u
N=${1:-3000}
ROUNDS=${2:-3}
if [ $# -ge 2 ]; then shift 2; else shift $#; fi
ATTACH=${*:-auto}
OUT=/mnt/out/overhead.jsonl
: >$OUT
head -c 4096 /dev/urandom >/var/www/html/4k.bin
ip netns exec b sh -c '. /etc/apache2/envvars && mkdir -p $APACHE_RUN_DIR $APACHE_LOCK_DIR $APACHE_LOG_DIR && apache2 -k start'
sleep 2
ip netns exec a ab -k -c 10 -n 500 http://10.0.2.1/4k.bin >/dev/null 2>&1  # warm up

run_ab() {  # $1 = label
    ip netns exec a ab -k -c 10 -n $N http://10.0.2.1/4k.bin >/tmp/ab.out 2>&1
    rps=$(awk '/^Requests per second/ {print $4}' /tmp/ab.out)
    tpr=$(awk '/^Time per request/ && /mean\)$/ {print $4; exit}' /tmp/ab.out)
    p50=$(awk '/^  50%/ {print $2}' /tmp/ab.out)
    p99=$(awk '/^  99%/ {print $2}' /tmp/ab.out)
    echo "{\"mode\": \"$1\", \"requests\": $N, \"rps\": ${rps:-null}, \"mean_ms\": ${tpr:-null}, \"p50_ms\": ${p50:-null}, \"p99_ms\": ${p99:-null}}" >>$OUT
}

r=0
while [ $r -lt $ROUNDS ]; do
  for kind in $ATTACH; do
    run_ab none
    for h in a b; do
        python3 -m mbrec record -o /tmp/ovh-$h.mbrec --force --netns $h --host-name $h --quiet \
            --attach $kind >/tmp/ovh-$h.log 2>&1 &
        eval "P$h=\$!"
    done
    i=0
    while [ $i -lt 600 ]; do
        grep -q "recording on" /tmp/ovh-a.log && grep -q "recording on" /tmp/ovh-b.log && break
        sleep 1; i=$((i + 1))
    done
    ca0=$(awk '{print $14 + $15}' /proc/$Pa/stat); cb0=$(awk '{print $14 + $15}' /proc/$Pb/stat)
    t0=$(cut -d' ' -f1 /proc/uptime)
    run_ab "record-$kind"
    ca1=$(awk '{print $14 + $15}' /proc/$Pa/stat); cb1=$(awk '{print $14 + $15}' /proc/$Pb/stat)
    t1=$(cut -d' ' -f1 /proc/uptime)
    # user+system CPU of each recorder process during the ab run, in clock ticks (1/100 s)
    echo "$kind: recorders' CPU during ab: a $((ca1 - ca0)) ticks, b $((cb1 - cb0)) ticks, over $t0 -> $t1 s" \
        >>/mnt/out/overhead-recorders.txt
    grep VmHWM /proc/$Pa/status | sed 's/^/recorder a peak RSS: /' >>/mnt/out/overhead-recorders.txt
    kill -INT $Pa $Pb; wait $Pa; wait $Pb
    tail -n 2 /tmp/ovh-a.log | head -n 1 >>/mnt/out/overhead-recorders.txt
    tail -n 2 /tmp/ovh-b.log | head -n 1 >>/mnt/out/overhead-recorders.txt
  done
  r=$((r + 1))
done
run_ab none
exit 0
