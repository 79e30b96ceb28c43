/* Ciel: declare the kernel struct layouts a monitor relies on.
 *
 *   CIEL_LAYOUT(cgroup, kn)                 offsetof(struct cgroup, kn)
 *   CIEL_LAYOUT(cgroup, self, refcnt)       offsetof(struct cgroup, self.refcnt)   (up to 6 levels)
 *   CIEL_SIZEOF(cgroup)                     sizeof(struct cgroup)
 *
 * Each use emits a constant global `__ciel_layout__<struct>__<f1>__<f2>...` (resp.
 * `__ciel_sizeof__<struct>`) holding the value the compiler computed from the headers, plus a
 * string `__ciel_layout_path__...` = "<struct>:<f1>.<f2>..." naming it without ambiguity (field
 * names may themselves contain "__", e.g. task_struct.__state). `ciel build` reads both from
 * the IR and checks them against the guest kernel's BTF (compiler/kernel/layout-check.ts), so
 * headers of the wrong flavour or ABI fail the build instead of reading wrong fields.
 * Field components are separate macro arguments because a preprocessor cannot turn a '.' into
 * part of an identifier.
 */
#ifndef CIEL_LAYOUT_H
#define CIEL_LAYOUT_H

#define __CIEL_CAT(a, b) a##b
#define __CIEL_XCAT(a, b) __CIEL_CAT(a, b)

#define __CIEL_NARG(...) __CIEL_NARG_(__VA_ARGS__, 6, 5, 4, 3, 2, 1, 0)
#define __CIEL_NARG_(_1, _2, _3, _4, _5, _6, N, ...) N

#define __CIEL_NAME_1(a) a
#define __CIEL_NAME_2(a, b) a##__##b
#define __CIEL_NAME_3(a, b, c) a##__##b##__##c
#define __CIEL_NAME_4(a, b, c, d) a##__##b##__##c##__##d
#define __CIEL_NAME_5(a, b, c, d, e) a##__##b##__##c##__##d##__##e
#define __CIEL_NAME_6(a, b, c, d, e, f) a##__##b##__##c##__##d##__##e##__##f

#define __CIEL_PATH_1(a) a
#define __CIEL_PATH_2(a, b) a.b
#define __CIEL_PATH_3(a, b, c) a.b.c
#define __CIEL_PATH_4(a, b, c, d) a.b.c.d
#define __CIEL_PATH_5(a, b, c, d, e) a.b.c.d.e
#define __CIEL_PATH_6(a, b, c, d, e, f) a.b.c.d.e.f

#define __CIEL_STR(x) #x
#define __CIEL_XSTR(x) __CIEL_STR(x)

#define __CIEL_LAYOUT_N(n, s, ...)                                                                  \
  static const unsigned long __CIEL_XCAT(__ciel_layout__##s##__, __CIEL_NAME_##n(__VA_ARGS__))        \
      __attribute__((used)) = __builtin_offsetof(struct s, __CIEL_PATH_##n(__VA_ARGS__));             \
  static const char __CIEL_XCAT(__ciel_layout_path__##s##__, __CIEL_NAME_##n(__VA_ARGS__))[]          \
      __attribute__((used)) = #s ":" __CIEL_XSTR(__CIEL_PATH_##n(__VA_ARGS__))
#define __CIEL_LAYOUT_X(n, s, ...) __CIEL_LAYOUT_N(n, s, __VA_ARGS__)

/* CIEL_LAYOUT(struct_name, field, subfield, ...): record offsetof(struct struct_name, field.subfield...) */
#define CIEL_LAYOUT(s, ...) __CIEL_LAYOUT_X(__CIEL_NARG(__VA_ARGS__), s, __VA_ARGS__)

/* CIEL_SIZEOF(struct_name): record sizeof(struct struct_name) */
#define CIEL_SIZEOF(s) static const unsigned long __ciel_sizeof__##s __attribute__((used)) = sizeof(struct s)

#endif /* CIEL_LAYOUT_H */
