#include "config.h"

#include <math.h>
#include <string.h>

#include "td_scaling.h"

td_status td_scaling_parse(const char *name, td_scaling_rule *out,
                           td_error *err)
{
    if (!strcmp(name, "tiny"))
        *out = TD_SCALING_TINY;
    else if (!strcmp(name, "compound"))
        *out = TD_SCALING_COMPOUND;
    else
        return td_error_set(err, TD_EINVAL,
                            "scaling \"%s\": expected tiny or compound", name);
    return TD_OK;
}

const char *td_scaling_name(td_scaling_rule rule)
{
    return rule == TD_SCALING_COMPOUND ? "compound" : "tiny";
}

static int res_for(double r, int base_res)
{
    return (int)((double)base_res * r);
}

int64_t td_scaling_macs(double r, double d, double w, int base_res,
                        int classes)
{
    td_tn_arch a;
    td_tn_counts c;
    if (td_tn_arch_build(&a, r, d, w, res_for(r, base_res), classes, NULL) !=
        TD_OK)
        return -1;
    td_tn_arch_count(&a, a.resolution, a.resolution, &c);
    return c.macs;
}

static double round3(double x)
{
    return nearbyint(x * 1000) / 1000;
}

/* (r, d, w) of compound scaling at phi = k / 1000, rounded to 3 decimals
 * so the result can be written down and rebuilt. */
static void compound_at(int k, double *r, double *d, double *w)
{
    double phi = k / 1000.0;
    *r = round3(pow(TD_SCALING_GAMMA, phi));
    *d = round3(pow(TD_SCALING_ALPHA, phi));
    *w = round3(pow(TD_SCALING_BETA, phi));
}

static int64_t compound_macs(int k, int base_res, int classes)
{
    double r, d, w;
    compound_at(k, &r, &d, &w);
    if (!(r > 0 && d > 0 && w > 0))
        return -1;
    return td_scaling_macs(r, d, w, base_res, classes);
}

static td_status solve_compound(td_tn_arch *a, double macs, int base_res,
                                int classes, double *phi, td_error *err)
{
    int64_t budget = (int64_t)macs, m;
    /* phi from the smallest buildable network (resolution 8) up to d = 4
     * (phi ~ 7.6); every count is non-decreasing in phi, because r, d and
     * w are, and so are the channel and depth rounding. */
    int lo = (int)ceil(1000.0 * log(8.0 / base_res) / log(TD_SCALING_GAMMA));
    int hi = 7000;
    double r, d, w;
    while (lo < hi && compound_macs(lo, base_res, classes) < 0)
        lo++;
    m = compound_macs(lo, base_res, classes);
    if (m < 0 || m > budget)
        return td_error_set(err, TD_EINVAL,
                            "FLOPs budget %.4gM is below the smallest "
                            "compound-scaled network at base resolution %d "
                            "(%.4gM at phi = %.3f)",
                            macs / 1e6, base_res, m / 1e6, lo / 1000.0);
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        m = compound_macs(mid, base_res, classes);
        if (m >= 0 && m <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    compound_at(lo, &r, &d, &w);
    if (phi)
        *phi = lo / 1000.0;
    return td_tn_arch_build(a, r, d, w, res_for(r, base_res), classes, err);
}

static td_status solve_tiny(td_tn_arch *a, double macs, int base_res,
                            int classes, td_error *err)
{
    td_tn_arch e, t;
    double b0_here, b0_224, c, c_e, r, d;
    int64_t budget = (int64_t)macs;
    int lo = 1, hi = 4000;
    td_status st;
    if (base_res == 224) /* exactly today's formula */
        return td_tn_arch_for_flops(a, macs, classes, err);
    b0_here = (double)td_scaling_macs(1, 1, 1, base_res, classes);
    b0_224 = (double)td_scaling_macs(1, 1, 1, 224, 1000);
    if (!(b0_here > 0))
        return td_error_set(err, TD_EINVAL, "base resolution %d: no B0",
                            base_res);
    c = macs / b0_here;
    st = td_tn_arch_preset(&e, "tinynet_e", 1000, err);
    if (st != TD_OK)
        return st;
    c_e = (double)td_scaling_macs(e.r, e.d, e.w, 224, 1000) / b0_224;
    if (c <= c_e) { /* below TinyNet-E the curves keep E's r and d */
        r = e.r;
        d = e.d;
    } else {
        /* the same r(c), d(c) curves, read at the same ratio c */
        st = td_tn_arch_for_flops(&t, c * b0_224, 1000, err);
        if (st != TD_OK)
            return st;
        r = t.r;
        d = t.d;
    }
    if (td_scaling_macs(r, d, lo / 1000.0, base_res, classes) < 0 ||
        td_scaling_macs(r, d, lo / 1000.0, base_res, classes) > budget)
        return td_error_set(
            err, TD_EINVAL,
            "FLOPs budget %.4gM is below the smallest TinyNet at r=%g d=%g "
            "and base resolution %d (%.4gM)",
            macs / 1e6, r, d, base_res,
            td_scaling_macs(r, d, lo / 1000.0, base_res, classes) / 1e6);
    while (lo < hi) { /* the count is non-decreasing in w */
        int mid = lo + (hi - lo + 1) / 2;
        int64_t m = td_scaling_macs(r, d, mid / 1000.0, base_res, classes);
        if (m >= 0 && m <= budget)
            lo = mid;
        else
            hi = mid - 1;
    }
    return td_tn_arch_build(a, r, d, lo / 1000.0, res_for(r, base_res),
                            classes, err);
}

td_status td_scaling_for_flops(td_tn_arch *a, td_scaling_rule rule,
                               double macs, int base_res, int classes,
                               double *phi, td_error *err)
{
    double b0;
    if (base_res < 8 || base_res > 1024)
        return td_error_set(err, TD_EINVAL,
                            "base resolution %d: must be 8..1024", base_res);
    b0 = (double)td_scaling_macs(1, 1, 1, base_res, classes);
    if (!(macs >= 1e5 && macs <= 2 * b0))
        return td_error_set(err, TD_EINVAL,
                            "FLOPs budget %.4gM: must be 0.1M..%.4gM (2x B0 "
                            "at %d px)",
                            macs / 1e6, 2 * b0 / 1e6, base_res);
    if (phi)
        *phi = 0;
    if (rule == TD_SCALING_COMPOUND)
        return solve_compound(a, macs, base_res, classes, phi, err);
    return solve_tiny(a, macs, base_res, classes, err);
}
