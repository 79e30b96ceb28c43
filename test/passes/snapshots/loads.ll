; plain, volatile and atomic loads through a guest pointer; a load with align 1 (may cross a page)
%struct.task = type { i64, i32, [16 x i8] }

define i64 @ciel_mon_loads(i8* %out, i64 %len, %struct.task** %in) {
  %t = load %struct.task*, %struct.task** %in, align 8
  %pid.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 0
  %pid = load i64, i64* %pid.p, align 8
  %fl.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 1
  %fl = load volatile i32, i32* %fl.p, align 4
  %at = load atomic i64, i64* %pid.p acquire, align 8
  %c.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 2, i64 5
  %c64.p = bitcast i8* %c.p to i64*
  %unaligned = load i64, i64* %c64.p, align 1
  %fl64 = zext i32 %fl to i64
  %s1 = add i64 %pid, %fl64
  %s2 = add i64 %s1, %at
  %s3 = add i64 %s2, %unaligned
  ret i64 %s3
}

; internal helper whose argument is a guest pointer at its only call site
define internal i64 @read_next(i64** %p) {
  %v = load i64*, i64** %p, align 8
  %w = load i64, i64* %v, align 8
  ret i64 %w
}

define i64 @ciel_mon_chain(i8* %out, i64 %len, i64*** %in) {
  %g = load i64**, i64*** %in, align 8
  %r = call i64 @read_next(i64** %g)
  ret i64 %r
}
