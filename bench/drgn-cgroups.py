#!/usr/bin/python3
# The peer a kernel engineer would reach for: drgn (Debian's python3-drgn) reading the same per-container
# numbers Ciel reads -- cgroup v2 CPU usage (flushed bstat + per-CPU deltas not yet flushed, as the
# guest's cpu.stat would print after a flush) and memory usage (page_counter_read(&memcg->memory)) --
# from a QEMU dump of the guest (drgn 0.0.22 opens only paging=true dumps) with the kernel's DWARF.
# Prints one JSON object: start-up and per-sample times, peak RSS, and the values by Docker id.
import json, re, resource, sys, time

t_start = time.perf_counter()
import drgn
from drgn.helpers.linux.cgroup import cgroup_path, css_for_each_descendant_pre
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.percpu import per_cpu_ptr
t_import = time.perf_counter()

vmlinux, core, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20
prog = drgn.Program()
prog.set_core_dump(core)
prog.load_debug_info([vmlinux])
t_loaded = time.perf_counter()

DOCKER = re.compile(rb'docker[-/]([0-9a-f]{64})(?:\.scope)?$')
PAGE = 4096

def pending(cgrp):
    rc = cgrp.rstat_cpu
    s = 0
    for cpu in for_each_possible_cpu(prog):
        r = per_cpu_ptr(rc, cpu)
        s += r.bstat.cputime.sum_exec_runtime.value_() - r.last_bstat.cputime.sum_exec_runtime.value_()
    return s

def sample():
    root = prog['cgrp_dfl_root'].cgrp
    memory_id = prog.constant('memory_cgrp_id').value_()
    out = {}
    for css in css_for_each_descendant_pre(root.self.address_of_()):
        cgrp = css.cgroup
        m = DOCKER.search(cgroup_path(cgrp))
        if not m:
            continue
        # this cgroup's own part plus what each strict descendant still owes it
        cpu = cgrp.bstat.cputime.sum_exec_runtime.value_() + pending(cgrp)
        for d in css_for_each_descendant_pre(css):
            if d.value_() == css.value_():
                continue
            dc = d.cgroup
            cpu += pending(dc) + dc.bstat.cputime.sum_exec_runtime.value_() - dc.last_bstat.cputime.sum_exec_runtime.value_()
        mcss = cgrp.subsys[memory_id]
        mem = 0
        if mcss:
            memcg = drgn.container_of(mcss, 'struct mem_cgroup', 'css')
            mem = memcg.memory.usage.counter.value_() * PAGE
        out[m.group(1).decode()] = {'cpu_usage_ns': cpu, 'memory_usage_bytes': mem}
    return out

t0 = time.perf_counter()
first = sample()
t_first = time.perf_counter()
times = []
for _ in range(runs):
    a = time.perf_counter()
    sample()
    times.append((time.perf_counter() - a) * 1e3)
times.sort()
print(json.dumps({
    'drgn_version': drgn.__version__,
    'import_ms': round((t_import - t_start) * 1e3, 1),
    'load_ms': round((t_loaded - t_import) * 1e3, 1),
    'first_sample_ms': round((t_first - t0) * 1e3, 2),
    'sample_ms_median': round(times[len(times) // 2], 3),
    'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    'containers': first,
}))
