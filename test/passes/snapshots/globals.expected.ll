
%struct.cgroup_root = type { i64, %struct.list_head }
%struct.list_head = type { %struct.list_head*, %struct.list_head* }

@cgrp_dfl_root = external global %struct.cgroup_root, align 8
@runqueues = external global [64 x i8], align 64
@__ciel_slots = global [5 x i64] zeroinitializer, align 64
@__ciel_slot_names = constant [75 x i8] c"cgrp_dfl_root\00init_css_set\00runqueues\00__per_cpu_offset\00mem_cgroup_css_alloc\00"
@ciel_budget = external hidden global i64

define i64 @ciel_mon_globals(i64* %out, i64 %len, i8* %in, i64 %inlen) {
entry:
  %ciel.budget = alloca i64, align 8
  %0 = load i64, i64* @ciel_budget, align 8
  store i64 %0, i64* %ciel.budget, align 8
  %cgrp_dfl_root.slot = load i64, i64* getelementptr inbounds ([5 x i64], [5 x i64]* @__ciel_slots, i64 0, i64 0), align 8
  %cgrp_dfl_root.reloc = inttoptr i64 %cgrp_dfl_root.slot to %struct.cgroup_root*
  %init_css_set.slot = load i64, i64* getelementptr inbounds ([5 x i64], [5 x i64]* @__ciel_slots, i64 0, i64 1), align 8
  %init_css_set.reloc = inttoptr i64 %init_css_set.slot to %struct.list_head*
  %__per_cpu_offset.slot = load i64, i64* getelementptr inbounds ([5 x i64], [5 x i64]* @__ciel_slots, i64 0, i64 3), align 8
  %__per_cpu_offset.reloc = inttoptr i64 %__per_cpu_offset.slot to [8192 x i64]*
  %runqueues.slot = load i64, i64* getelementptr inbounds ([5 x i64], [5 x i64]* @__ciel_slots, i64 0, i64 2), align 8
  %runqueues.reloc = inttoptr i64 %runqueues.slot to [64 x i8]*
  %mem_cgroup_css_alloc.slot = load i64, i64* getelementptr inbounds ([5 x i64], [5 x i64]* @__ciel_slots, i64 0, i64 4), align 8
  %mem_cgroup_css_alloc.reloc = inttoptr i64 %mem_cgroup_css_alloc.slot to void ()*
  %c = icmp eq i64 %len, 0
  br i1 %c, label %a, label %b

a:                                                ; preds = %entry
  %1 = getelementptr inbounds %struct.cgroup_root, %struct.cgroup_root* %cgrp_dfl_root.reloc, i64 0, i32 1
  br label %join

b:                                                ; preds = %entry
  br label %join

join:                                             ; preds = %b, %a
  %h = phi %struct.list_head* [ %1, %a ], [ %init_css_set.reloc, %b ]
  %nx.p = getelementptr inbounds %struct.list_head, %struct.list_head* %h, i64 0, i32 0
  %2 = bitcast %struct.list_head** %nx.p to i8*
  %3 = call i8* @g_map(i8* %2, i64 8, i64* %ciel.budget)
  %4 = bitcast i8* %3 to %struct.list_head**
  %nx = load %struct.list_head*, %struct.list_head** %4, align 8
  %off.p = getelementptr inbounds [8192 x i64], [8192 x i64]* %__per_cpu_offset.reloc, i64 0, i64 1
  %5 = bitcast i64* %off.p to i8*
  %6 = call i8* @g_map(i8* %5, i64 8, i64* %ciel.budget)
  %7 = bitcast i8* %6 to i64*
  %off = load i64, i64* %7, align 8
  %8 = ptrtoint [64 x i8]* %runqueues.reloc to i64
  %rq = add i64 %off, %8
  %rq.p = inttoptr i64 %rq to i64*
  %9 = bitcast i64* %rq.p to i8*
  %10 = call i8* @g_map(i8* %9, i64 8, i64* %ciel.budget)
  %11 = bitcast i8* %10 to i64*
  %rqv = load i64, i64* %11, align 8
  %fn = ptrtoint void ()* %mem_cgroup_css_alloc.reloc to i64
  %same = icmp eq i64 %fn, %rqv
  %sv = zext i1 %same to i64
  %nxi = ptrtoint %struct.list_head* %nx to i64
  %r = add i64 %nxi, %sv
  store i64 %r, i64* %out, align 8
  %12 = load i64, i64* %ciel.budget, align 8
  store i64 %12, i64* @ciel_budget, align 8
  ret i64 %r
}

declare i8* @g_map(i8*, i64, i64*)
