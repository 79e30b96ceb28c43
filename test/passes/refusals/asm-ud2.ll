; BUG(): ud2 would be SIGILL in the host process
define void @ciel_mon_bad() {
  call void asm sideeffect "ud2", "~{dirflag},~{fpsr},~{flags}"()
  ret void
}
