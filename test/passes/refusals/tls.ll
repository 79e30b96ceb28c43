@cpu_tls = external thread_local global i64
define i64 @ciel_mon_bad() {
  %v = load i64, i64* @cpu_tls, align 8
  ret i64 %v
}
