@counter = external global i64
define i64 @ciel_mon_bad() {
  %o = atomicrmw add i64* @counter, i64 1 seq_cst
  ret i64 %o
}
