/* td_idx: IDX reader, dataset pairing and the augmented view. */
#include "config.h"

#include "td_idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

const char *const td_fashion_mnist_labels[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/* Read exactly len bytes; 0 on success. */
static int read_full(gzFile g, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        unsigned chunk = len > (1u << 30) ? (1u << 30) : (unsigned)len;
        int got = gzread(g, p, chunk);
        if (got <= 0)
            return -1;
        p += got;
        len -= (size_t)got;
    }
    return 0;
}

td_status td_idx_read(td_idx *out, const char *path, td_error *err)
{
    unsigned char head[4], dimb[4];
    size_t len = 1;
    gzFile g;
    memset(out, 0, sizeof *out);
    g = gzopen(path, "rb");
    if (!g)
        return td_error_set(err, errno == ENOENT ? TD_ENOTFOUND : TD_EIO,
                            "%s: cannot open: %s", path,
                            errno ? strerror(errno) : "zlib error");
    if (read_full(g, head, 4)) {
        gzclose(g);
        return td_error_set(err, TD_EFORMAT,
                            "%s: truncated: no IDX magic number", path);
    }
    if (head[0] != 0 || head[1] != 0) {
        gzclose(g);
        return td_error_set(err, TD_EFORMAT,
                            "%s: bad IDX magic %02x%02x%02x%02x (must start "
                            "with two zero bytes)",
                            path, head[0], head[1], head[2], head[3]);
    }
    if (head[2] != 0x08) {
        gzclose(g);
        return td_error_set(err, TD_EUNSUPPORTED,
                            "%s: IDX type 0x%02x: only unsigned bytes (0x08) "
                            "are supported",
                            path, head[2]);
    }
    if (head[3] < 1 || head[3] > TD_IDX_MAX_DIMS) {
        gzclose(g);
        return td_error_set(err, TD_EFORMAT,
                            "%s: IDX dimension count %d: must be 1..%d", path,
                            head[3], TD_IDX_MAX_DIMS);
    }
    out->ndim = head[3];
    for (int i = 0; i < out->ndim; i++) {
        if (read_full(g, dimb, 4)) {
            gzclose(g);
            return td_error_set(err, TD_EFORMAT,
                                "%s: truncated in dimension %d", path, i);
        }
        out->dims[i] = (uint32_t)dimb[0] << 24 | (uint32_t)dimb[1] << 16 |
                       (uint32_t)dimb[2] << 8 | dimb[3];
        if (out->dims[i] == 0 || out->dims[i] > TD_IDX_MAX_BYTES / len) {
            gzclose(g);
            return td_error_set(err, TD_EFORMAT,
                                "%s: dimension %d = %u: zero or too large",
                                path, i, out->dims[i]);
        }
        len *= out->dims[i];
    }
    out->data = malloc(len);
    if (!out->data) {
        gzclose(g);
        return td_error_set(err, TD_ENOMEM, "%s: %zu bytes", path, len);
    }
    out->len = len;
    if (read_full(g, out->data, len)) {
        int zerr;
        char zmsg[128]; /* gzerror's string dies with gzclose */
        snprintf(zmsg, sizeof zmsg, "%s", gzerror(g, &zerr));
        gzclose(g);
        td_idx_free(out);
        return td_error_set(err, TD_EFORMAT,
                            "%s: truncated: header promises %zu data bytes%s%s",
                            path, len, zerr ? ": " : "", zerr ? zmsg : "");
    }
    if (gzread(g, dimb, 1) != 0) {
        gzclose(g);
        td_idx_free(out);
        return td_error_set(err, TD_EFORMAT,
                            "%s: trailing bytes after %zu data bytes", path,
                            len);
    }
    gzclose(g);
    return TD_OK;
}

void td_idx_free(td_idx *x)
{
    free(x->data);
    memset(x, 0, sizeof *x);
}

