/* td_image: decoding JPEG/PNG bytes and turning them into model input, as
 * timm's eval transform does on a PIL image.
 *
 *   td_image_probe       header only (JPEG SOF, PNG IHDR): format and size,
 *                        so a caller can refuse a huge image before decoding.
 *   td_image_decode      JPEG (libjpeg-turbo) or PNG (libpng) to RGB8, HWC.
 *                        Size limits are checked before any pixel buffer is
 *                        allocated. Corrupt or truncated data is TD_EFORMAT.
 *   td_image_preprocess  Resize (shorter side to floor(size / crop_pct)),
 *                        CenterCrop, ToTensor, Normalize, written as CHW
 *                        floats. The resize reproduces PIL's Image.resize
 *                        (8-bit fixed point, horizontal then vertical pass,
 *                        uint8 after each pass), so results are bit-identical
 *                        to torchvision on PIL images; see docs/IMAGES.md.
 *
 * Colour handling is PIL's `Image.open(f).convert('RGB')`: gray is
 * replicated, alpha is dropped (not composited), palettes are expanded,
 * 16-bit samples keep their high byte, CMYK is converted as PIL does
 * (Adobe-inverted CMYK). EXIF orientation and colour profiles are ignored,
 * as timm's loaders ignore them.
 *
 * Thread: every function is reentrant; no global state. Memory: a decoded
 * td_image owns its pixels (free with td_image_free); preprocess writes to
 * the caller's buffer and takes scratch from the caller's arena (or malloc
 * when the arena is NULL). */
#ifndef TD_IMAGE_H
#define TD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "td_arena.h"
#include "td_err.h"

typedef enum td_image_format {
    TD_IMAGE_UNKNOWN = 0,
    TD_IMAGE_JPEG,
    TD_IMAGE_PNG
} td_image_format;

/* "jpeg", "png" or "unknown". Static storage. */
const char *td_image_format_name(td_image_format fmt);

/* Refusal limits. A field of 0 means "no limit" for that field. */
typedef struct td_image_limits {
    uint32_t max_width;
    uint32_t max_height;
    uint64_t max_pixels; /* width * height */
} td_image_limits;

/* Used when td_image_decode gets lim == NULL: 16384 per side, 40 Mpx
 * (120 MB of RGB). */
#define TD_IMAGE_DEFAULT_MAX_SIDE 16384u
#define TD_IMAGE_DEFAULT_MAX_PIXELS 40000000u

/* A decoded image: RGB8, (height, width, 3) HWC, rows packed. */
typedef struct td_image {
    int width;
    int height;
    td_image_format format; /* what it was decoded from */
    uint8_t *rgb;           /* owned; width * height * 3 bytes */
} td_image;

/* Reads the container header only (no decoding, no allocation): the format
 * and the size the file claims. TD_EUNSUPPORTED for other formats (GIF,
 * WebP, BMP are named in the message), TD_EFORMAT for a damaged header.
 * The claimed size is not proof the pixels are there: decode checks. */
td_status td_image_probe(const void *buf, size_t len, td_image_format *fmt,
                         int *width, int *height, td_error *err);

/* TD_ETOOBIG (413) when width x height exceeds lim (NULL: the defaults),
 * naming the size and the limit. */
td_status td_image_check_limits(int width, int height,
                                const td_image_limits *lim, td_error *err);

/* Decodes a JPEG or PNG into *out (zeroed first; on error nothing is left
 * to free). The size is checked against lim (NULL: the defaults) after the
 * header is parsed and before the pixel buffer is allocated. Truncated data,
 * bad Huffman codes, CRC or zlib errors are TD_EFORMAT; only harmless
 * libjpeg warnings (junk before a marker, unknown JFIF/Adobe versions) are
 * tolerated. */
td_status td_image_decode(const void *buf, size_t len,
                          const td_image_limits *lim, td_image *out,
                          td_error *err);
void td_image_free(td_image *img);

typedef enum td_interp {
    TD_INTERP_BILINEAR = 0, /* PIL BILINEAR: triangle, support 1 */
    TD_INTERP_BICUBIC       /* PIL BICUBIC: cubic a = -0.5, support 2 */
} td_interp;

/* "bilinear" / "bicubic" (timm's pretrained_cfg names) to td_interp.
 * TD_EUNSUPPORTED for anything else ("nearest", "lanczos", ...). */
td_status td_interp_parse(const char *name, td_interp *out, td_error *err);
const char *td_interp_name(td_interp interp);

/* The eval transform of one model (from its metadata). */
typedef struct td_image_transform {
    int out_h, out_w;   /* model input size, e.g. 224 x 224 */
    double crop_pct;    /* (0, 2]: resize target = floor(size / crop_pct) */
    td_interp interp;
    float mean[3];      /* per channel, on the 0..1 scale; [0] only when */
    float std[3];       /* grayscale */
    int grayscale;      /* 1: one output channel, PIL convert('L') first */
} td_image_transform;

/* TD_EINVAL naming the bad field (size, crop_pct, std == 0, ...). */
td_status td_image_transform_check(const td_image_transform *tf,
                                   td_error *err);

/* Output channels (1 or 3) and floats written by td_image_preprocess. */
int td_image_transform_channels(const td_image_transform *tf);

/* Bytes of scratch td_image_preprocess takes from an arena for a source of
 * src_w x src_h (already rounded for td_arena_alloc); SIZE_MAX if the
 * transform is invalid. */
size_t td_image_preprocess_scratch(const td_image_transform *tf, int src_w,
                                   int src_h);

/* An upper bound of td_image_preprocess_scratch over every source size
 * that passes lim (NULL: the defaults), so a worker can size its arena once
 * per model; SIZE_MAX if the transform is invalid. */
size_t td_image_preprocess_scratch_max(const td_image_transform *tf,
                                       const td_image_limits *lim);

/* timm transforms_imagenet_eval on a PIL image, i.e.
 *   [convert('L') if grayscale]
 *   Resize(floor(size / crop_pct), interp)  shorter side, aspect kept
 *     (out_h != out_w: timm's ResizeKeepRatio, both sides round(side/r))
 *   CenterCrop((out_h, out_w))              zero padding if too small
 *   ToTensor()  (x / 255)   Normalize(mean, std)
 * Only the pixels inside the crop are resampled.
 * in: img (H,W,3) HWC uint8; out: (C,out_h,out_w) CHW float32, C = 1 or 3.
 * scratch: td_image_preprocess_scratch bytes are taken and released again;
 * NULL means malloc/free. */
td_status td_image_preprocess(const td_image *img,
                              const td_image_transform *tf, float *out,
                              td_arena *scratch, td_error *err);

#endif
