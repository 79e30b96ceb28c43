define <4 x i64> @ciel_mon_bad(<4 x i64>* %p) {
  %v = call <4 x i64> @llvm.masked.load.v4i64.p0v4i64(<4 x i64>* %p, i32 8, <4 x i1> <i1 true, i1 true, i1 false, i1 false>, <4 x i64> zeroinitializer)
  ret <4 x i64> %v
}
declare <4 x i64> @llvm.masked.load.v4i64.p0v4i64(<4 x i64>*, i32, <4 x i1>, <4 x i64>)