td_status td_dataset_from_idx(td_dataset *out, td_idx *images,
                              td_idx *labels, int classes, td_error *err)
{
    td_status st = TD_OK;
    memset(out, 0, sizeof *out);
    if (images->ndim != 3)
        st = td_error_set(err, TD_EFORMAT,
                          "images: %d dimensions, expected 3 (N, H, W)",
                          images->ndim);
    else if (labels->ndim != 1)
        st = td_error_set(err, TD_EFORMAT,
                          "labels: %d dimensions, expected 1 (N)",
                          labels->ndim);
    else if (images->dims[0] != labels->dims[0])
        st = td_error_set(err, TD_EFORMAT,
                          "%u images but %u labels", images->dims[0],
                          labels->dims[0]);
    else if (images->dims[0] > (1u << 30) || images->dims[1] > 4096 ||
             images->dims[2] > 4096)
        st = td_error_set(err, TD_EFORMAT, "images: %u x %u x %u too large",
                          images->dims[0], images->dims[1], images->dims[2]);
    else
        for (size_t i = 0; i < labels->len; i++)
            if (labels->data[i] >= classes) {
                st = td_error_set(err, TD_EFORMAT,
                                  "label %zu is %d: must be < %d classes", i,
                                  labels->data[i], classes);
                break;
            }
    if (st != TD_OK) {
        td_idx_free(images);
        td_idx_free(labels);
        return st;
    }
    out->n = (int)images->dims[0];
    out->h = (int)images->dims[1];
    out->w = (int)images->dims[2];
    out->classes = classes;
    out->images = images->data;
    out->labels = labels->data;
    images->data = labels->data = NULL;
    td_idx_free(images);
    td_idx_free(labels);
    return TD_OK;
}

/* dir/prefix-kind-idxN-ubyte, gzipped first. */
static td_status read_part(td_idx *x, const char *dir, const char *prefix,
                           const char *kind, int nd, td_error *err)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s-%s-idx%d-ubyte.gz", dir, prefix, kind,
             nd);
    f = fopen(path, "rb");
    if (f)
        fclose(f);
    else
        snprintf(path, sizeof path, "%s/%s-%s-idx%d-ubyte", dir, prefix, kind,
                 nd);
    return td_idx_read(x, path, err);
}

td_status td_dataset_load(td_dataset *out, const char *dir,
                          const char *prefix, int classes, td_error *err)
{
    td_idx im, lb;
    td_status st;
    memset(out, 0, sizeof *out);
    st = read_part(&im, dir, prefix, "images", 3, err);
    if (st != TD_OK)
        return st;
    st = read_part(&lb, dir, prefix, "labels", 1, err);
    if (st != TD_OK) {
        td_idx_free(&im);
        return st;
    }
    st = td_dataset_from_idx(out, &im, &lb, classes, err);
    if (st != TD_OK)
        td_error_prefix(err, "%s/%s", dir, prefix);
    return st;
}

void td_dataset_free(td_dataset *d)
{
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

static float pixel(const uint8_t *img, int h, int w, int y, int x)
{
    return (y < 0 || y >= h || x < 0 || x >= w) ? 0.0f
                                                : (float)img[y * w + x];
}

void td_dataset_view(const td_dataset *d, int i, int dx, int dy, int flip,
                     int out_h, int out_w, float mean, float std, float *out)
{
    const uint8_t *img = d->images + (size_t)i * d->h * d->w;
    float sy = (float)d->h / out_h, sx = (float)d->w / out_w;
    for (int oy = 0; oy < out_h; oy++) {
        /* source row in the shifted frame, PyTorch half-pixel centres,
         * clamped at the near edge as PyTorch does */
        float fy = (oy + 0.5f) * sy - 0.5f;
        if (fy < 0)
            fy = 0;
        int y0 = (int)fy;
        float ay = fy - y0;
        for (int ox = 0; ox < out_w; ox++) {
            int oxx = flip ? out_w - 1 - ox : ox;
            float fx = (oxx + 0.5f) * sx - 0.5f;
            if (fx < 0)
                fx = 0;
            int x0 = (int)fx;
            float ax = fx - x0;
            /* the crop shifts the window: sample (y + dy, x + dx), zero
             * outside the original image (the padding) */
            int yy = y0 + dy, xx = x0 + dx;
            int y1 = y0 + 1 < d->h ? yy + 1 : yy;
            int x1 = x0 + 1 < d->w ? xx + 1 : xx;
            float v = (1 - ay) * ((1 - ax) * pixel(img, d->h, d->w, yy, xx) +
                                  ax * pixel(img, d->h, d->w, yy, x1)) +
                      ay * ((1 - ax) * pixel(img, d->h, d->w, y1, xx) +
                            ax * pixel(img, d->h, d->w, y1, x1));
            out[oy * out_w + ox] = (v / 255.0f - mean) / std;
        }
    }
}
