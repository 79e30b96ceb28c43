; rec = full ? NULL : &out[i]; if (rec) rec->x = v  -- NULL never points into guest memory, so the
; store is accepted; a load through the same phi still goes through g_map (NULL would be a contained fault)
define i64 @ciel_mon_rec(i64* %out, i64 %len, i64** %in) {
entry:
  %full = icmp ult i64 %len, 8
  br i1 %full, label %merge, label %room
room:
  %slot = getelementptr inbounds i64, i64* %out, i64 1
  br label %merge
merge:
  %rec = phi i64* [ null, %entry ], [ %slot, %room ]
  %isnull = icmp eq i64* %rec, null
  br i1 %isnull, label %done, label %write
write:
  %g = load i64*, i64** %in, align 8
  %v = load i64, i64* %g, align 8
  store i64 %v, i64* %rec, align 8
  %back = load i64, i64* %rec, align 8
  ret i64 %back
done:
  ret i64 0
}
