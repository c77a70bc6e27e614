/* The free-block index. Free blocks are kept per (pool, stream) in 256
 * size bins, eight per power of two, each bin a treap (a binary search tree
 * balanced by random priorities) ordered by (size, address), with a bitmap
 * of the bins that hold anything. The best fit for (stream, size) is the
 * lower bound in the request's own bin, else the smallest block of the next
 * non-empty bin: the same block a single tree ordered by (stream, size,
 * address) would give, PyTorch's rule, with trees a few levels deep instead
 * of twenty. */
#include "pool/pool_internal.h"

#include <stdlib.h>

static inline unsigned bin_of(uint64_t size) {
  unsigned lg = 63u - (unsigned)__builtin_clzll(size);
  if (lg < 9) return 0;
  unsigned idx = (lg - 9) * 8 + (unsigned)((size >> (lg - 3)) & 7);
  return idx < HR__NBINS ? idx : HR__NBINS - 1;
}

static inline int key_cmp(uint64_t size, uint64_t addr, const hr__block_t *b) {
  if (size != b->size) return size < b->size ? -1 : 1;
  if (addr != b->addr) return addr < b->addr ? -1 : 1;
  return 0;
}

static inline int blk_cmp(const hr__block_t *a, const hr__block_t *b) {
  return key_cmp(a->size, a->addr, b);
}

/* Splits t into the keys below n's (*l) and above (*r). */
static void split(hr__block_t *t, const hr__block_t *n, hr__block_t **l, hr__block_t **r) {
  while (t) {
    if (blk_cmp(t, n) < 0) {
      *l = t;
      l = &t->right;
      t = t->right;
    } else {
      *r = t;
      r = &t->left;
      t = t->left;
    }
  }
  *l = *r = NULL;
}

/* Joins a and b, every key of a below every key of b. */
static hr__block_t *merge(hr__block_t *a, hr__block_t *b) {
  hr__block_t *root = NULL, **p = &root;
  while (a && b) {
    if (a->prio > b->prio) {
      *p = a;
      p = &a->right;
      a = a->right;
    } else {
      *p = b;
      p = &b->left;
      b = b->left;
    }
  }
  *p = a ? a : b;
  return root;
}

void hr__index_insert(hr__bins_t *x, hr__block_t *b) {
  unsigned i = bin_of(b->size);
  hr__block_t **p = &x->bin[i];
  while (*p && (*p)->prio > b->prio) p = blk_cmp(b, *p) < 0 ? &(*p)->left : &(*p)->right;
  split(*p, b, &b->left, &b->right);
  *p = b;
  x->map[i / 64] |= 1ull << (i % 64);
}

void hr__index_remove(hr__bins_t *x, hr__block_t *b) {
  unsigned i = bin_of(b->size);
  hr__block_t **p = &x->bin[i];
  while (*p != b) {
    HR_ASSERT(*p);
    p = blk_cmp(b, *p) < 0 ? &(*p)->left : &(*p)->right;
  }
  *p = merge(b->left, b->right);
  b->left = b->right = NULL;
  if (!x->bin[i]) x->map[i / 64] &= ~(1ull << (i % 64));
}

/* The first non-empty bin after `i`, or HR__NBINS. */
static unsigned next_bin(const hr__bins_t *x, unsigned i) {
  for (unsigned w = (i + 1) / 64; w < HR__NBINS / 64; w++) {
    uint64_t m = x->map[w];
    if (w == (i + 1) / 64) m &= ~0ull << ((i + 1) % 64);
    if (m) return w * 64 + (unsigned)__builtin_ctzll(m);
  }
  return HR__NBINS;
}

static hr__block_t *leftmost(hr__block_t *t) {
  while (t && t->left) t = t->left;
  return t;
}

/* The first block of x, in (size, address) order, that comes after the key
 * (size, addr) when `after`, else the first of at least `size` bytes: the
 * lower bound in the key's own bin, else the smallest block of the next
 * non-empty bin. NULL when none. Inline, so that each caller's constant
 * `after` leaves it the one comparison it needs on the allocation path. */
static inline hr__block_t *first_from(const hr__bins_t *x, uint64_t size, uint64_t addr,
                                      bool after) {
  unsigned i = bin_of(size);
  hr__block_t *t = x->bin[i], *best = NULL;
  while (t) {
    if (after ? key_cmp(size, addr, t) < 0 : size <= t->size) {
      best = t;
      t = t->left;
    } else {
      t = t->right;
    }
  }
  if (best) return best;
  i = next_bin(x, i);
  return i < HR__NBINS ? leftmost(x->bin[i]) : NULL;
}

hr__block_t *hr__index_best(const hr__bins_t *x, uint64_t size) {
  return first_from(x, size, 0, false);
}

hr__block_t *hr__index_next(const hr__bins_t *x, const hr__block_t *b) {
  return first_from(x, b->size, b->addr, true);
}

hr__bins_t *hr__index_find(hr_pool_t *p, void *stream, bool small) {
  for (hr__bins_t *x = p->bins; x; x = x->next)
    if (x->stream == stream && x->small == small) return x;
  return NULL;
}

int hr__index_get(hr_pool_t *p, void *stream, bool small, hr__bins_t **out) {
  hr__bins_t *x = hr__index_find(p, stream, small);
  if (!x) {
    x = calloc(1, sizeof *x);
    if (!x) return HR_ENOMEM;
    x->stream = stream;
    x->small = small;
    x->next = p->bins;
    p->bins = x;
  }
  *out = x;
  return 0;
}

static size_t count(const hr__block_t *t) {
  return t ? 1 + count(t->left) + count(t->right) : 0;
}

static bool valid(const hr__block_t *t, const hr__block_t *lo, const hr__block_t *hi,
                  const hr__bins_t *x, unsigned bin) {
  if (!t) return true;
  if (!t->in_tree || t->stream != x->stream || t->seg->small != x->small || bin_of(t->size) != bin)
    return false;
  if ((lo && blk_cmp(t, lo) <= 0) || (hi && blk_cmp(t, hi) >= 0)) return false;
  if ((t->left && t->left->prio > t->prio) || (t->right && t->right->prio > t->prio)) return false;
  return valid(t->left, lo, t, x, bin) && valid(t->right, t, hi, x, bin);
}

bool hr__index_valid(const hr_pool_t *p, size_t *n) {
  *n = 0;
  for (const hr__bins_t *x = p->bins; x; x = x->next)
    for (unsigned i = 0; i < HR__NBINS; i++) {
      bool set = (x->map[i / 64] >> (i % 64)) & 1;
      if (set != (x->bin[i] != NULL) || !valid(x->bin[i], NULL, NULL, x, i)) return false;
      *n += count(x->bin[i]);
    }
  return true;
}

void hr__index_free_all(hr_pool_t *p) {
  while (p->bins) {
    hr__bins_t *n = p->bins->next;
    free(p->bins);
    p->bins = n;
  }
}
