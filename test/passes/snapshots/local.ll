; loads that are provably monitor-local: alloca, the module's own globals, entry arguments, phi/select of them
@table = internal global [4 x i64] [i64 1, i64 2, i64 3, i64 4], align 16

define i64 @ciel_mon_local(i64* %out, i64 %n, i1 %c) {
entry:
  %buf = alloca [8 x i64], align 16
  %b0 = getelementptr inbounds [8 x i64], [8 x i64]* %buf, i64 0, i64 0
  store i64 7, i64* %b0, align 8
  br label %loop
loop:
  %p = phi i64* [ %b0, %entry ], [ %p.next, %loop ]
  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]
  %v = load i64, i64* %p, align 8
  %p.next = getelementptr inbounds i64, i64* %p, i64 1
  %i.next = add i64 %i, 1
  %done = icmp eq i64 %i.next, 4
  br i1 %done, label %exit, label %loop
exit:
  %t = getelementptr inbounds [4 x i64], [4 x i64]* @table, i64 0, i64 2
  %sel = select i1 %c, i64* %t, i64* %out
  %w = load i64, i64* %sel, align 8
  %o = load i64, i64* %out, align 8
  %s = add i64 %v, %w
  %s2 = add i64 %s, %o
  store i64 %s2, i64* %out, align 8
  ret i64 %s2
}
