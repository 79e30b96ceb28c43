
@ciel_budget = external hidden global i64

define i64 @ciel_mon_rec(i64* %out, i64 %len, i64** %in) {
entry:
  %ciel.budget = alloca i64, align 8
  %0 = load i64, i64* @ciel_budget, align 8
  store i64 %0, i64* %ciel.budget, align 8
  %full = icmp ult i64 %len, 8
  br i1 %full, label %merge, label %room

room:                                             ; preds = %entry
  %slot = getelementptr inbounds i64, i64* %out, i64 1
  br label %merge

merge:                                            ; preds = %room, %entry
  %rec = phi i64* [ null, %entry ], [ %slot, %room ]
  %isnull = icmp eq i64* %rec, null
  br i1 %isnull, label %done, label %write

write:                                            ; preds = %merge
  %g = load i64*, i64** %in, align 8
  %1 = bitcast i64* %g to i8*
  %2 = call i8* @g_map(i8* %1, i64 8, i64* %ciel.budget)
  %3 = bitcast i8* %2 to i64*
  %v = load i64, i64* %3, align 8
  store i64 %v, i64* %rec, align 8
  %4 = bitcast i64* %rec to i8*
  %5 = call i8* @g_map(i8* %4, i64 8, i64* %ciel.budget)
  %6 = bitcast i8* %5 to i64*
  %back = load i64, i64* %6, align 8
  %7 = load i64, i64* %ciel.budget, align 8
  store i64 %7, i64* @ciel_budget, align 8
  ret i64 %back

done:                                             ; preds = %merge
  %8 = load i64, i64* %ciel.budget, align 8
  store i64 %8, i64* @ciel_budget, align 8
  ret i64 0
}

declare i8* @g_map(i8*, i64, i64*)
