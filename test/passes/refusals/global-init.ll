@init_task = external global i8
@my_ptr = global i8* @init_task
define i8* @ciel_mon_bad() {
  %v = load i8*, i8** @my_ptr, align 8
  ret i8* %v
}
