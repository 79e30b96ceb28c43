; an out-of-line kernel function (and libc strlen) cannot run here
declare i8* @css_next_descendant_pre(i8*, i8*)
declare i64 @strlen(i8*)
define i64 @ciel_mon_bad(i8* %a) {
  %n = call i8* @css_next_descendant_pre(i8* null, i8* %a)
  %l = call i64 @strlen(i8* %n)
  ret i64 %l
}
