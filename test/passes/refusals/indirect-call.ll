; a guest function pointer (ndo_get_stats64) can never be called
define i64 @ciel_mon_bad(i64 ()** %ops) {
  %fp = load i64 ()*, i64 ()** %ops, align 8
  %r = call i64 %fp()
  ret i64 %r
}
