/* td_gemm: OpenBLAS backend. */
#include "config.h"

#include "td_gemm.h"

#include <cblas.h>

void td_sgemm(int m, int n, int k, const float *a, int lda, const float *b,
              int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) { /* BLAS would leave c untouched or scaled by beta */
        int i, j;
        if (beta == 0)
            for (i = 0; i < m; i++)
                for (j = 0; j < n; j++)
                    c[(long)i * ldc + j] = 0;
        return;
    }
    if (m <= 2) {
        /* A row or two (a classifier at batch 1): sgemm would first pack
         * all of b; sgemv streams it once, about 3.5x faster for
         * 1280 x 1000. */
        int i;
        for (i = 0; i < m; i++)
            cblas_sgemv(CblasRowMajor, CblasTrans, k, n, 1.0f, b, ldb,
                        a + (long)i * lda, 1, beta, c + (long)i * ldc, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a,
                lda, b, ldb, beta, c, ldc);
}

void td_blas_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }

int td_blas_get_threads(void) { return openblas_get_num_threads(); }
