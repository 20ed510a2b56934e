#!/bin/sh
# Runs inside the lab guest: mbrec lab run -o OUT -- sh /mnt/src/tests/lab/record_signals.sh
# Three recorders at once: a (kprobes) is stopped with SIGINT, b (fentry) is killed with
# SIGKILL, s (b's namespace, port 8080, --sample 2) is stopped with SIGINT; HTTP traffic from a
# to b in between. tests/lab/test_record_lab.py checks the results.
set -u
OUT=/mnt/out
REC=/tmp/rec
mkdir -p $REC
# first, without recording: can this kernel record, and how (tests/test_record_check.py)
python3 -m mbrec record --check --json >$OUT/check.json 2>$OUT/check.err
echo $? >$OUT/check.rc
ip netns exec b python3 -m http.server 8080 --bind 10.0.2.1 >/dev/null 2>&1 &
SRV=$!
python3 -m mbrec record -o $REC/a.mbrec --netns a --host-name a --attach kprobe --quiet \
    >$OUT/rec-a.log 2>&1 &
A=$!
python3 -m mbrec record -o $REC/s.mbrec --netns b --host-name s --port 8080 --sample 2 --quiet \
    >$OUT/rec-s.log 2>&1 &
S=$!
python3 -m mbrec record -o $REC/b.mbrec --netns b --host-name b --quiet >$OUT/rec-b.log 2>&1 &
B=$!
i=0  # both print "recording" once attached (BCC compiles for a while under TCG)
while [ $i -lt 600 ]; do
    grep -q "recording on" $OUT/rec-a.log && grep -q "recording on" $OUT/rec-b.log &&
        grep -q "recording on" $OUT/rec-s.log && break
    kill -0 $A 2>/dev/null || break
    kill -0 $B 2>/dev/null || break
    sleep 1; i=$((i + 1))
done
echo "ready after $i s" >$OUT/signals.txt
ip netns exec a ab -n 200 -c 4 http://10.0.2.1:8080/ >$OUT/ab.out 2>&1
sleep 2  # several 200 ms frames and a 1 s clock anchor go by
kill -KILL $B
kill -INT $A $S
wait $A; echo "a rc $?" >>$OUT/signals.txt
wait $S; echo "s rc $?" >>$OUT/signals.txt
wait $B; echo "b rc $?" >>$OUT/signals.txt
cp $REC/a.mbrec $REC/b.mbrec $REC/s.mbrec $OUT/ 2>>$OUT/signals.txt
kill $SRV 2>/dev/null
exit 0
