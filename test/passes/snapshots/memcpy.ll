; a struct copy from guest memory (llvm.memcpy, constant and variable length) and a memmove
%struct.stats = type { [8 x i64] }

define void @ciel_mon_copy(%struct.stats* %out, i64 %len, %struct.stats** %in) {
  %g = load %struct.stats*, %struct.stats** %in, align 8
  %d = bitcast %struct.stats* %out to i8*
  %s = bitcast %struct.stats* %g to i8*
  call void @llvm.memcpy.p0i8.p0i8.i64(i8* align 8 %d, i8* align 8 %s, i64 64, i1 false)
  %n = trunc i64 %len to i32
  call void @llvm.memmove.p0i8.p0i8.i32(i8* %d, i8* %s, i32 %n, i1 false)
  ret void
}

declare void @llvm.memcpy.p0i8.p0i8.i64(i8*, i8*, i64, i1)
declare void @llvm.memmove.p0i8.p0i8.i32(i8*, i8*, i32, i1)
