; kernel symbols: a PHI of two external globals, constant-expression GEP / ptrtoint arithmetic over
; one, a per-CPU style offset, and an external function used as a value (compared, never called)
%struct.list_head = type { %struct.list_head*, %struct.list_head* }
%struct.cgroup_root = type { i64, %struct.list_head }

@cgrp_dfl_root = external global %struct.cgroup_root, align 8
@init_css_set = external global %struct.list_head, align 8
@runqueues = external global [64 x i8], align 64
@__per_cpu_offset = external global [8192 x i64], align 16
declare void @mem_cgroup_css_alloc()

define i64 @ciel_mon_globals(i64* %out, i64 %len, i8* %in, i64 %inlen) {
entry:
  %c = icmp eq i64 %len, 0
  br i1 %c, label %a, label %b
a:
  br label %join
b:
  br label %join
join:
  %h = phi %struct.list_head* [ getelementptr inbounds (%struct.cgroup_root, %struct.cgroup_root* @cgrp_dfl_root, i64 0, i32 1), %a ], [ @init_css_set, %b ]
  %nx.p = getelementptr inbounds %struct.list_head, %struct.list_head* %h, i64 0, i32 0
  %nx = load %struct.list_head*, %struct.list_head** %nx.p, align 8
  %off.p = getelementptr inbounds [8192 x i64], [8192 x i64]* @__per_cpu_offset, i64 0, i64 1
  %off = load i64, i64* %off.p, align 8
  %rq = add i64 %off, ptrtoint ([64 x i8]* @runqueues to i64)
  %rq.p = inttoptr i64 %rq to i64*
  %rqv = load i64, i64* %rq.p, align 8
  %fn = ptrtoint void ()* @mem_cgroup_css_alloc to i64
  %same = icmp eq i64 %fn, %rqv
  %sv = zext i1 %same to i64
  %nxi = ptrtoint %struct.list_head* %nx to i64
  %r = add i64 %nxi, %sv
  store i64 %r, i64* %out, align 8
  ret i64 %r
}
