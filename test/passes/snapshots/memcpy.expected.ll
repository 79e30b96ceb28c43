
%struct.stats = type { [8 x i64] }

define void @ciel_mon_copy(%struct.stats* %out, i64 %len, %struct.stats** %in) {
  %g = load %struct.stats*, %struct.stats** %in, align 8
  %d = bitcast %struct.stats* %out to i8*
  %s = bitcast %struct.stats* %g to i8*
  %1 = call i8* @g_map(i8* %s, i64 64)
  call void @llvm.memcpy.p0i8.p0i8.i64(i8* align 8 %d, i8* align 8 %1, i64 64, i1 false)
  %n = trunc i64 %len to i32
  %2 = zext i32 %n to i64
  %3 = call i8* @g_map(i8* %s, i64 %2)
  call void @llvm.memmove.p0i8.p0i8.i32(i8* %d, i8* %3, i32 %n, i1 false)
  ret void
}

; Function Attrs: argmemonly nofree nounwind willreturn
declare void @llvm.memcpy.p0i8.p0i8.i64(i8* noalias nocapture writeonly, i8* noalias nocapture readonly, i64, i1 immarg) #0

; Function Attrs: argmemonly nofree nounwind willreturn
declare void @llvm.memmove.p0i8.p0i8.i32(i8* nocapture writeonly, i8* nocapture readonly, i32, i1 immarg) #0

declare i8* @g_map(i8*, i64)

attributes #0 = { argmemonly nofree nounwind willreturn }
