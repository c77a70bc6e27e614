/* abi: the layout of every public struct that a binding mirrors, as the
 * library was compiled.
 *
 * A binding that retypes C structs (the Python package through ctypes) checks
 * its copies against this table: each struct's size and alignment, and each
 * field's name, offset, size and alignment, all taken with sizeof and offsetof
 * when the library was built. A field added to or moved in a struct changes
 * the table, so the binding's check fails until the binding follows. The table
 * describes itself too (hr_abi_struct_t and hr_abi_field_t are rows of it).
 * Included by nothing else; a binding includes it alone. */
#ifndef HEADROOM_ABI_H
#define HEADROOM_ABI_H

#include "headroom/headroom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hr_abi_field {
  const char *name; /* as in the header: "budget_bytes" */
  size_t offset;    /* offsetof */
  size_t size;      /* sizeof the member */
  size_t align;     /* _Alignof the member's type */
} hr_abi_field_t;

typedef struct hr_abi_struct {
  const char *name;             /* the typedef name: "hr_plan_t" */
  size_t size;                  /* sizeof */
  size_t align;                 /* _Alignof */
  const hr_abi_field_t *fields; /* in declaration order */
  size_t n_fields;
} hr_abi_struct_t;

/* Returns every struct a binding mirrors, in a static table that lives as
 * long as the library; `n` gets the number of rows. Never fails. */
HR_API const hr_abi_struct_t *hr_abi_structs(size_t *n);

/* Returns the struct named `name` ("hr_pool_stats_t"), or NULL. */
HR_API const hr_abi_struct_t *hr_abi_struct(const char *name);

/* Returns the names of the {current, peak, total} triples of hr_pool_stats_t
 * in their order (the HR_POOL_STATS X-macro), NULL-terminated; `n` (may be
 * NULL) gets their number. */
HR_API const char *const *hr_abi_pool_stat_names(size_t *n);

#ifdef __cplusplus
}
#endif

#endif
