/* td_gemm: the one place libtinyd calls BLAS.
 *
 * Row-major single-precision matrix products over OpenBLAS's cblas_sgemm.
 * Keeping every BLAS call here lets a reference backend or a different BLAS
 * replace one file. OpenBLAS's own threading is process-global: the daemon
 * and the benchmark call td_blas_set_threads(1) and get parallelism from
 * their own worker threads instead.
 * Thread: td_sgemm is reentrant; td_blas_set_threads is process-global and
 * belongs in start-up code. No allocation (OpenBLAS keeps its own buffers). */
#ifndef TD_GEMM_H
#define TD_GEMM_H

/* c(m,n) = a(m,k) . b(k,n) + beta * c(m,n); all row-major with leading
 * dimensions lda >= k, ldb >= n, ldc >= n. beta is 0 or 1 in practice. */
void td_sgemm(int m, int n, int k, const float *a, int lda, const float *b,
              int ldb, float beta, float *c, int ldc);

/* The number of threads OpenBLAS may use for each call (>= 1). */
void td_blas_set_threads(int n);
int td_blas_get_threads(void);

#endif
