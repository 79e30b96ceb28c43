; a static key (asm goto + __jump_table)
define i64 @ciel_mon_bad() {
entry:
  callbr void asm sideeffect "1: jmp ${0:l}\0A.pushsection __jump_table", "X,~{dirflag},~{fpsr},~{flags}"(i8* blockaddress(@ciel_mon_bad, %yes))
          to label %no [label %yes]
no:
  ret i64 0
yes:
  ret i64 1
}
