#!/bin/sh
# Recording overhead on real workloads, every mode in ONE lab VM boot, from the host:
#   mbrec lab run -o OUT -- sh /mnt/src/bench/overhead.sh [AB_REQUESTS] [ROUNDS] [IPERF_SECONDS]
#   python3 bench/overhead_report.py OUT/overhead.jsonl
# apache2 and iperf3 on b, clients on a, no injected delay (the stacks, not the network, limit
# the rate). Each round runs every mode in turn, so slow drift of the emulated machine hits all
# modes alike (and the order rotates): none (no recorder), mbrec (all packet probes), flows (mbrec --probes flows),
# baseline (bench/microbpf_baseline.py: the same probes, one Python callback per event).
# One JSON line per workload run in OUT/overhead.jsonl, with the recorders' CPU, events, losses
# and peak RSS.
set -u
N=${1:-2000}
ROUNDS=${2:-4}  # 4: with the order rotating, every mode runs once in every position
T=${3:-5}
OUT=/mnt/out/overhead.jsonl
: >$OUT
HZ=$(getconf CLK_TCK)
# the kernel times every BPF program run (run_time_ns, run_cnt in each program fd's fdinfo):
# the recorders' in-kernel cost, per probe hit, for mbrec and the baseline alike
sysctl -qw kernel.bpf_stats_enabled=1
head -c 4096 /dev/urandom >/var/www/html/4k.bin
ip netns exec b sh -c '. /etc/apache2/envvars && mkdir -p $APACHE_RUN_DIR $APACHE_LOCK_DIR $APACHE_LOG_DIR && apache2 -k start'
ip netns exec b iperf3 -s -D
sleep 2
# warm up: TCG translates guest code on first use, and a cold first run measured 30 % slower
# than the same mode later in the boot; one unrecorded ab run of the full size and one iperf3
ip netns exec a ab -k -c 10 -n $N http://10.0.2.1/4k.bin >/dev/null 2>&1
ip netns exec a iperf3 -c 10.0.2.1 -t $T >/dev/null 2>&1

start_recorders() {  # $1 = mode
    for h in a b; do
        rm -f /tmp/ovh-$h.*
        case $1 in
        mbrec) python3 -m mbrec record -o /tmp/ovh-$h.mbrec --netns $h --host-name $h --quiet \
                   >/tmp/ovh-$h.log 2>&1 & ;;
        flows) python3 -m mbrec record -o /tmp/ovh-$h.mbrec --netns $h --host-name $h --quiet \
                   --probes flows >/tmp/ovh-$h.log 2>&1 & ;;
        baseline) python3 /mnt/src/bench/microbpf_baseline.py -o /tmp/ovh-$h.txt --netns $h \
                   >/tmp/ovh-$h.log 2>&1 & ;;
        esac
        eval "P$h=\$!"
    done
    i=0
    while [ $i -lt 900 ]; do
        if grep -q "recording on" /tmp/ovh-a.log && grep -q "recording on" /tmp/ovh-b.log; then
            C0a=$(cpu_s $Pa); C0b=$(cpu_s $Pb)  # compiling and attaching are not recording
            return
        fi
        sleep 1; i=$((i + 1))
    done
    echo "recorders did not start: $(cat /tmp/ovh-a.log /tmp/ovh-b.log)" >&2
}

cpu_s() {  # user + system CPU seconds of process $1
    awk -v hz=$HZ '{printf "%.3f", ($14 + $15) / hz}' /proc/$1/stat
}

bpf_stats() {  # "run_ns runs" summed over the BPF programs process $1 holds open
    for fd in /proc/$1/fd/*; do
        [ "$(readlink $fd)" = "anon_inode:bpf-prog" ] && cat /proc/$1/fdinfo/${fd##*/}
    done | awk '/^run_time_ns:/ {t += $2} /^run_cnt:/ {n += $2} END {printf "%.0f %.0f", t, n}  # %d: mawk clamps at 2^31 - 1'
}

recorder_json() {  # $1 = mode, $2 = host, $3 = pid, $4 = CPU at start: the recording's CPU
    # seconds (user space, from start of recording to exit), BPF run time and runs, events,
    # lost, peak RSS
    p=$3
    set -- "$1" "$2" "$3" "$4" $(bpf_stats $p)
    rss=$(awk '/VmHWM/ {print $2}' /proc/$p/status)
    kill -INT $p
    # a zombie still shows its final CPU times: read them before reaping it
    while [ "$(awk '{print $3}' /proc/$p/stat)" != Z ]; do sleep 0.2; done
    cpu=$(awk -v hz=$HZ -v c0=$4 '{printf "%.3f", ($14 + $15) / hz - c0}' /proc/$p/stat)
    wait $p
    common="'cpu_s': $cpu, 'bpf_run_ns': $5, 'bpf_runs': $6, 'rss_kb': ${rss:-0}"
    if [ "$1" = baseline ]; then
        tail -n 1 /tmp/ovh-$2.log | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({$common, 'events': d['events'], 'lost': d['lost'], 'file_bytes': __import__('os').path.getsize('/tmp/ovh-$2.txt')}))"
    else
        python3 -m mbrec info --json /tmp/ovh-$2.mbrec | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({$common, 'events': d['events_total'], 'lost': d['lost_total'], 'file_bytes': d['file_size']}))"
    fi
}

run_ab() {  # $1 = mode, $2 = round
    ip netns exec a ab -k -c 10 -n $N http://10.0.2.1/4k.bin >/tmp/ab.out 2>&1
    rps=$(awk '/^Requests per second/ {print $4}' /tmp/ab.out)
    tpr=$(awk '/^Time per request/ && /mean\)$/ {print $4; exit}' /tmp/ab.out)
    p50=$(awk '/^  50%/ {print $2}' /tmp/ab.out)
    p99=$(awk '/^  99%/ {print $2}' /tmp/ab.out)
    echo "\"workload\": \"ab\", \"mode\": \"$1\", \"round\": $2, \"requests\": $N, \"rps\": ${rps:-null}, \"mean_ms\": ${tpr:-null}, \"p50_ms\": ${p50:-null}, \"p99_ms\": ${p99:-null}"
}

run_iperf() {  # $1 = mode, $2 = round
    bps=$(ip netns exec a iperf3 -J -c 10.0.2.1 -t $T 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['end']['sum_received']['bits_per_second'])" 2>/dev/null)
    echo "\"workload\": \"iperf3\", \"mode\": \"$1\", \"round\": $2, \"seconds\": $T, \"bits_per_second\": ${bps:-null}"
}

r=0
while [ $r -lt $ROUNDS ]; do
    # rotate the order each round, so no mode always runs first or after the same mode
    set -- none mbrec flows baseline
    i=0
    while [ $i -lt $((r % 4)) ]; do set -- "$@" "$1"; shift; i=$((i + 1)); done
    for mode in "$@"; do
        [ $mode = none ] || start_recorders $mode
        ab=$(run_ab $mode $r)
        ip=$(run_iperf $mode $r)
        if [ $mode = none ]; then
            echo "{$ab}" >>$OUT; echo "{$ip}" >>$OUT
        else
            ra=$(recorder_json $mode a $Pa $C0a); rb=$(recorder_json $mode b $Pb $C0b)
            # both workloads ran under one recording: its costs are reported with the ab line
            echo "{$ab, \"recorder_a\": $ra, \"recorder_b\": $rb}" >>$OUT
            echo "{$ip}" >>$OUT
        fi
    done
    r=$((r + 1))
done
exit 0
