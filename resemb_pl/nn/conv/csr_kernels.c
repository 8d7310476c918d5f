/* Loops over a CSR adjacency for resemb_pl.nn.conv.native (loaded with ctypes).
 *
 * A graph with num_targets rows is given by crow (num_targets + 1) and col (one source per
 * edge, in CSR order); x is (num_sources, f) and every row-major array is contiguous. Each
 * function exists for float (_f32) and double (_f64). The loops run on one thread, in the
 * caller's; each reads an edge's source row once per pass, so a step costs what its edges
 * touch, without a message per edge in memory and without a transpose for the backward pass.
 * C99 and libm only: any C compiler builds it in about a second.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The rows an edge reads are scattered over a table larger than the caches: ask for the row
 * of the edge DIST ahead while this one is summed, so the misses overlap. */
#define DIST 8
#if defined(__GNUC__)
#define PREFETCH(p, w) __builtin_prefetch((p), (w))
#define INLINE static inline __attribute__((always_inline))
#else
#define PREFETCH(p, w) ((void)0)
#define INLINE static inline
#endif
/* A row of f values spans two cache lines for most f and offsets: ask for its first and last
 * (the attention's reads; the scatter's writes are as fast with the first alone). */
#define PREFETCH_ROW(base, j, f, w) (PREFETCH((base) + (j) * (f), (w)), \
                                     PREFETCH((base) + (j) * (f) + (f) - 1, (w)))

/* Runs body(F) with F a constant for the widths listed, so that each loop over a row's f
 * values is unrolled and its sums kept in registers (18, the paper's width, then takes a
 * third of the time of the loop over a width known only at run time); any other width runs
 * the same code with F = f. */
#define BY_WIDTH(f, body)                                                                     \
    switch (f) {                                                                              \
    case 8: body(8); break;                                                                   \
    case 16: body(16); break;                                                                 \
    case 18: body(18); break;                                                                 \
    case 32: body(32); break;                                                                 \
    case 64: body(64); break;                                                                 \
    default: body(f);                                                                         \
    }

/* Each loop is a static "_rows" function of the width f, inlined into its exported caller once
 * per BY_WIDTH case. restrict: no output array overlaps an input (x and q may be the same
 * table; both are only read). */
#define DEFINE_KERNELS(T, S, EXP)                                                            \
/* The in-edges of rows[i] (rowptr[rows[i]]:rowptr[rows[i] + 1] of col and w) copied to       \
 * crow[i]:crow[i + 1] of out_col and out_w; crow holds the rows' counts' cumulative sum. */   \
void in_edges_##S(int64_t n, const int64_t *rowptr, const int64_t *rows, const int64_t *crow, \
                  const int64_t *col, const T *w, int64_t *out_col, T *out_w) {                 \
    for (int64_t i = 0; i < n; ++i) {                                                           \
        const int64_t start = rowptr[rows[i]], count = crow[i + 1] - crow[i];                   \
        memcpy(out_col + crow[i], col + start, (size_t)count * sizeof(int64_t));                \
        if (w) memcpy(out_w + crow[i], w + start, (size_t)count * sizeof(T));                   \
    }                                                                                           \
}                                                                                               \
                                                                                                \
