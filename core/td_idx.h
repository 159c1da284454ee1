/* td_idx: IDX files (the MNIST / Fashion-MNIST container) and the image
 * dataset tinyd-train learns from.
 *
 * An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte, the
 * only type accepted here), a dimension count, then one big-endian uint32
 * per dimension, then the data. Files may be gzipped or not (zlib reads
 * both). Every field is checked: magic, type, dimension count, sizes, the
 * data length (a truncated file and trailing bytes are both errors), and
 * for a dataset, that the image and label counts agree and every label is
 * below the class count.
 *
 * Memory: a td_idx / td_dataset owns its arrays (free with the matching
 * *_free). Thread: any; no shared state. */
#ifndef TD_IDX_H
#define TD_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"

#define TD_IDX_MAX_DIMS 4
#define TD_IDX_MAX_BYTES ((size_t)1 << 31)

typedef struct td_idx {
    int ndim;
    uint32_t dims[TD_IDX_MAX_DIMS];
    uint8_t *data; /* owned: product of dims bytes */
    size_t len;
} td_idx;

/* Read an IDX file of unsigned bytes; `path` may be gzipped. */
td_status td_idx_read(td_idx *out, const char *path, td_error *err);
void td_idx_free(td_idx *x);

typedef struct td_dataset {
    int n, h, w;      /* n images of h x w grey pixels */
    int classes;
    uint8_t *images;  /* owned: (N, H, W) */
    uint8_t *labels;  /* owned: (N) */
} td_dataset;

/* Load `dir`/<prefix>-images-idx3-ubyte[.gz] and the matching labels file
 * (prefix "train" or "t10k"), checking that the counts agree and that
 * every label is < classes. */
td_status td_dataset_load(td_dataset *out, const char *dir,
                          const char *prefix, int classes, td_error *err);
/* Pair two already-read files (tests use this directly). Takes ownership
 * of both on success and on failure. */
td_status td_dataset_from_idx(td_dataset *out, td_idx *images,
                              td_idx *labels, int classes, td_error *err);
void td_dataset_free(td_dataset *d);

/* One training or evaluation view of image i: crop by (dx, dy) pixels of
 * shift inside a zero-padded frame, optional horizontal flip, bilinear
 * resize to out_h x out_w (PyTorch align_corners=False), then
 * (x / 255 - mean) / std. out: (out_h, out_w) floats (one channel). */
void td_dataset_view(const td_dataset *d, int i, int dx, int dy, int flip,
                     int out_h, int out_w, float mean, float std, float *out);

/* Fashion-MNIST's class names, in label order. */
extern const char *const td_fashion_mnist_labels[10];

#endif
