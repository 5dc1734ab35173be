# Sourced (not run) by a committed run's run.sh, with `out` set to its folder: waits at most 5 min for three
# 2-second windows in a row with the CPUs at least 90% idle, then records how quiet it was (idle.txt), logs the
# load average every 10 s while the run lasts (load.log), and writes load-before.txt, commit.txt and env.txt.
# A run.sh that needs its own cleanup on exit calls `quiet_logger_stop` from its trap.
: "${out:?set out to the folder of the run before sourcing quiet_start.sh}"
cpu_idle() {  # percent idle over 2 s
  local a b t=0 i
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  for i in 1 2 3 4 5 6 7 8; do t=$((t + b[i] - a[i])); done
  echo $((100 * (b[4] - a[4]) / t))
}
ok=0
for _ in $(seq 150); do
  idle=$(cpu_idle)
  if [ "$idle" -ge 90 ]; then ok=$((ok + 1)); else ok=0; fi
  [ "$ok" -ge 3 ] && break
done
echo "$(date -u +%FT%TZ) started; last 2 s window ${idle}% idle, ${ok} quiet windows in a row" > "$out/idle.txt"
( while true; do echo "$(date -u +%FT%TZ) $(cat /proc/loadavg)"; sleep 10; done ) > "$out/load.log" &
quiet_logger=$!
quiet_logger_stop() { kill "$quiet_logger" 2>/dev/null || true; }
trap quiet_logger_stop EXIT
{ date -u; uptime; top -bn1 | head -15; } > "$out/load-before.txt"
git rev-parse HEAD > "$out/commit.txt"
costbench env > "$out/env.txt"
