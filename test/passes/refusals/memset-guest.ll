@kbuf = external global [64 x i8]
define void @ciel_mon_bad() {
  call void @llvm.memset.p0i8.i64(i8* getelementptr ([64 x i8], [64 x i8]* @kbuf, i64 0, i64 0), i8 0, i64 64, i1 false)
  ret void
}
declare void @llvm.memset.p0i8.i64(i8*, i8, i64, i1)
