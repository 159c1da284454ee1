/* bnn_random: see bnn_random.h. */
#include "config.h"

#include "bnn_random.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float uni(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(next(s) >> 11) /
                                    9007199254740992.0);
}

static float *fresh(bnn_random *r, size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    if (p)
        r->mem[r->n_mem++] = p;
    return p;
}

static int bn(bnn_random *r, uint64_t *s, int c, float spread, td_bnn_bn *out)
{
    float *g = fresh(r, (size_t)c), *b = fresh(r, (size_t)c),
          *mu = fresh(r, (size_t)c), *var = fresh(r, (size_t)c);
    if (!g || !b || !mu || !var)
        return -1;
    for (int i = 0; i < c; i++) {
        g[i] = uni(s, 0.5f, 1.5f) * (next(s) % 8 == 0 ? -1.0f : 1.0f);
        b[i] = uni(s, -0.3f, 0.3f);
        mu[i] = uni(s, -0.5f, 0.5f) * spread;
        var[i] = spread * spread * uni(s, 0.5f, 1.5f);
    }
    *out = (td_bnn_bn){g, b, mu, var, 1e-5f};
    return 0;
}

int bnn_random_latent(bnn_random *r, const td_bnn_arch *a, uint64_t seed,
                      int flip_pct)
{
    uint64_t s = seed * 2654435761u + 1;
    int cin = a->stem.cout;
    size_t n;
    memset(r, 0, sizeof *r);
    r->lat.arch = *a;
    n = (size_t)a->stem.cout * (size_t)a->in_ch * (size_t)(a->stem.k * a->stem.k);
    float *sw = fresh(r, n);
    if (!sw)
        goto oom;
    for (size_t i = 0; i < n; i++)
        sw[i] = uni(&s, -1, 1);
    r->lat.stem_w = sw;
    if (bn(r, &s, a->stem.cout, 1.0f, &r->lat.stem_bn))
        goto oom;
    for (int i = 0; i < a->n_blocks; i++) {
        const td_bnn_conv_spec *c = &a->blocks[i];
        size_t per = (size_t)cin * (size_t)(c->k * c->k);
        int protos = c->cout / 8 > 0 ? c->cout / 8 : 1;
        float *w = fresh(r, (size_t)c->cout * per);
        if (!w)
            goto oom;
        for (int o = 0; o < c->cout; o++)
            for (size_t q = 0; q < per; q++) {
                float v = uni(&s, -1, 1);
                if (flip_pct >= 0 && o >= protos) {
                    float p = w[(size_t)(o % protos) * per + q];
                    v = fabsf(v) * (p < 0 ? -1.0f : 1.0f);
                    if ((int)(next(&s) % 100) < flip_pct)
                        v = -v;
                }
                w[(size_t)o * per + q] = v;
            }
        r->lat.block_w[i] = w;
        /* alpha = mean|W| ~ 0.5; accumulators spread ~ sqrt(K) */
        if (bn(r, &s, c->cout, 0.5f * sqrtf((float)per), &r->lat.block_bn[i]))
            goto oom;
        cin = c->cout;
    }
    {
        float *fw = fresh(r, (size_t)a->classes * (size_t)cin),
              *fb = fresh(r, (size_t)a->classes);
        if (!fw || !fb)
            goto oom;
        for (size_t i = 0; i < (size_t)a->classes * (size_t)cin; i++)
            fw[i] = uni(&s, -1, 1);
        for (int i = 0; i < a->classes; i++)
            fb[i] = uni(&s, -0.1f, 0.1f);
        r->lat.fc_w = fw;
        r->lat.fc_b = fb;
    }
    if (a->classes <= 64) {
        for (int i = 0; i < a->classes; i++) {
            char buf[32];
            snprintf(buf, sizeof buf, "class_%d", i);
            r->labels[i] = strdup(buf);
            if (!r->labels[i])
                goto oom;
        }
        r->lat.labels = (const char *const *)r->labels;
    }
    for (int c = 0; c < a->in_ch; c++) {
        r->lat.mean[c] = 0.2860f; /* Fashion-MNIST's */
        r->lat.std[c] = 0.3530f;
    }
    return 0;
oom:
    bnn_random_free(r);
    return -1;
}

void bnn_random_free(bnn_random *r)
{
    for (int i = 0; i < r->n_mem; i++)
        free(r->mem[i]);
    for (int i = 0; i < 64; i++)
        free(r->labels[i]);
    memset(r, 0, sizeof *r);
}
