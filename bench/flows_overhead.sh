#!/bin/sh
# Overhead of the flows probe group alone, in one lab VM boot (ratios in the same boot only):
#   mbrec lab run -o OUT -- sh /mnt/src/bench/flows_overhead.sh
# For bulk (iperf3 a->b, 5 s) and ab (apache2 on b, ab -k -c 10): a baseline without recording,
# then the same with `mbrec record --probes flows` (default --flow-sample 1, --flow-interval 1)
# on both namespaces, then with --flow-sample 0 (periodic/close/stop records only), then a
# second baseline. Results: OUT/flows-overhead.json (bench/flows_overhead_report.py reads it).
set -u
OUT=/mnt/out
B=10.0.2.1
N=${AB_N:-2000}
ip netns exec b iperf3 -s -D
mkdir -p /var/www/html && head -c 4096 /dev/urandom > /var/www/html/4k.bin
ip netns exec b sh -c '. /etc/apache2/envvars && mkdir -p $APACHE_RUN_DIR $APACHE_LOCK_DIR $APACHE_LOG_DIR && apache2 -k start'
sleep 2

runs() {  # $1 = label
	ip netns exec a iperf3 -J -c $B -t 5 > $OUT/bulk-$1.json 2>&1
	ip netns exec a ab -k -c 10 -n $N http://$B/4k.bin > $OUT/ab-$1.txt 2>&1
}

record() {  # $1 = label, rest = extra mbrec record options
	label=$1; shift
	rm -f /tmp/$label.mbrec
	python3 -m mbrec record -o /tmp/$label.mbrec --probes flows --netns a --netns b --quiet "$@" \
		> $OUT/record-$label.log 2>&1 &
	pid=$!
	i=0
	while [ ! -s /tmp/$label.mbrec ] && [ $i -lt 1800 ]; do sleep 1; i=$((i + 1)); done
	runs $label
	kill -INT $pid
	wait $pid
	cp /tmp/$label.mbrec $OUT/
}

runs base1
record flows
record flows-sample0 --flow-sample 0
runs base2
python3 - <<'PY'
import json, re
out = {}
for label in ("base1", "flows", "flows-sample0", "base2"):
    bulk = json.load(open(f"/mnt/out/bulk-{label}.json"))
    ab = open(f"/mnt/out/ab-{label}.txt").read()
    rps = re.search(r"Requests per second:\s+([\d.]+)", ab)
    tpr = re.search(r"Time per request:\s+([\d.]+) \[ms\] \(mean\)", ab)
    out[label] = {"bulk_bps": bulk["end"]["sum_received"]["bits_per_second"],
                  "ab_rps": float(rps.group(1)) if rps else None,
                  "ab_ms_per_request": float(tpr.group(1)) if tpr else None}
json.dump(out, open("/mnt/out/flows-overhead.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PY
