/* td_tinynet_arch: the TinyNet architecture as plain numbers.
 *
 * TinyNet (Han et al., "Model Rubik's Cube", NeurIPS 2020) is EfficientNet-B0
 * scaled by resolution r, depth d and width w. This module expands (r, d, w)
 * into the exact block list timm's `_gen_tinynet` builds (stage table,
 * channel rounding, depth rounding, fixed 32-channel stem, head width), knows
 * the presets tinynet-a..e, derives (r, d, w) from a multiply-add budget
 * (the "tiny formula", see docs/TINYNET.md), counts parameters and
 * multiply-adds, and names every tensor the way timm's state_dict does.
 *
 * No weights and no allocation here: a td_tn_arch is a value type.
 * Thread: every function is pure; any thread. */
#ifndef TD_TINYNET_ARCH_H
#define TD_TINYNET_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"

#define TD_TN_STAGES 7
#define TD_TN_MAX_BLOCKS 64   /* caps d at about 4 (16 base repeats) */
#define TD_TN_STEM 32         /* timm: fix_stem=True */
#define TD_TN_STEM_K 3
#define TD_TN_BN_EPS 1e-5f    /* PyTorch BatchNorm2d default */
#define TD_TN_MAX_CLASSES 100000
#define TD_TN_NAME_MAX 64     /* longest tensor name, with its NUL */

typedef enum td_tn_block_type {
    TD_TN_DS, /* depthwise-separable: dw -> SE -> pw (no expansion) */
    TD_TN_IR  /* inverted residual: pw expand -> dw -> SE -> pw project */
} td_tn_block_type;

/* One block, named blocks.<stage>.<index> in timm's state_dict. */
typedef struct td_tn_block {
    td_tn_block_type type;
    int stage, index;  /* position in timm's blocks.i.j */
    int k, stride;     /* depthwise kernel (3 or 5) and stride (1 or 2) */
    int cin, cmid, cout; /* cmid == cin for DS blocks */
    int cse;           /* squeeze-excitation reduced channels */
    int residual;      /* 1: out = in + block(in) (stride 1, cin == cout) */
} td_tn_block;

typedef struct td_tn_arch {
    double r, d, w;    /* resolution, depth and width multipliers */
    int resolution;    /* default square input size, int(224 * r) */
    int classes;
    int stem;          /* stem output channels (32) */
    int head;          /* conv_head output channels, max(1280, 1280w rounded) */
    int n_blocks;
    int stage_repeats[TD_TN_STAGES];
    td_tn_block blocks[TD_TN_MAX_BLOCKS];
} td_tn_arch;

/* timm's make_divisible(v, divisor) with min_value = divisor and
 * round_limit 0.9: round to the nearest multiple, and add one divisor more
 * when that lost more than 10% of v. */
int td_tn_make_divisible(double v, int divisor);
/* timm's depth_trunc='round': max(1, round-half-even(repeats * d)). */
int td_tn_round_repeats(int repeats, double d);

/* Build the block list for (r, d, w) and `classes`. resolution <= 0 means
 * int(224 * r). Fails (EINVAL) for out-of-range multipliers. */
td_status td_tn_arch_build(td_tn_arch *a, double r, double d, double w,
                           int resolution, int classes, td_error *err);
/* Presets by name: "tinynet_a".."tinynet_e", also "tinynet-a" or "a". */
td_status td_tn_arch_preset(td_tn_arch *a, const char *name, int classes,
                            td_error *err);

/* Output size of a k-tap convolution with symmetric padding k/2. */
static inline int td_tn_conv_out(int in, int k, int stride)
{
    return (in + 2 * (k / 2) - k) / stride + 1;
}

/* Counts for an input of h x w pixels. Parameters are the trainable ones
 * (conv and linear weights and biases, BatchNorm weight and bias; not the
 * running statistics), as timm's published counts. MACs are the
 * multiply-adds of every convolution and the classifier (what the paper's
 * table reports within about 1%; see docs/TINYNET.md). */
typedef struct td_tn_counts {
    int64_t params;
    int64_t macs;
    int64_t macs_pointwise; /* 1x1 convs + classifier: the sgemm share */
    int64_t macs_depthwise;
    int64_t macs_stem;
    int64_t macs_se;
} td_tn_counts;
void td_tn_arch_count(const td_tn_arch *a, int h, int w, td_tn_counts *out);

/* The tiny formula: (r, d, w) for a budget of `macs` multiply-adds at
 * `classes` classes. r and d follow the published TinyNet models as a
 * function of the budget ratio c = macs / 387M (piecewise linear in log c
 * through B0 and TinyNet-A..E); w is then the largest width whose exact
 * layer-by-layer count stays within the budget. */
td_status td_tn_arch_for_flops(td_tn_arch *a, double macs, int classes,
                               td_error *err);

/* timm state_dict tensor names. `part` is the module path inside a block
 * ("conv_dw", "bn1", "se.conv_reduce", ...) and `leaf` the parameter
 * ("weight", "running_mean", ...). Writes into buf (TD_TN_NAME_MAX bytes). */
void td_tn_block_name(char *buf, size_t len, const td_tn_block *b,
                      const char *part, const char *leaf);

/* Module names (without .weight) of a block's convolutions and their
 * BatchNorms, in the order the forward pass runs them, as timm names them:
 * DS: conv_dw/bn1, conv_pw/bn2. IR: conv_pw/bn1, conv_dw/bn2, conv_pwl/bn3. */
typedef struct td_tn_block_names {
    const char *expand_conv, *expand_bn; /* NULL for DS */
    const char *dw_conv, *dw_bn;
    const char *proj_conv, *proj_bn;
} td_tn_block_names;
td_tn_block_names td_tn_names_for(const td_tn_block *b);

#endif
