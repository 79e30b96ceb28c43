# Ground truth, read by the guest itself from cgroupfs and procfs. One framed JSON line per request:
#   CIEL-TRUTH-BEGIN {...} CIEL-TRUTH-END
# Input: /run/ctrs lines "name id cgroup-path pid". Variables: seq, mode (cgroup2|cgroup1).
function now_ns(   line, f, v) {
  # CLOCK_MONOTONIC in ns ("now at N nsecs" in /proc/timer_list); /proc/uptime as a fallback
  f = "/proc/timer_list"; v = ""
  while ((getline line < f) > 0) { if (line ~ /^now at /) { split(line, a, " "); v = a[3]; break } }
  close(f)
  if (v == "") { getline line < "/proc/uptime"; close("/proc/uptime"); split(line, a, " "); v = sprintf("%.0f", a[1] * 1e9) }
  return v
}
function one(f,   line, v) {
  v = "null"
  if ((getline line < f) > 0) { v = line + 0 }
  close(f)
  return v
}
# value of key in a "key value" file (memory.stat, cpu.stat)
function kv(f, key,   line, a, v) {
  v = "null"
  while ((getline line < f) > 0) { split(line, a, " "); if (a[1] == key) { v = a[2] + 0; break } }
  close(f)
  return v
}
# cgroup2 io.stat: sum of field over devices, e.g. "254:0 rbytes=1 wbytes=2 rios=..."
function iostat(f, field,   line, a, n, i, s, p) {
  s = 0
  while ((getline line < f) > 0) {
    n = split(line, a, " ")
    for (i = 2; i <= n; i++) { split(a[i], p, "="); if (p[1] == field) s += p[2] }
  }
  close(f)
  return s
}
# cgroup1 blkio.throttle.io_service_bytes: sum of "<dev> Read N" / "<dev> Write N" lines
function blkio(f, op,   line, a, s) {
  s = 0
  while ((getline line < f) > 0) { split(line, a, " "); if (a[2] == op) s += a[3] }
  close(f)
  return s
}
# /proc/<pid>/net/dev eth0: sets NET["rx_bytes"] etc.
function netdev(pid,   f, line, a, n) {
  NET["rx_bytes"] = "null"; NET["rx_packets"] = "null"; NET["tx_bytes"] = "null"; NET["tx_packets"] = "null"
  f = "/proc/" pid "/net/dev"
  while ((getline line < f) > 0) {
    if (line ~ /^ *eth0:/) {
      sub(/^ *eth0:/, "", line)
      n = split(line, a, " ")
      NET["rx_bytes"] = a[1] + 0; NET["rx_packets"] = a[2] + 0; NET["tx_bytes"] = a[9] + 0; NET["tx_packets"] = a[10] + 0
    }
  }
  close(f)
}
BEGIN { t0 = now_ns(); out = ""; sep = "" }
NF >= 4 {
  name = $1; id = $2; cg = $3; pid = $4
  s = "{\"name\":\"" name "\",\"id\":\"" id "\",\"cgroup\":\"" cg "\",\"pid\":" pid
  if (mode == "cgroup2") {
    d = "/sys/fs/cgroup" cg
    s = s ",\"cpu_usage_usec\":" kv(d "/cpu.stat", "usage_usec")
    s = s ",\"memory_current\":" one(d "/memory.current")
    s = s ",\"memory_anon\":" kv(d "/memory.stat", "anon") ",\"memory_file\":" kv(d "/memory.stat", "file")
    s = s ",\"memory_inactive_file\":" kv(d "/memory.stat", "inactive_file")
    s = s ",\"io_rbytes\":" iostat(d "/io.stat", "rbytes") ",\"io_wbytes\":" iostat(d "/io.stat", "wbytes")
    s = s ",\"pids_current\":" one(d "/pids.current")
  } else {
    d = "/sys/fs/cgroup"
    s = s ",\"cpuacct_usage\":" one(d "/cpu,cpuacct" cg "/cpuacct.usage")
    s = s ",\"memory_usage_in_bytes\":" one(d "/memory" cg "/memory.usage_in_bytes")
    s = s ",\"memory_rss\":" kv(d "/memory" cg "/memory.stat", "rss") ",\"memory_cache\":" kv(d "/memory" cg "/memory.stat", "cache")
    s = s ",\"memory_total_inactive_file\":" kv(d "/memory" cg "/memory.stat", "total_inactive_file")
    s = s ",\"blkio_read_bytes\":" blkio(d "/blkio" cg "/blkio.throttle.io_service_bytes", "Read")
    s = s ",\"blkio_write_bytes\":" blkio(d "/blkio" cg "/blkio.throttle.io_service_bytes", "Write")
    s = s ",\"pids_current\":" one(d "/pids" cg "/pids.current")
  }
  netdev(pid)
  s = s ",\"net_rx_bytes\":" NET["rx_bytes"] ",\"net_rx_packets\":" NET["rx_packets"]
  s = s ",\"net_tx_bytes\":" NET["tx_bytes"] ",\"net_tx_packets\":" NET["tx_packets"] "}"
  out = out sep s; sep = ","
}
END {
  t1 = now_ns()
  printf "CIEL-TRUTH-BEGIN {\"seq\":%s,\"mode\":\"%s\",\"t_start_ns\":%s,\"t_end_ns\":%s,\"containers\":[%s]} CIEL-TRUTH-END\n", seq + 0, mode, t0, t1, out
}
