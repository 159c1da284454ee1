/* td_tinynet_arch: timm's _gen_tinynet as arithmetic. */
#include "config.h"

#include "td_tinynet_arch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* EfficientNet-B0's stage table (timm arch_def), SE ratio 0.25 everywhere. */
static const struct {
    td_tn_block_type type;
    int repeats, k, stride, exp, out;
} base_stages[TD_TN_STAGES] = {
    {TD_TN_DS, 1, 3, 1, 1, 16},  {TD_TN_IR, 2, 3, 2, 6, 24},
    {TD_TN_IR, 2, 5, 2, 6, 40},  {TD_TN_IR, 3, 3, 2, 6, 80},
    {TD_TN_IR, 3, 5, 1, 6, 112}, {TD_TN_IR, 4, 5, 2, 6, 192},
    {TD_TN_IR, 1, 3, 1, 6, 320},
};

static const struct {
    const char *name;
    double r, w, d;
    int resolution;
} presets[] = {
    {"a", 0.86, 1.0, 1.2, 192},    {"b", 0.84, 0.75, 1.1, 188},
    {"c", 0.825, 0.54, 0.85, 184}, {"d", 0.68, 0.54, 0.695, 152},
    {"e", 0.475, 0.51, 0.6, 106},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

int td_tn_make_divisible(double v, int divisor)
{
    /* int(v + divisor / 2) // divisor * divisor, at least divisor */
    long n = (long)(v + divisor / 2.0) / divisor * divisor;
    if (n < divisor)
        n = divisor;
    if ((double)n < 0.9 * v)
        n += divisor;
    return (int)n;
}

int td_tn_round_repeats(int repeats, double d)
{
    /* Python's round() is round-half-even, as nearbyint in the default
     * rounding mode. */
    double r = nearbyint((double)repeats * d);
    return r < 1 ? 1 : (int)r;
}

td_status td_tn_arch_build(td_tn_arch *a, double r, double d, double w,
                           int resolution, int classes, td_error *err)
{
    int s, j, cin, n = 0;
    memset(a, 0, sizeof *a);
    if (!(r > 0 && r <= 4))
        return td_error_set(err, TD_EINVAL, "r = %g: must be in (0, 4]", r);
    if (!(w > 0 && w <= 4))
        return td_error_set(err, TD_EINVAL, "w = %g: must be in (0, 4]", w);
    if (!(d > 0 && d <= 4))
        return td_error_set(err, TD_EINVAL, "d = %g: must be in (0, 4]", d);
    if (classes < 1 || classes > TD_TN_MAX_CLASSES)
        return td_error_set(err, TD_EINVAL, "classes = %d: must be 1..%d",
                            classes, TD_TN_MAX_CLASSES);
    if (resolution <= 0)
        resolution = (int)(224.0 * r);
    if (resolution < 8 || resolution > 4096)
        return td_error_set(err, TD_EINVAL,
                            "resolution %d: must be 8..4096", resolution);
    a->r = r;
    a->d = d;
    a->w = w;
    a->resolution = resolution;
    a->classes = classes;
    a->stem = TD_TN_STEM;
    a->head = td_tn_make_divisible(1280.0 * w, 8);
    if (a->head < 1280)
        a->head = 1280;
    cin = a->stem;
    for (s = 0; s < TD_TN_STAGES; s++) {
        int reps = td_tn_round_repeats(base_stages[s].repeats, d);
        int cout = td_tn_make_divisible(base_stages[s].out * w, 8);
        a->stage_repeats[s] = reps;
        for (j = 0; j < reps; j++) {
            td_tn_block *b;
            int exp = base_stages[s].exp;
            if (n == TD_TN_MAX_BLOCKS)
                return td_error_set(err, TD_EINVAL,
                                    "d = %g gives more than %d blocks", d,
                                    TD_TN_MAX_BLOCKS);
            b = &a->blocks[n++];
            b->type = base_stages[s].type;
            b->stage = s;
            b->index = j;
            b->k = base_stages[s].k;
            b->stride = j == 0 ? base_stages[s].stride : 1;
            b->cin = cin;
            b->cout = cout;
            b->cmid = b->type == TD_TN_DS ? cin
                                          : td_tn_make_divisible(cin * exp, 8);
            /* timm sizes SE from the block input: se_ratio / exp of mid,
             * rounded with Python's round(). */
            b->cse = (int)nearbyint(b->cmid * (0.25 / exp));
            if (b->cse < 1)
                b->cse = 1;
            /* timm: has_skip = (in == out and stride == 1) and not noskip;
             * the DS block also checks in == out. */
            b->residual = b->stride == 1 && cin == cout;
            cin = cout;
        }
    }
    a->n_blocks = n;
    return TD_OK;
}

td_status td_tn_arch_preset(td_tn_arch *a, const char *name, int classes,
                            td_error *err)
{
    const char *v = name;
    size_t i;
    if (!strncmp(v, "tinynet_", 8) || !strncmp(v, "tinynet-", 8))
        v += 8;
    for (i = 0; i < N_PRESETS; i++)
        if (!strcmp(v, presets[i].name))
            return td_tn_arch_build(a, presets[i].r, presets[i].d,
                                    presets[i].w, presets[i].resolution,
                                    classes, err);
    return td_error_set(err, TD_EINVAL,
                        "unknown TinyNet variant \"%s\" (tinynet_a..tinynet_e)",
                        name);
}

void td_tn_arch_count(const td_tn_arch *a, int h, int w, td_tn_counts *out)
{
    int64_t hw;
    int i;
    memset(out, 0, sizeof *out);
    /* stem: conv 3x3 s2 (no bias) + BN */
    h = td_tn_conv_out(h, TD_TN_STEM_K, 2);
    w = td_tn_conv_out(w, TD_TN_STEM_K, 2);
    hw = (int64_t)h * w;
    out->params += (int64_t)a->stem * 3 * 9 + 2 * a->stem;
    out->macs_stem = hw * a->stem * 3 * 9;
    for (i = 0; i < a->n_blocks; i++) {
        const td_tn_block *b = &a->blocks[i];
        int64_t kk = (int64_t)b->k * b->k;
        if (b->type == TD_TN_IR) {
            out->params += (int64_t)b->cin * b->cmid + 2 * b->cmid;
            out->macs_pointwise += hw * b->cin * b->cmid;
        }
        h = td_tn_conv_out(h, b->k, b->stride);
        w = td_tn_conv_out(w, b->k, b->stride);
        hw = (int64_t)h * w;
        out->params += kk * b->cmid + 2 * b->cmid;
        out->macs_depthwise += hw * kk * b->cmid;
        /* SE: two 1x1 convs with bias on the pooled vector */
        out->params += 2 * (int64_t)b->cmid * b->cse + b->cse + b->cmid;
        out->macs_se += 2 * (int64_t)b->cmid * b->cse;
        out->params += (int64_t)b->cmid * b->cout + 2 * b->cout;
        out->macs_pointwise += hw * b->cmid * b->cout;
    }
    {
        int cin = a->n_blocks ? a->blocks[a->n_blocks - 1].cout : a->stem;
        out->params += (int64_t)cin * a->head + 2 * a->head;
        out->macs_pointwise += hw * cin * a->head;
        out->params += (int64_t)a->head * a->classes + a->classes;
        out->macs_pointwise += (int64_t)a->head * a->classes;
    }
    out->macs = out->macs_stem + out->macs_pointwise + out->macs_depthwise +
                out->macs_se;
}

/* Budget ratio nodes for the tiny formula: B0 and TinyNet-A..E, with c the
 * model's exact count over B0's exact count (both at 1000 classes). */
static int64_t count_at(double r, double d, double w, int res, int classes)
{
    td_tn_arch a;
    td_tn_counts c;
    if (td_tn_arch_build(&a, r, d, w, res, classes, NULL) != TD_OK)
        return -1;
    td_tn_arch_count(&a, a.resolution, a.resolution, &c);
    return c.macs;
}

td_status td_tn_arch_for_flops(td_tn_arch *a, double macs, int classes,
                               td_error *err)
{
    double lc[N_PRESETS + 1], rr[N_PRESETS + 1], dd[N_PRESETS + 1];
    double b0 = (double)count_at(1, 1, 1, 224, 1000), x, r, d, t;
    int i, n = (int)N_PRESETS + 1, lo, hi, res;
    int64_t budget = (int64_t)macs;
    td_error e2;
    /* Above B0 the formula has nothing to follow: r = d = 1, w grows. */
    if (!(macs >= 1e6 && macs <= 2 * b0))
        return td_error_set(err, TD_EINVAL,
                            "FLOPs budget %.4gM: must be 1M..%.4gM (2x B0)",
                            macs / 1e6, 2 * b0 / 1e6);
    /* nodes in increasing c: E, D, C, B, A, B0 */
    for (i = 0; i < (int)N_PRESETS; i++) {
        int p = (int)N_PRESETS - 1 - i;
        lc[i] = log((double)count_at(presets[p].r, presets[p].d, presets[p].w,
                                     presets[p].resolution, 1000) / b0);
        rr[i] = presets[p].r;
        dd[i] = presets[p].d;
    }
    lc[n - 1] = 0;
    rr[n - 1] = 1;
    dd[n - 1] = 1;
    x = log(macs / b0);
    if (x <= lc[0]) { /* below TinyNet-E: keep E's r and d, shrink w */
        r = rr[0];
        d = dd[0];
    } else if (x >= lc[n - 1]) {
        r = 1;
        d = 1;
    } else {
        for (i = 1; i < n - 1 && x > lc[i]; i++)
            ;
        t = (x - lc[i - 1]) / (lc[i] - lc[i - 1]);
        r = rr[i - 1] + t * (rr[i] - rr[i - 1]);
        d = dd[i - 1] + t * (dd[i] - dd[i - 1]);
    }
    /* round to 3 decimals so the result can be written down and rebuilt */
    r = nearbyint(r * 1000) / 1000;
    d = nearbyint(d * 1000) / 1000;
    res = (int)(224.0 * r);
    /* w: the largest multiple of 0.001 whose exact count fits. The count
     * grows monotonically with w (rounding to 8 is monotone). */
    lo = 1;
    hi = 4000;
    if (count_at(r, d, lo / 1000.0, res, classes) > budget)
        return td_error_set(err, TD_EINVAL,
                            "FLOPs budget %.4gM is below the smallest TinyNet "
                            "at r=%g d=%g (%.4gM)",
                            macs / 1e6, r, d,
                            (double)count_at(r, d, lo / 1000.0, res, classes) / 1e6);
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (count_at(r, d, mid / 1000.0, res, classes) <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (td_tn_arch_build(a, r, d, lo / 1000.0, res, classes, &e2) != TD_OK) {
        if (err)
            *err = e2;
        return e2.status;
    }
    return TD_OK;
}

void td_tn_block_name(char *buf, size_t len, const td_tn_block *b,
                      const char *part, const char *leaf)
{
    snprintf(buf, len, "blocks.%d.%d.%s.%s", b->stage, b->index, part, leaf);
}

td_tn_block_names td_tn_names_for(const td_tn_block *b)
{
    td_tn_block_names n;
    if (b->type == TD_TN_DS) {
        n.expand_conv = NULL;
        n.expand_bn = NULL;
        n.dw_conv = "conv_dw";
        n.dw_bn = "bn1";
        n.proj_conv = "conv_pw";
        n.proj_bn = "bn2";
    } else {
        n.expand_conv = "conv_pw";
        n.expand_bn = "bn1";
        n.dw_conv = "conv_dw";
        n.dw_bn = "bn2";
        n.proj_conv = "conv_pwl";
        n.proj_bn = "bn3";
    }
    return n;
}
