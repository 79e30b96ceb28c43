; test_bit with a variable bit: `bt` with a memory operand reads guest memory inside asm
define i1 @ciel_mon_bad(i64* %addr, i64 %nr) {
  %r = call i8 asm "btq $2,$1", "={@ccc},*m,Ir,~{dirflag},~{fpsr},~{flags}"(i64* elementtype(i64) %addr, i64 %nr)
  %b = trunc i8 %r to i1
  ret i1 %b
}
