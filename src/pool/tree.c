/* The free-block index: a treap (a binary search tree kept balanced by
 * random priorities) ordered by (stream, size, address). It is intrusive,
 * so inserting and removing touch only the block records. One lower_bound
 * finds the best fit of a stream: the smallest block at least as large as
 * the request, the lowest address among equals. */
#include "pool/pool_internal.h"

static inline int key_cmp(uintptr_t sa, uint64_t za, uint64_t aa, const hr__block_t *b) {
  uintptr_t sb = (uintptr_t)b->stream;
  if (sa != sb) return sa < sb ? -1 : 1;
  if (za != b->size) return za < b->size ? -1 : 1;
  if (aa != b->addr) return aa < b->addr ? -1 : 1;
  return 0;
}

static inline int blk_cmp(const hr__block_t *a, const hr__block_t *b) {
  return key_cmp((uintptr_t)a->stream, a->size, a->addr, b);
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

void hr__tree_insert(hr__block_t **root, hr__block_t *b) {
  hr__block_t **p = root;
  while (*p && (*p)->prio > b->prio) p = blk_cmp(b, *p) < 0 ? &(*p)->left : &(*p)->right;
  split(*p, b, &b->left, &b->right);
  *p = b;
}

void hr__tree_remove(hr__block_t **root, hr__block_t *b) {
  hr__block_t **p = root;
  while (*p != b) {
    HR_ASSERT(*p);
    p = blk_cmp(b, *p) < 0 ? &(*p)->left : &(*p)->right;
  }
  *p = merge(b->left, b->right);
  b->left = b->right = NULL;
}

hr__block_t *hr__tree_lower_bound(hr__block_t *t, void *stream, uint64_t size) {
  hr__block_t *best = NULL;
  while (t) {
    if (key_cmp((uintptr_t)stream, size, 0, t) <= 0) {
      best = t;
      t = t->left;
    } else {
      t = t->right;
    }
  }
  return best;
}

hr__block_t *hr__tree_next(hr__block_t *t, const hr__block_t *b) {
  hr__block_t *best = NULL;
  while (t) {
    if (blk_cmp(b, t) < 0) {
      best = t;
      t = t->left;
    } else {
      t = t->right;
    }
  }
  return best;
}

size_t hr__tree_count(const hr__block_t *t) {
  return t ? 1 + hr__tree_count(t->left) + hr__tree_count(t->right) : 0;
}

static bool valid(const hr__block_t *t, const hr__block_t *lo, const hr__block_t *hi) {
  if (!t) return true;
  if (!t->in_tree) return false;
  if ((lo && blk_cmp(t, lo) <= 0) || (hi && blk_cmp(t, hi) >= 0)) return false;
  if ((t->left && t->left->prio > t->prio) || (t->right && t->right->prio > t->prio)) return false;
  return valid(t->left, lo, t) && valid(t->right, t, hi);
}

bool hr__tree_valid(const hr__block_t *root) {
  return valid(root, NULL, NULL);
}
