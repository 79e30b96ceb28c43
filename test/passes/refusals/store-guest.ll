define void @ciel_mon_bad(i64** %in) {
  %g = load i64*, i64** %in, align 8
  store i64 1, i64* %g, align 8
  ret void
}
