; `current` / this_cpu_read: gs-relative per-CPU access
define i64 @ciel_mon_bad() {
  %r = call i64 asm "movq %gs:pcpu_hot, $0", "=r,~{dirflag},~{fpsr},~{flags}"()
  ret i64 %r
}
