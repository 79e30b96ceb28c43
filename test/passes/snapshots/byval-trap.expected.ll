
%struct.pair = type { i64, i64 }

@ciel_budget = external hidden global i64

define internal i64 @sum(%struct.pair* byval(%struct.pair) align 8 %p) {
  %a.p = getelementptr inbounds %struct.pair, %struct.pair* %p, i64 0, i32 0
  %a = load i64, i64* %a.p, align 8
  ret i64 %a
}

define i64 @ciel_mon_byval(i8* %out, i64 %len, %struct.pair** %in) {
  %ciel.budget = alloca i64, align 8
  %1 = load i64, i64* @ciel_budget, align 8
  store i64 %1, i64* %ciel.budget, align 8
  %g = load %struct.pair*, %struct.pair** %in, align 8
  %2 = bitcast %struct.pair* %g to i8*
  %3 = call i8* @g_map(i8* %2, i64 16, i64* %ciel.budget)
  %4 = bitcast i8* %3 to %struct.pair*
  %5 = load i64, i64* %ciel.budget, align 8
  store i64 %5, i64* @ciel_budget, align 8
  %r = call i64 @sum(%struct.pair* byval(%struct.pair) align 8 %4)
  %6 = load i64, i64* @ciel_budget, align 8
  store i64 %6, i64* %ciel.budget, align 8
  %bad = icmp eq i64 %r, 0
  br i1 %bad, label %trap, label %ok

trap:                                             ; preds = %0
  call void @ciel_trap()
  unreachable

ok:                                               ; preds = %0
  %7 = load i64, i64* %ciel.budget, align 8
  store i64 %7, i64* @ciel_budget, align 8
  ret i64 %r
}

; Function Attrs: cold noreturn nounwind
declare void @llvm.trap() #0

declare i8* @g_map(i8*, i64, i64*)

declare void @ciel_trap()

attributes #0 = { cold noreturn nounwind }
