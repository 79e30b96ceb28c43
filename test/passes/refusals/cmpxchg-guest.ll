define i64 @ciel_mon_bad(i64** %in) {
  %g = load i64*, i64** %in, align 8
  %r = cmpxchg i64* %g, i64 0, i64 1 seq_cst seq_cst
  %v = extractvalue { i64, i1 } %r, 0
  ret i64 %v
}
