; a byval argument read from guest memory, and llvm.trap (becomes a contained runtime error)
%struct.pair = type { i64, i64 }

define internal i64 @sum(%struct.pair* byval(%struct.pair) align 8 %p) {
  %a.p = getelementptr inbounds %struct.pair, %struct.pair* %p, i64 0, i32 0
  %a = load i64, i64* %a.p, align 8
  ret i64 %a
}

define i64 @ciel_mon_byval(i8* %out, i64 %len, %struct.pair** %in) {
  %g = load %struct.pair*, %struct.pair** %in, align 8
  %r = call i64 @sum(%struct.pair* byval(%struct.pair) align 8 %g)
  %bad = icmp eq i64 %r, 0
  br i1 %bad, label %trap, label %ok
trap:
  call void @llvm.trap()
  unreachable
ok:
  ret i64 %r
}

declare void @llvm.trap()
