; a per-CPU read expressed as an address-space-256 (gs) pointer
define i64 @ciel_mon_bad() {
  %v = load i64, i64 addrspace(256)* inttoptr (i64 16 to i64 addrspace(256)*), align 8
  ret i64 %v
}
