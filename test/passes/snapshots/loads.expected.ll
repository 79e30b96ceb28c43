
%struct.task = type { i64, i32, [16 x i8] }

define i64 @ciel_mon_loads(i8* %out, i64 %len, %struct.task** %in) {
  %t = load %struct.task*, %struct.task** %in, align 8
  %pid.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 0
  %1 = bitcast i64* %pid.p to i8*
  %2 = call i8* @g_map(i8* %1, i64 8)
  %3 = bitcast i8* %2 to i64*
  %pid = load i64, i64* %3, align 8
  %fl.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 1
  %4 = bitcast i32* %fl.p to i8*
  %5 = call i8* @g_map(i8* %4, i64 4)
  %6 = bitcast i8* %5 to i32*
  %fl = load volatile i32, i32* %6, align 4
  %7 = bitcast i64* %pid.p to i8*
  %8 = call i8* @g_map(i8* %7, i64 8)
  %9 = bitcast i8* %8 to i64*
  %at = load atomic i64, i64* %9 acquire, align 8
  %c.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 2, i64 5
  %c64.p = bitcast i8* %c.p to i64*
  %10 = bitcast i64* %c64.p to i8*
  %11 = call i8* @g_map(i8* %10, i64 8)
  %12 = bitcast i8* %11 to i64*
  %unaligned = load i64, i64* %12, align 1
  %fl64 = zext i32 %fl to i64
  %s1 = add i64 %pid, %fl64
  %s2 = add i64 %s1, %at
  %s3 = add i64 %s2, %unaligned
  ret i64 %s3
}

define internal i64 @read_next(i64** %p) {
  %1 = bitcast i64** %p to i8*
  %2 = call i8* @g_map(i8* %1, i64 8)
  %3 = bitcast i8* %2 to i64**
  %v = load i64*, i64** %3, align 8
  %4 = bitcast i64* %v to i8*
  %5 = call i8* @g_map(i8* %4, i64 8)
  %6 = bitcast i8* %5 to i64*
  %w = load i64, i64* %6, align 8
  ret i64 %w
}

define i64 @ciel_mon_chain(i8* %out, i64 %len, i64*** %in) {
  %g = load i64**, i64*** %in, align 8
  %r = call i64 @read_next(i64** %g)
  ret i64 %r
}

declare i8* @g_map(i8*, i64)
