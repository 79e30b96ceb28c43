
%struct.task = type { i64, i32, [16 x i8] }

@ciel_budget = external hidden global i64

define i64 @ciel_mon_loads(i8* %out, i64 %len, %struct.task** %in) {
  %ciel.budget = alloca i64, align 8
  %1 = load i64, i64* @ciel_budget, align 8
  store i64 %1, i64* %ciel.budget, align 8
  %t = load %struct.task*, %struct.task** %in, align 8
  %pid.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 0
  %2 = bitcast i64* %pid.p to i8*
  %3 = call i8* @g_map(i8* %2, i64 8, i64* %ciel.budget)
  %4 = bitcast i8* %3 to i64*
  %pid = load i64, i64* %4, align 8
  %fl.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 1
  %5 = bitcast i32* %fl.p to i8*
  %6 = call i8* @g_map(i8* %5, i64 4, i64* %ciel.budget)
  %7 = bitcast i8* %6 to i32*
  %fl = load volatile i32, i32* %7, align 4
  %8 = bitcast i64* %pid.p to i8*
  %9 = call i8* @g_map(i8* %8, i64 8, i64* %ciel.budget)
  %10 = bitcast i8* %9 to i64*
  %at = load atomic i64, i64* %10 acquire, align 8
  %c.p = getelementptr inbounds %struct.task, %struct.task* %t, i64 0, i32 2, i64 5
  %c64.p = bitcast i8* %c.p to i64*
  %11 = bitcast i64* %c64.p to i8*
  %12 = call i8* @g_map(i8* %11, i64 8, i64* %ciel.budget)
  %13 = bitcast i8* %12 to i64*
  %unaligned = load i64, i64* %13, align 1
  %fl64 = zext i32 %fl to i64
  %s1 = add i64 %pid, %fl64
  %s2 = add i64 %s1, %at
  %s3 = add i64 %s2, %unaligned
  %14 = load i64, i64* %ciel.budget, align 8
  store i64 %14, i64* @ciel_budget, align 8
  ret i64 %s3
}

define internal i64 @read_next(i64** %p) {
  %ciel.budget = alloca i64, align 8
  %1 = load i64, i64* @ciel_budget, align 8
  store i64 %1, i64* %ciel.budget, align 8
  %2 = bitcast i64** %p to i8*
  %3 = call i8* @g_map(i8* %2, i64 8, i64* %ciel.budget)
  %4 = bitcast i8* %3 to i64**
  %v = load i64*, i64** %4, align 8
  %5 = bitcast i64* %v to i8*
  %6 = call i8* @g_map(i8* %5, i64 8, i64* %ciel.budget)
  %7 = bitcast i8* %6 to i64*
  %w = load i64, i64* %7, align 8
  %8 = load i64, i64* %ciel.budget, align 8
  store i64 %8, i64* @ciel_budget, align 8
  ret i64 %w
}

define i64 @ciel_mon_chain(i8* %out, i64 %len, i64*** %in) {
  %g = load i64**, i64*** %in, align 8
  %r = call i64 @read_next(i64** %g)
  ret i64 %r
}

declare i8* @g_map(i8*, i64, i64*)
