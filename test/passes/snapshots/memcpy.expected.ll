
%struct.stats = type { [8 x i64] }

@ciel_budget = external hidden global i64

define void @ciel_mon_copy(%struct.stats* %out, i64 %len, %struct.stats** %in) {
  %ciel.budget = alloca i64, align 8
  %1 = load i64, i64* @ciel_budget, align 8
  store i64 %1, i64* %ciel.budget, align 8
  %g = load %struct.stats*, %struct.stats** %in, align 8
  %d = bitcast %struct.stats* %out to i8*
  %s = bitcast %struct.stats* %g to i8*
  %2 = call i8* @g_map(i8* %s, i64 64, i64* %ciel.budget)
  call void @llvm.memcpy.p0i8.p0i8.i64(i8* align 8 %d, i8* align 8 %2, i64 64, i1 false)
  %n = trunc i64 %len to i32
  %3 = zext i32 %n to i64
  %4 = call i8* @g_map(i8* %s, i64 %3, i64* %ciel.budget)
  call void @llvm.memmove.p0i8.p0i8.i32(i8* %d, i8* %4, i32 %n, i1 false)
  %5 = load i64, i64* %ciel.budget, align 8
  store i64 %5, i64* @ciel_budget, align 8
  ret void
}

; Function Attrs: argmemonly nofree nounwind willreturn
declare void @llvm.memcpy.p0i8.p0i8.i64(i8* noalias nocapture writeonly, i8* noalias nocapture readonly, i64, i1 immarg) #0

; Function Attrs: argmemonly nofree nounwind willreturn
declare void @llvm.memmove.p0i8.p0i8.i32(i8* nocapture writeonly, i8* nocapture readonly, i32, i1 immarg) #0

declare i8* @g_map(i8*, i64, i64*)

attributes #0 = { argmemonly nofree nounwind willreturn }