INLINE void index_add_rows_##S(int64_t n, const int64_t f, const int64_t *restrict index,    \
                               const T *restrict src, T *restrict out) {                        \
    for (int64_t p = 0; p < n; ++p) {                                                           \
        if (p + DIST < n) PREFETCH(out + index[p + DIST] * f, 1);                               \
        T *restrict o = out + index[p] * f;                                                     \
        const T *restrict s = src + p * f;                                                      \
        for (int64_t k = 0; k < f; ++k) o[k] += s[k];                                           \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* out[index[p]] += src[p] for p < n (an index may repeat): the backward pass of a row        \
 * lookup, torch's index_add_ along dim 0 without its per-row dispatch. */                     \
void index_add_##S(int64_t n, int64_t f, const int64_t *index, const T *src, T *out) {        \
    BY_WIDTH(f, INDEX_ADD_##S)                                                                  \
}                                                                                               \
                                                                                                \
INLINE void scatter_rows_##S(int64_t n, const int64_t f, const int64_t *restrict crow,        \
                             const int64_t *restrict col, const T *restrict w,                  \
                             const T *restrict grad, T *restrict out) {                         \
    const int64_t last = crow[n];                                                               \
    for (int64_t i = 0; i < n; ++i) {                                                           \
        const T *restrict g = grad + i * f;                                                     \
        for (int64_t e = crow[i]; e < crow[i + 1]; ++e) {                                       \
            if (e + DIST < last) PREFETCH(out + col[e + DIST] * f, 1);                        \
            T *restrict oj = out + col[e] * f;                                                  \
            const T we = w ? w[e] : (T)1;                                                       \
            for (int64_t k = 0; k < f; ++k) oj[k] += we * g[k];                                 \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* out[col[e]] += (w ? w[e] : 1) * grad[i] for every edge e of target i; out is zeroed by   \
 * the caller. The backward pass of a weighted sum over the edges (embedding_bag's, in       \
 * resemb_pl.nn.conv.spmm) with respect to x. */                                             \
void csr_scatter_##S(int64_t n, int64_t f, const int64_t *crow, const int64_t *col,           \
                     const T *w, const T *grad, T *out) {                                       \
    BY_WIDTH(f, SCATTER_##S)                                                                    \
}                                                                                               \
                                                                                                \
INLINE void forward_rows_##S(int64_t n, const int64_t f, const int64_t *restrict crow,        \
                             const int64_t *restrict col, const T *restrict x,                  \
                             const T *restrict q, T *restrict alpha, T *restrict out) {         \
    const int64_t last = crow[n];                                                               \
    for (int64_t i = 0; i < n; ++i) {                                                           \
        const T *restrict qi = q + i * f;                                                       \
        T *restrict o = out + i * f;                                                            \
        for (int64_t k = 0; k < f; ++k) o[k] = 0;                                               \
        const int64_t start = crow[i], end = crow[i + 1];                                       \
        if (start == end) continue;                                                             \
        T top = -INFINITY;                                                                      \
        for (int64_t e = start; e < end; ++e) {                                                \
            if (e + DIST < last) PREFETCH_ROW(x, col[e + DIST], f, 0);                          \
            const T *restrict xj = x + col[e] * f;                                              \
            T s = 0;                                                                            \
            for (int64_t k = 0; k < f; ++k) s += qi[k] * xj[k];                                 \
            alpha[e] = s;                                                                       \
            if (s > top) top = s;                                                               \
        }                                                                                       \
        T total = 0;                                                                            \
        for (int64_t e = start; e < end; ++e) {                                                \
            alpha[e] = EXP(alpha[e] - top);                                                     \
            total += alpha[e];                                                                  \
        }                                                                                       \
        total += (T)1e-16;                                                                      \
        for (int64_t e = start; e < end; ++e) {                                                \
            const T a = alpha[e] / total;                                                       \
            alpha[e] = a;                                                                       \
            const T *restrict xj = x + col[e] * f;                                              \
            for (int64_t k = 0; k < f; ++k) o[k] += a * xj[k];                                  \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* Dot-product attention: alpha[e] = softmax over i's edges of q[i] . x[col[e]], and          \
 * out[i] = sum_e alpha[e] x[col[e]] (zero for a target without edges). The softmax divides   \
 * by (sum + 1e-16), as torch_geometric.utils.softmax does. */                                 \
void attend_forward_##S(int64_t n, int64_t f, const int64_t *crow, const int64_t *col,        \
                        const T *x, const T *q, T *alpha, T *out) {                             \
    BY_WIDTH(f, FORWARD_##S)                                                                    \
}                                                                                               \
                                                                                                \
INLINE void backward_rows_##S(int64_t n, const int64_t f, const int64_t *restrict crow,       \
                              const int64_t *restrict col, const T *restrict x,                 \
                              const T *restrict q, const T *restrict alpha,                     \
                              const T *restrict grad, T *restrict scratch,                      \
                              T *restrict grad_x, T *restrict grad_q) {                         \
    const int64_t last = crow[n];                                                               \
    for (int64_t i = 0; i < n; ++i) {                                                           \
        const T *restrict gi = grad + i * f, *restrict qi = q + i * f;                          \
        T *restrict gq = grad_q + i * f;                                                        \
        for (int64_t k = 0; k < f; ++k) gq[k] = 0;                                              \
        const int64_t start = crow[i], end = crow[i + 1];                                       \
        T mean = 0;                                                                             \
        for (int64_t e = start; e < end; ++e) {                                                \
            if (e + DIST < last) {                                                              \
                PREFETCH_ROW(x, col[e + DIST], f, 0);                                           \
                PREFETCH_ROW(grad_x, col[e + DIST], f, 1);                                      \
            }                                                                                   \
            const T *restrict xj = x + col[e] * f;                                              \
            T d = 0;                                                                            \
            for (int64_t k = 0; k < f; ++k) d += gi[k] * xj[k];                                 \
            scratch[e] = d;                                                                     \
            mean += alpha[e] * d;                                                               \
        }                                                                                       \
        for (int64_t e = start; e < end; ++e) {                                                \
            const T a = alpha[e], ds = a * (scratch[e] - mean);                                 \
            const T *restrict xj = x + col[e] * f;                                              \
            T *restrict gx = grad_x + col[e] * f;                                               \
            for (int64_t k = 0; k < f; ++k) {                                                   \
                gq[k] += ds * xj[k];                                                            \
                gx[k] += a * gi[k] + ds * qi[k];                                                \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* The backward pass of attend_forward: with d_alpha[e] = grad[i] . x[col[e]] and             \
 * d_score[e] = alpha[e] (d_alpha[e] - sum_e' alpha[e'] d_alpha[e']),                          \
 * grad_q[i] = sum_e d_score[e] x[col[e]] and                                                  \
 * grad_x[col[e]] += alpha[e] grad[i] + d_score[e] q[i]. grad_x is zeroed by the caller;      \
 * scratch holds one value per edge. */                                                        \
void attend_backward_##S(int64_t n, int64_t f, const int64_t *crow, const int64_t *col,       \
                         const T *x, const T *q, const T *alpha, const T *grad, T *scratch,    \
                         T *grad_x, T *grad_q) {                                                \
    BY_WIDTH(f, BACKWARD_##S)                                                                   \
}

#define INDEX_ADD_f32(F) index_add_rows_f32(n, F, index, src, out)
#define INDEX_ADD_f64(F) index_add_rows_f64(n, F, index, src, out)
#define SCATTER_f32(F) scatter_rows_f32(n, F, crow, col, w, grad, out)
#define SCATTER_f64(F) scatter_rows_f64(n, F, crow, col, w, grad, out)
#define FORWARD_f32(F) forward_rows_f32(n, F, crow, col, x, q, alpha, out)
#define FORWARD_f64(F) forward_rows_f64(n, F, crow, col, x, q, alpha, out)
#define BACKWARD_f32(F) backward_rows_f32(n, F, crow, col, x, q, alpha, grad, scratch, grad_x, \
                                          grad_q)
#define BACKWARD_f64(F) backward_rows_f64(n, F, crow, col, x, q, alpha, grad, scratch, grad_x, \
                                          grad_q)

/* Whether ids and the distinct rows hold the same items, padding (0) aside: every id is 0 or
 * one of the rows, and every row other than 0 is among the ids. mark is num_nodes bytes of
 * scratch. Returns 1 or 0, or -1 if an id or a row is outside 0..num_nodes - 1. */
int same_items(int64_t num_ids, const int64_t *ids, int64_t num_rows, const int64_t *rows,
               int64_t num_nodes, uint8_t *mark) {
    memset(mark, 0, (size_t)num_nodes);
    for (int64_t k = 0; k < num_rows; ++k) {
        if (rows[k] < 0 || rows[k] >= num_nodes) return -1;
        mark[rows[k]] = 1;
    }
    mark[0] = 3;
    int same = 1;
    for (int64_t k = 0; k < num_ids; ++k) {
        const int64_t v = ids[k];
        if (v < 0 || v >= num_nodes) return -1;
        if (!(mark[v] & 1)) same = 0;
        mark[v] |= 2;
    }
    for (int64_t k = 0; k < num_rows; ++k)
        if (!(mark[rows[k]] & 2)) same = 0;
    return same;
}

DEFINE_KERNELS(float, f32, expf)
DEFINE_KERNELS(double, f64, exp)
