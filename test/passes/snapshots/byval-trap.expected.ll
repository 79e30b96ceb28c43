
%struct.pair = type { i64, i64 }

define internal i64 @sum(%struct.pair* byval(%struct.pair) align 8 %p) {
  %a.p = getelementptr inbounds %struct.pair, %struct.pair* %p, i64 0, i32 0
  %a = load i64, i64* %a.p, align 8
  ret i64 %a
}

define i64 @ciel_mon_byval(i8* %out, i64 %len, %struct.pair** %in) {
  %g = load %struct.pair*, %struct.pair** %in, align 8
  %1 = bitcast %struct.pair* %g to i8*
  %2 = call i8* @g_map(i8* %1, i64 16)
  %3 = bitcast i8* %2 to %struct.pair*
  %r = call i64 @sum(%struct.pair* byval(%struct.pair) align 8 %3)
  %bad = icmp eq i64 %r, 0
  br i1 %bad, label %trap, label %ok

trap:                                             ; preds = %0
  call void @ciel_trap()
  unreachable

ok:                                               ; preds = %0
  ret i64 %r
}

; Function Attrs: cold noreturn nounwind
declare void @llvm.trap() #0

declare i8* @g_map(i8*, i64)

declare void @ciel_trap()

attributes #0 = { cold noreturn nounwind }
