/* td_image: JPEG/PNG decoding (libjpeg-turbo, libpng) and timm's eval
 * transform with PIL's resampling arithmetic. */
#include "config.h"

#include "td_image.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

/* A progressive JPEG may legally have many scans, but real encoders write
 * about ten; each scan re-walks the coefficient buffer, so a crafted file
 * with thousands of tiny scans costs CPU out of proportion to its size. */
#define TD_JPEG_MAX_SCANS 500
/* Ancillary PNG chunks (iCCP, zTXt, ...) are decompressed into memory by
 * libpng; none is needed for pixels, so cap them. */
#define TD_PNG_CHUNK_MAX ((png_alloc_size_t)4 << 20)

const char *td_image_format_name(td_image_format fmt)
{
    switch (fmt) {
    case TD_IMAGE_JPEG: return "jpeg";
    case TD_IMAGE_PNG: return "png";
    default: return "unknown";
    }
}

/* ------------------------------------------------------------ probing */

static const unsigned char png_signature[8] = {0x89, 'P', 'N', 'G',
                                               '\r', '\n', 0x1a, '\n'};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static unsigned be16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | (unsigned)p[1];
}

/* Names formats we do not decode, so the client learns what it sent. */
static const char *other_format(const unsigned char *b, size_t len)
{
    if (len >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6)))
        return "GIF";
    if (len >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        return "WebP";
    if (len >= 2 && !memcmp(b, "BM", 2))
        return "BMP";
    if (len >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4)))
        return "TIFF";
    if (len >= 12 && !memcmp(b + 4, "ftyp", 4))
        return "HEIF/AVIF";
    return NULL;
}

static td_status probe_png(const unsigned char *b, size_t len, int *w,
                           int *h, td_error *err)
{
    uint32_t pw, ph;
    if (len < 24)
        return td_error_set(err, TD_EFORMAT,
                            "png: file of %zu bytes ends inside the header",
                            len);
    if (be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0)
        return td_error_set(err, TD_EFORMAT,
                            "png: first chunk is not a 13-byte IHDR");
    pw = be32(b + 16);
    ph = be32(b + 20);
    /* PNG allows 1 .. 2^31-1 per side. */
    if (pw == 0 || ph == 0 || pw > INT_MAX || ph > INT_MAX)
        return td_error_set(err, TD_EFORMAT,
                            "png: IHDR size %" PRIu32 "x%" PRIu32
                            " is out of range", pw, ph);
    *w = (int)pw;
    *h = (int)ph;
    return TD_OK;
}

static int is_jpeg_sof(unsigned m)
{
    /* SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC). */
    return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

/* Walks the marker segments up to the first SOFn. */
static td_status probe_jpeg(const unsigned char *b, size_t len, int *w,
                            int *h, td_error *err)
{
    size_t p = 2;
    for (;;) {
        unsigned m, seglen;
        /* Like libjpeg, skip stray bytes before a marker. */
        while (p < len && b[p] != 0xFF)
            p++;
        while (p < len && b[p] == 0xFF)
            p++;
        if (p >= len)
            return td_error_set(err, TD_EFORMAT,
                                "jpeg: file ends before the frame header "
                                "(SOF)");
        m = b[p++];
        /* FF 00 is a stuffed data byte, not a marker; TEM and RSTn have no
         * length. libjpeg skips all three the same way. */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue;
        if (m == 0xD8 || m == 0xD9 || m == 0xDA)
            return td_error_set(err, TD_EFORMAT,
                                "jpeg: marker 0x%02X before the frame "
                                "header (SOF)", m);
        if (len - p < 2)
            return td_error_set(err, TD_EFORMAT,
                                "jpeg: file ends inside marker 0x%02X", m);
        seglen = be16(b + p);
        if (seglen < 2 || seglen > len - p)
            return td_error_set(err, TD_EFORMAT,
                                "jpeg: marker 0x%02X at byte %zu has "
                                "length %u beyond the file", m, p - 2,
                                seglen);
        if (is_jpeg_sof(m)) {
            unsigned fh, fw;
            if (seglen < 8)
                return td_error_set(err, TD_EFORMAT,
                                    "jpeg: frame header of %u bytes is too "
                                    "short", seglen);
            fh = be16(b + p + 3);
            fw = be16(b + p + 5);
            if (fh == 0)
                return td_error_set(err, TD_EUNSUPPORTED,
                                    "jpeg: height defined by a DNL marker "
                                    "is not supported");
            if (fw == 0)
                return td_error_set(err, TD_EFORMAT,
                                    "jpeg: frame header says width 0");
            *w = (int)fw;
            *h = (int)fh;
            return TD_OK;
        }
        p += seglen;
    }
}

td_status td_image_probe(const void *buf, size_t len, td_image_format *fmt,
                         int *width, int *height, td_error *err)
{
    const unsigned char *b = buf;
    const char *other;
    int w = 0, h = 0;
    td_status st;
    td_image_format f = TD_IMAGE_UNKNOWN;
    if (fmt)
        *fmt = TD_IMAGE_UNKNOWN;
    if (width)
        *width = 0;
    if (height)
        *height = 0;
    if (!b || len == 0)
        return td_error_set(err, TD_EFORMAT, "image: empty data");
    if (len >= 8 && memcmp(b, png_signature, 8) == 0) {
        f = TD_IMAGE_PNG;
        st = probe_png(b, len, &w, &h, err);
    } else if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
        f = TD_IMAGE_JPEG;
        st = probe_jpeg(b, len, &w, &h, err);
    } else if ((other = other_format(b, len)) != NULL) {
        return td_error_set(err, TD_EUNSUPPORTED,
                            "image: %s is not supported (send JPEG or PNG)",
                            other);
    } else {
        return td_error_set(err, TD_EUNSUPPORTED,
                            "image: not a JPEG or PNG (first bytes "
                            "%02x %02x %02x %02x)", b[0],
                            len > 1 ? b[1] : 0, len > 2 ? b[2] : 0,
                            len > 3 ? b[3] : 0);
    }
    if (st != TD_OK)
        return st;
    if (fmt)
        *fmt = f;
    if (width)
        *width = w;
    if (height)
        *height = h;
    return TD_OK;
}

td_status td_image_check_limits(int width, int height,
                                const td_image_limits *lim, td_error *err)
{
    static const td_image_limits defaults = {
        TD_IMAGE_DEFAULT_MAX_SIDE, TD_IMAGE_DEFAULT_MAX_SIDE,
        TD_IMAGE_DEFAULT_MAX_PIXELS};
    uint64_t px;
    if (!lim)
        lim = &defaults;
    if (width <= 0 || height <= 0)
        return td_error_set(err, TD_EFORMAT, "image: size %dx%d is empty",
                            width, height);
    px = (uint64_t)width * (uint64_t)height;
    if (lim->max_width && (uint64_t)width > lim->max_width)
        return td_error_set(err, TD_ETOOBIG,
                            "image: width %d exceeds the limit of %" PRIu32,
                            width, lim->max_width);
    if (lim->max_height && (uint64_t)height > lim->max_height)
        return td_error_set(err, TD_ETOOBIG,
                            "image: height %d exceeds the limit of %" PRIu32,
                            height, lim->max_height);
    if (lim->max_pixels && px > lim->max_pixels)
        return td_error_set(err, TD_ETOOBIG,
                            "image: %dx%d is %" PRIu64 " pixels, over the "
                            "limit of %" PRIu64, width, height, px,
                            lim->max_pixels);
    /* The RGB buffer's size must fit size_t (and int math below). */
    if (px > (uint64_t)(SIZE_MAX / 3) || px > (uint64_t)INT_MAX)
        return td_error_set(err, TD_ETOOBIG,
                            "image: %dx%d is too large to hold", width,
                            height);
    return TD_OK;
}

void td_image_free(td_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------------ JPEG */

typedef struct jpeg_job {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[sizeof(((td_error *)0)->msg)];
    const td_image_limits *lim;
    td_status status; /* set before longjmp */
    uint8_t *pixels;  /* owned until handed to the td_image */
    uint8_t *cmyk_row;
} jpeg_job;

static void jpeg_fail(j_common_ptr c)
{
    jpeg_job *job = c->client_data;
    char text[JMSG_LENGTH_MAX];
    int code = c->err->msg_code;
    c->err->format_message(c, text);
    snprintf(job->msg, sizeof job->msg, "%s", text);
    /* Valid JPEGs this build cannot decode (12-bit, lossless, DNL) are
     * "unsupported", not "malformed". */
    job->status = code == JERR_BAD_PRECISION || code == JERR_NOT_COMPILED ||
                          code == JERR_SOF_UNSUPPORTED ||
                          code == JERR_ARITH_NOTIMPL ||
                          code == JERR_EMPTY_IMAGE
                      ? TD_EUNSUPPORTED
                      : TD_EFORMAT;
    longjmp(job->jb, 1);
}

/* Warnings about damaged entropy-coded data or a truncated file would
 * otherwise yield a partly grey image: those are errors here. */
static void jpeg_message(j_common_ptr c, int level)
{
    int code = c->err->msg_code;
    if (level >= 0)
        return; /* trace output */
    if (code == JWRN_EXTRANEOUS_DATA || code == JWRN_JFIF_MAJOR ||
        code == JWRN_ADOBE_XFORM || code == JWRN_BOGUS_ICC) {
        c->err->num_warnings++;
        return;
    }
    jpeg_fail(c);
}

static void jpeg_progress(j_common_ptr c)
{
    j_decompress_ptr d = (j_decompress_ptr)c;
    jpeg_job *job = c->client_data;
    if (d->input_scan_number > TD_JPEG_MAX_SCANS) {
        snprintf(job->msg, sizeof job->msg,
                 "more than %d progressive scans", TD_JPEG_MAX_SCANS);
        job->status = TD_EFORMAT;
        longjmp(job->jb, 1);
    }
}

/* PIL's cmyk2rgb on Adobe-inverted samples (PIL always assumes the Adobe
 * polarity for CMYK JPEGs): r = (255-k) - round_div255(c * (255-k)). */
static uint8_t cmyk_channel(unsigned c, unsigned nk)
{
    unsigned t = c * nk + 128;
    unsigned v = ((t >> 8) + t) >> 8;
    return (uint8_t)(nk > v ? nk - v : 0);
}

/* Everything that can longjmp happens in here; the caller owns job and
 * frees what it holds, so no local state crosses the jump. */
static int jpeg_run(jpeg_job *job, const unsigned char *buf, size_t len,
                    int *w, int *h)
{
    j_decompress_ptr d = &job->cinfo;
    td_error lerr;
    if (setjmp(job->jb))
        return -1;
    jpeg_create_decompress(d);
    d->client_data = job;
    jpeg_mem_src(d, buf, (unsigned long)len);
    jpeg_read_header(d, TRUE);
    if (td_image_check_limits((int)d->image_width, (int)d->image_height,
                              job->lim, &lerr) != TD_OK) {
        job->status = lerr.status;
        snprintf(job->msg, sizeof job->msg, "%s", lerr.msg);
        return -1;
    }
    switch (d->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        d->out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        d->out_color_space = JCS_CMYK;
        break;
    default:
        job->status = TD_EUNSUPPORTED;
        snprintf(job->msg, sizeof job->msg,
                 "colour space with %d components is not supported",
                 d->num_components);
        return -1;
    }
    d->progress = &job->progress;
    job->progress.progress_monitor = jpeg_progress;
    jpeg_start_decompress(d);
    *w = (int)d->output_width;
    *h = (int)d->output_height;
    if (*w != (int)d->image_width || *h != (int)d->image_height) {
        job->status = TD_EINTERNAL;
        snprintf(job->msg, sizeof job->msg, "unexpected output size");
        return -1;
    }
    job->pixels = malloc((size_t)*w * (size_t)*h * 3);
    if (d->out_color_space == JCS_CMYK)
        job->cmyk_row = malloc((size_t)*w * 4);
    if (!job->pixels || (d->out_color_space == JCS_CMYK && !job->cmyk_row)) {
        job->status = TD_ENOMEM;
        snprintf(job->msg, sizeof job->msg, "out of memory for %dx%d", *w,
                 *h);
        return -1;
    }
    while (d->output_scanline < d->output_height) {
        uint8_t *dst = job->pixels + (size_t)d->output_scanline * (size_t)*w * 3;
        JSAMPROW row = job->cmyk_row ? job->cmyk_row : dst;
        if (jpeg_read_scanlines(d, &row, 1) != 1) {
            /* Cannot happen with a memory source; never loop forever. */
            job->status = TD_EFORMAT;
            snprintf(job->msg, sizeof job->msg, "decoder stalled");
            return -1;
        }
        if (job->cmyk_row) {
            for (int x = 0; x < *w; x++) {
                const uint8_t *s = job->cmyk_row + 4 * (size_t)x;
                unsigned nk = s[3]; /* inverted k is 255 - k */
                dst[3 * x + 0] = cmyk_channel(255u - s[0], nk);
                dst[3 * x + 1] = cmyk_channel(255u - s[1], nk);
                dst[3 * x + 2] = cmyk_channel(255u - s[2], nk);
            }
        }
    }
    /* Reads up to EOI, so a file cut inside the last scan is caught. */
    jpeg_finish_decompress(d);
    return 0;
}

static td_status decode_jpeg(const unsigned char *buf, size_t len,
                             const td_image_limits *lim, td_image *out,
                             td_error *err)
{
    jpeg_job *job = calloc(1, sizeof *job);
    int w = 0, h = 0, rc;
    td_status st;
    if (!job)
        return td_error_set(err, TD_ENOMEM, "jpeg: out of memory");
    job->lim = lim;
    job->cinfo.err = jpeg_std_error(&job->jerr);
    job->jerr.error_exit = jpeg_fail;
    job->jerr.emit_message = jpeg_message;
    job->cinfo.client_data = job; /* before create: it may fail */
    rc = jpeg_run(job, buf, len, &w, &h);
    jpeg_destroy_decompress(&job->cinfo);
    free(job->cmyk_row);
    if (rc != 0) {
        st = td_error_set(err, job->status ? job->status : TD_EFORMAT,
                          "jpeg: %s", job->msg);
        free(job->pixels);
        free(job);
        return st;
    }
    out->width = w;
    out->height = h;
    out->format = TD_IMAGE_JPEG;
    out->rgb = job->pixels;
    free(job);
    return TD_OK;
}

/* ------------------------------------------------------------ PNG */

typedef struct png_job {
    const unsigned char *buf;
    size_t len, pos;
    char msg[sizeof(((td_error *)0)->msg)];
    td_status status;
    const td_image_limits *lim;
    png_structp png;
    png_infop info;
    uint8_t *pixels;
    png_bytep *rows;
} png_job;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    snprintf(job->msg, sizeof job->msg, "%s", msg);
    job->status = TD_EFORMAT;
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* benign (e.g. a damaged ancillary chunk): pixels are fine */
}

static void png_read_mem(png_structp png, png_bytep data, size_t n)
{
    png_job *job = png_get_io_ptr(png);
    if (n > job->len - job->pos)
        png_error(png, "truncated file");
    memcpy(data, job->buf + job->pos, n);
    job->pos += n;
}

/* Ancillary chunks libpng knows and would otherwise buffer and parse. */
static const png_byte png_ignored[] = "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0"
                                      "iTXt\0oFFs\0pCAL\0pHYs\0sBIT\0sCAL\0"
                                      "sPLT\0sRGB\0tEXt\0tIME\0zTXt";

static int png_run(png_job *job, int *w, int *h)
{
    png_structp png = job->png;
    png_infop info = job->info;
    png_uint_32 pw, ph;
    int depth, ctype;
    td_error lerr;
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_read_fn(png, job, png_read_mem);
    /* libpng 1.6 mallocs an ancillary chunk's declared length before
     * reading it (a 90-byte file claiming a 1.9 GB tEXt costs a 1.9 GB
     * malloc), and none of them matters for RGB pixels: discard them
     * unread. tRNS stays (bounded by libpng, read into a fixed buffer). */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, png_ignored,
                                (int)(sizeof png_ignored / 5));
    png_set_chunk_malloc_max(png, TD_PNG_CHUNK_MAX);
    png_set_chunk_cache_max(png, 1000);
    png_read_info(png, info);
    png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, NULL, NULL, NULL);
    if (td_image_check_limits(pw > INT_MAX ? INT_MAX : (int)pw,
                              ph > INT_MAX ? INT_MAX : (int)ph, job->lim,
                              &lerr) != TD_OK) {
        job->status = lerr.status;
        snprintf(job->msg, sizeof job->msg, "%s", lerr.msg);
        return -1;
    }
    /* To 8-bit RGB whatever the colour type, alpha dropped as PIL's
     * convert('RGB') drops it. strip_16 keeps the high byte, as PIL does
     * for 16-bit RGB. */
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 3 ||
        png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)pw * 3) {
        job->status = TD_EINTERNAL;
        snprintf(job->msg, sizeof job->msg,
                 "unexpected layout after conversion (colour type %d, "
                 "depth %d)", ctype, depth);
        return -1;
    }
    *w = (int)pw;
    *h = (int)ph;
    job->pixels = malloc((size_t)pw * ph * 3);
    job->rows = malloc((size_t)ph * sizeof *job->rows);
    if (!job->pixels || !job->rows) {
        job->status = TD_ENOMEM;
        snprintf(job->msg, sizeof job->msg, "out of memory for %dx%d", *w,
                 *h);
        return -1;
    }
    for (png_uint_32 y = 0; y < ph; y++)
        job->rows[y] = job->pixels + (size_t)y * pw * 3;
    png_read_image(png, job->rows);
    /* Up to IEND: a file cut after the image data is still truncated. */
    png_read_end(png, NULL);
    return 0;
}

static td_status decode_png(const unsigned char *buf, size_t len,
                            const td_image_limits *lim, td_image *out,
                            td_error *err)
{
    png_job *job = calloc(1, sizeof *job);
    int w = 0, h = 0, rc;
    td_status st;
    if (!job)
        return td_error_set(err, TD_ENOMEM, "png: out of memory");
    job->buf = buf;
    job->len = len;
    job->lim = lim;
    job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job,
                                      png_on_error, png_on_warning);
    if (job->png)
        job->info = png_create_info_struct(job->png);
    if (!job->png || !job->info) {
        png_destroy_read_struct(&job->png, NULL, NULL);
        free(job);
        return td_error_set(err, TD_ENOMEM, "png: out of memory");
    }
    rc = png_run(job, &w, &h);
    png_destroy_read_struct(&job->png, &job->info, NULL);
    free(job->rows);
    if (rc != 0) {
        st = td_error_set(err, job->status ? job->status : TD_EFORMAT,
                          "png: %s", job->msg);
        free(job->pixels);
        free(job);
        return st;
    }
    out->width = w;
    out->height = h;
    out->format = TD_IMAGE_PNG;
    out->rgb = job->pixels;
    free(job);
    return TD_OK;
}

td_status td_image_decode(const void *buf, size_t len,
                          const td_image_limits *lim, td_image *out,
                          td_error *err)
{
    static const td_image_limits defaults = {
        TD_IMAGE_DEFAULT_MAX_SIDE, TD_IMAGE_DEFAULT_MAX_SIDE,
        TD_IMAGE_DEFAULT_MAX_PIXELS};
    td_image_format fmt;
    int w, h;
    td_status st;
    memset(out, 0, sizeof *out);
    if (!lim)
        lim = &defaults;
    /* The cheap header check refuses oversized images before any library
     * state exists; the decoders check again with what they parsed. */
    st = td_image_probe(buf, len, &fmt, &w, &h, err);
    if (st != TD_OK)
        return st;
    st = td_image_check_limits(w, h, lim, err);
    if (st != TD_OK)
        return st;
    if (fmt == TD_IMAGE_JPEG)
        return decode_jpeg(buf, len, lim, out, err);
    return decode_png(buf, len, lim, out, err);
}

/* ------------------------------------------------------------ transform */

td_status td_interp_parse(const char *name, td_interp *out, td_error *err)
{
    if (name && strcmp(name, "bilinear") == 0) {
        *out = TD_INTERP_BILINEAR;
        return TD_OK;
    }
    if (name && strcmp(name, "bicubic") == 0) {
        *out = TD_INTERP_BICUBIC;
        return TD_OK;
    }
    return td_error_set(err, TD_EUNSUPPORTED,
                        "interpolation \"%s\" is not supported (bilinear, "
                        "bicubic)", name ? name : "(null)");
}

const char *td_interp_name(td_interp interp)
{
    return interp == TD_INTERP_BICUBIC ? "bicubic" : "bilinear";
}

int td_image_transform_channels(const td_image_transform *tf)
{
    return tf->grayscale ? 1 : 3;
}

#define TD_IMAGE_MAX_OUT 8192

td_status td_image_transform_check(const td_image_transform *tf,
                                   td_error *err)
{
    int c;
    if (tf->out_h < 1 || tf->out_w < 1 || tf->out_h > TD_IMAGE_MAX_OUT ||
        tf->out_w > TD_IMAGE_MAX_OUT)
        return td_error_set(err, TD_EINVAL,
                            "transform: input size %dx%d is out of range "
                            "(1..%d)", tf->out_h, tf->out_w,
                            TD_IMAGE_MAX_OUT);
    if (!(tf->crop_pct > 0.0 && tf->crop_pct <= 2.0))
        return td_error_set(err, TD_EINVAL,
                            "transform: crop_pct %g is outside (0, 2]",
                            tf->crop_pct);
    if (floor(tf->out_h / tf->crop_pct) < 1 ||
        floor(tf->out_w / tf->crop_pct) < 1)
        return td_error_set(err, TD_EINVAL,
                            "transform: crop_pct %g resizes a %dx%d input "
                            "to nothing", tf->crop_pct, tf->out_h,
                            tf->out_w);
    if (tf->interp != TD_INTERP_BILINEAR && tf->interp != TD_INTERP_BICUBIC)
        return td_error_set(err, TD_EINVAL,
                            "transform: unknown interpolation %d",
                            (int)tf->interp);
    for (c = 0; c < td_image_transform_channels(tf); c++) {
        if (!isfinite(tf->mean[c]) || !isfinite(tf->std[c]) ||
            tf->std[c] == 0.0f)
            return td_error_set(err, TD_EINVAL,
                                "transform: mean/std of channel %d "
                                "(%g, %g) is unusable", c,
                                (double)tf->mean[c], (double)tf->std[c]);
    }
    return TD_OK;
}

/* Where the crop falls on one axis of the resized image. */
typedef struct axis_plan {
    int src;       /* source pixels */
    int resized;   /* size after Resize */
    int out;       /* crop size */
    int offset;    /* resized index of crop index 0 (negative: padding) */
    int lo, hi;    /* crop indices [lo, hi) that land inside the image */
    int ksize;     /* coefficient stride */
    double scale, support, filterscale;
} axis_plan;

/* Python's round() on n / 2 for n >= 0: ties go to the even neighbour. */
static int half_round_even(int n)
{
    int q = n / 2;
    if (n % 2 && q % 2)
        q++;
    return q;
}

static int plan_axis(axis_plan *a, int src, int resized, int out,
                     td_interp interp)
{
    double filter_support = interp == TD_INTERP_BICUBIC ? 2.0 : 1.0;
    double ks;
    a->src = src;
    a->resized = resized;
    a->out = out;
    /* torchvision center_crop: pad by (out - resized) // 2 on the left when
     * the crop is larger, else start at round((resized - out) / 2). */
    a->offset = out > resized ? -((out - resized) / 2)
                              : half_round_even(resized - out);
    a->lo = a->offset < 0 ? -a->offset : 0;
    a->hi = resized - a->offset < out ? resized - a->offset : out;
    if (a->hi < a->lo)
        a->hi = a->lo;
    a->scale = (double)src / (double)resized;
    a->filterscale = a->scale < 1.0 ? 1.0 : a->scale;
    a->support = filter_support * a->filterscale;
    ks = ceil(a->support) * 2 + 1;
    if (ks > (double)INT_MAX / 8)
        return -1;
    a->ksize = (int)ks;
    return 0;
}

/* Resize target: timm's transforms_imagenet_eval. */
static int plan(const td_image_transform *tf, int src_w, int src_h,
                axis_plan *ax, axis_plan *ay)
{
    double sh = floor((double)tf->out_h / tf->crop_pct);
    double sw = floor((double)tf->out_w / tf->crop_pct);
    double rh, rw;
    if (src_w < 1 || src_h < 1 || sh < 1 || sw < 1)
        return -1;
    if (sh == sw) {
        /* torchvision Resize(int): shorter side to sh, the longer to
         * int(sh * long / short). */
        if (src_w <= src_h) {
            rw = sw;
            rh = floor(sh * (double)src_h / (double)src_w);
        } else {
            rh = sh;
            rw = floor(sh * (double)src_w / (double)src_h);
        }
    } else {
        /* timm ResizeKeepRatio(longest=0): ratio = min(h/th, w/tw), each
         * side round(side / ratio) with Python's half-to-even round. */
        double ratio_h = (double)src_h / sh, ratio_w = (double)src_w / sw;
        double ratio = ratio_h < ratio_w ? ratio_h : ratio_w;
        rh = nearbyint((double)src_h / ratio);
        rw = nearbyint((double)src_w / ratio);
    }
    if (rh < 1 || rw < 1 || rh > INT_MAX / 4 || rw > INT_MAX / 4)
        return -1;
    if (plan_axis(ax, src_w, (int)rw, tf->out_w, tf->interp) != 0 ||
        plan_axis(ay, src_h, (int)rh, tf->out_h, tf->interp) != 0)
        return -1;
    return 0;
}

/* Source rows per horizontal-pass tile. */
#define HROWS 16

/* Scratch layout, shared by the size query and the run. */
typedef struct scratch_plan {
    size_t kx, bx, ky, by, pre, row, acc, tmp, total;
} scratch_plan;

static size_t add_sz(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t mul_sz(size_t a, size_t b)
{
    return b && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

static void plan_scratch(const axis_plan *ax, const axis_plan *ay,
                         int channels, scratch_plan *s)
{
    size_t nx = (size_t)(ax->hi - ax->lo), ny = (size_t)(ay->hi - ay->lo);
    size_t kmax = (size_t)(ax->ksize > ay->ksize ? ax->ksize : ay->ksize);
    s->kx = td_arena_round(mul_sz(mul_sz(nx, (size_t)ax->ksize), 4));
    s->bx = td_arena_round(mul_sz(nx, 2 * sizeof(int)));
    s->ky = td_arena_round(mul_sz(mul_sz(ny, (size_t)ay->ksize), 4));
    s->by = td_arena_round(mul_sz(ny, 2 * sizeof(int)));
    s->pre = td_arena_round(mul_sz(kmax, sizeof(double)));
    s->row = td_arena_round(
        mul_sz(mul_sz((size_t)ax->src, HROWS), (size_t)channels));
    s->acc = td_arena_round(mul_sz(mul_sz(nx ? nx : 1, (size_t)channels),
                                   sizeof(int32_t)));
    /* Rows the vertical pass reads; at most the whole source height. */
    s->tmp = td_arena_round(
        mul_sz(mul_sz((size_t)ay->src, nx ? nx : 1), (size_t)channels));
    s->total = add_sz(add_sz(add_sz(s->kx, s->bx), add_sz(s->ky, s->by)),
                      add_sz(add_sz(s->pre, s->row), add_sz(s->acc, s->tmp)));
}

size_t td_image_preprocess_scratch(const td_image_transform *tf, int src_w,
                                   int src_h)
{
    axis_plan ax, ay;
    scratch_plan s;
    if (td_image_transform_check(tf, NULL) != TD_OK ||
        plan(tf, src_w, src_h, &ax, &ay) != 0)
        return SIZE_MAX;
    plan_scratch(&ax, &ay, td_image_transform_channels(tf), &s);
    return s.total;
}

size_t td_image_preprocess_scratch_max(const td_image_transform *tf,
                                       const td_image_limits *lim)
{
    uint64_t mw = lim ? lim->max_width : TD_IMAGE_DEFAULT_MAX_SIDE;
    uint64_t mh = lim ? lim->max_height : TD_IMAGE_DEFAULT_MAX_SIDE;
    size_t c, ks, total;
    double smin, f;
    if (td_image_transform_check(tf, NULL) != TD_OK)
        return SIZE_MAX;
    /* A side may also be capped only by the pixel limit, or not at all. */
    if (lim && lim->max_pixels) {
        if (!mw || mw > lim->max_pixels)
            mw = lim->max_pixels;
        if (!mh || mh > lim->max_pixels)
            mh = lim->max_pixels;
    }
    if (!mw || !mh || mw > INT_MAX || mh > INT_MAX)
        return SIZE_MAX;
    c = (size_t)td_image_transform_channels(tf);
    /* Resize keeps the aspect ratio, so both axes shrink by about the same
     * factor, at most (largest side) / (smallest resize target); the
     * resized sizes are floored or rounded, and floor(x), round(x) >= x/2
     * for x >= 1, hence the 2. */
    smin = floor((double)(tf->out_h < tf->out_w ? tf->out_h : tf->out_w) /
                 tf->crop_pct);
    if (smin < 1)
        smin = 1;
    f = 2.0 * (double)(mw > mh ? mw : mh) / smin + 1.0;
    ks = (size_t)ceil(2.0 * f) * 2 + 1; /* BICUBIC support 2 >= BILINEAR */
    total = td_arena_round(mul_sz(mul_sz((size_t)tf->out_w, ks), 4));
    total = add_sz(total, td_arena_round((size_t)tf->out_w * 2 * sizeof(int)));
    total = add_sz(total, td_arena_round(mul_sz(mul_sz((size_t)tf->out_h, ks),
                                                4)));
    total = add_sz(total, td_arena_round((size_t)tf->out_h * 2 * sizeof(int)));
    total = add_sz(total, td_arena_round(mul_sz(ks, sizeof(double))));
    total = add_sz(total, td_arena_round(mul_sz(mul_sz((size_t)mw, HROWS), c)));
    total = add_sz(total, td_arena_round((size_t)tf->out_w * c * 4));
    total = add_sz(total, td_arena_round(mul_sz(mul_sz((size_t)mh,
                                                       (size_t)tf->out_w), c)));
    return total;
}

#define PRECISION_BITS (32 - 8 - 2)

static double filter_eval(td_interp interp, double x)
{
    if (x < 0.0)
        x = -x;
    if (interp == TD_INTERP_BILINEAR)
        return x < 1.0 ? 1.0 - x : 0.0;
    /* Keys cubic with a = -0.5, written as PIL writes it. */
    {
        const double a = -0.5;
        if (x < 1.0)
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0)
            return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }
}

/* PIL precompute_coeffs + normalize_coeffs_8bpc for the crop's part of one
 * axis: for crop index i in [lo, hi), taps start at bounds[2j] and number
 * bounds[2j+1], weights k[j*ksize ..] in 2^-22 fixed point. */
static void coeffs(const axis_plan *a, td_interp interp, int32_t *k,
                   int *bounds, double *pre)
{
    for (int i = a->lo; i < a->hi; i++) {
        int j = i - a->lo, xx = i + a->offset, xmin, xmax, x;
        double center = (xx + 0.5) * a->scale, ww = 0.0,
               ss = 1.0 / a->filterscale;
        xmin = (int)(center - a->support + 0.5);
        if (xmin < 0)
            xmin = 0;
        xmax = (int)(center + a->support + 0.5);
        if (xmax > a->src)
            xmax = a->src;
        xmax -= xmin;
        for (x = 0; x < xmax; x++) {
            double w = filter_eval(interp, (x + xmin - center + 0.5) * ss);
            pre[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? pre[x] / ww : pre[x];
            k[(size_t)j * a->ksize + x] =
                v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                      : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        bounds[2 * j] = xmin;
        bounds[2 * j + 1] = xmax;
    }
}

/* PIL's clip8: the rounded accumulator back to a byte. Accumulators are
 * int32 as in PIL: a partial sum is at most 255 * (sum of positive
 * weights) * 2^22 + 2^21, and the positive weights of a normalised
 * BICUBIC sample sum to at most 1.14, so 1.2e9 < INT32_MAX. */
static inline uint8_t clip8(int32_t acc)
{
    if (acc <= 0)
        return 0;
    acc >>= PRECISION_BITS;
    return acc > 255 ? 255 : (uint8_t)acc;
}

/* One tile of the horizontal pass: for each crop column j, the taps of
 * tile (x, HROWS, C) into rows of dst (rows, nx, C). The hot loop of the
 * whole transform; with GCC on x86-64 it is also built for AVX2 (32-bit
 * lane multiplies) and picked at load time. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
static void hpass_tile(const uint8_t *tile, int channels, const int32_t *kx,
                       int ksize, const int *bx, int nx, int rows,
                       uint8_t *dst)
{
    size_t lanes = (size_t)HROWS * channels;
    for (int j = 0; j < nx; j++) {
        const int32_t *k = kx + (size_t)j * ksize;
        const uint8_t *t0 = tile + (size_t)bx[2 * j] * lanes;
        int n = bx[2 * j + 1];
        int32_t hacc[HROWS * 3];
        for (int e = 0; e < HROWS * 3; e++)
            hacc[e] = 1 << (PRECISION_BITS - 1);
        if (channels == 3) {
            for (int t = 0; t < n; t++) {
                const uint8_t *v = t0 + (size_t)t * lanes;
                int32_t kt = k[t];
                for (int e = 0; e < HROWS * 3; e++)
                    hacc[e] += v[e] * kt;
            }
        } else {
            for (int t = 0; t < n; t++) {
                const uint8_t *v = t0 + (size_t)t * lanes;
                int32_t kt = k[t];
                for (int e = 0; e < HROWS; e++)
                    hacc[e] += v[e] * kt;
            }
        }
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < channels; c++)
                dst[((size_t)r * nx + j) * channels + c] =
                    clip8(hacc[r * channels + c]);
    }
}

/* One output row of the vertical pass: acc[e] = sum over taps t of
 * src[t * stride + e] * k[t], for the whole row at once. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
static void vpass_row(const uint8_t *restrict src, size_t stride,
                      const int32_t *restrict k, int n,
                      int32_t *restrict acc)
{
    for (size_t e = 0; e < stride; e++)
        acc[e] = 1 << (PRECISION_BITS - 1);
    for (int t = 0; t < n; t++) {
        const uint8_t *restrict row = src + (size_t)t * stride;
        int32_t kt = k[t];
        size_t e = 0;
        /* Fixed-length blocks: GCC -O2 vectorises only loops that need
         * no epilogue. */
        for (; e + 32 <= stride; e += 32)
            for (int q = 0; q < 32; q++)
                acc[e + q] += row[e + q] * kt;
        for (; e < stride; e++)
            acc[e] += row[e] * kt;
    }
}

td_status td_image_preprocess(const td_image *img,
                              const td_image_transform *tf, float *out,
                              td_arena *scratch, td_error *err)
{
    axis_plan ax, ay;
    scratch_plan sp;
    td_arena local = {0};
    td_arena *ar = scratch;
    size_t mark = 0;
    int channels, nx, ny, y0, y1;
    int32_t *kx, *ky, *acc;
    float lut[3][256];
    int *bx, *by;
    double *pre;
    uint8_t *tile, *tmp;
    td_status st;

    /* in: img (H,W,3) HWC uint8; out: (C,out_h,out_w) CHW float32 */
    st = td_image_transform_check(tf, err);
    if (st != TD_OK)
        return st;
    if (!img || !img->rgb || img->width < 1 || img->height < 1)
        return td_error_set(err, TD_EINVAL, "preprocess: empty image");
    if (plan(tf, img->width, img->height, &ax, &ay) != 0)
        return td_error_set(err, TD_EINVAL,
                            "preprocess: cannot resize %dx%d for %dx%d at "
                            "crop_pct %g", img->width, img->height,
                            tf->out_w, tf->out_h, tf->crop_pct);
    channels = td_image_transform_channels(tf);
    plan_scratch(&ax, &ay, channels, &sp);
    if (sp.total == SIZE_MAX)
        return td_error_set(err, TD_ETOOBIG,
                            "preprocess: scratch for %dx%d overflows",
                            img->width, img->height);
    if (!ar) {
        st = td_arena_init(&local, sp.total, err);
        if (st != TD_OK)
            return st;
        ar = &local;
    }
    mark = td_arena_mark(ar);
    if (ar->cap - ar->used < sp.total) {
        st = td_error_set(err, TD_ENOMEM,
                          "preprocess: scratch arena has %zu bytes free, "
                          "%zu needed for a %dx%d image",
                          ar->cap - ar->used, sp.total, img->width,
                          img->height);
        goto done;
    }
    kx = td_arena_alloc(ar, sp.kx);
    bx = td_arena_alloc(ar, sp.bx);
    ky = td_arena_alloc(ar, sp.ky);
    by = td_arena_alloc(ar, sp.by);
    pre = td_arena_alloc(ar, sp.pre);
    tile = td_arena_alloc(ar, sp.row);
    acc = td_arena_alloc(ar, sp.acc);
    tmp = td_arena_alloc(ar, sp.tmp);

    nx = ax.hi - ax.lo;
    ny = ay.hi - ay.lo;
    coeffs(&ax, tf->interp, kx, bx, pre);
    coeffs(&ay, tf->interp, ky, by, pre);
    /* Source rows the crop's output rows need. */
    y0 = ny ? by[0] : 0;
    y1 = ny ? by[2 * (ny - 1)] + by[2 * (ny - 1) + 1] : 0;

    /* Horizontal pass: rows [y0, y1) into tmp (rows, nx, C), uint8.
     * HROWS rows at a time are transposed into tile (x, row, C) so each
     * tap is one contiguous multiply-add over HROWS * C lanes. */
    for (int yb = y0; yb < y1 && nx > 0; yb += HROWS) {
        int rows = y1 - yb < HROWS ? y1 - yb : HROWS;
        size_t lanes = (size_t)HROWS * channels;
        for (int r = 0; r < HROWS; r++) {
            /* Rows past the end repeat the last one; their sums are
             * computed and dropped. */
            int y = yb + (r < rows ? r : rows - 1);
            const uint8_t *src = img->rgb + (size_t)y * img->width * 3;
            uint8_t *col = tile + (size_t)r * channels;
            if (tf->grayscale) {
                /* PIL rgb2l: ITU-R 601-2 luma in 16-bit fixed point. */
                for (int x = 0; x < img->width; x++)
                    col[(size_t)x * lanes] = (uint8_t)(
                        (src[3 * x] * 19595u + src[3 * x + 1] * 38470u +
                         src[3 * x + 2] * 7471u + 0x8000u) >> 16);
            } else {
                for (int x = 0; x < img->width; x++) {
                    col[(size_t)x * lanes] = src[3 * x];
                    col[(size_t)x * lanes + 1] = src[3 * x + 1];
                    col[(size_t)x * lanes + 2] = src[3 * x + 2];
                }
            }
        }
        hpass_tile(tile, channels, kx, ax.ksize, bx, nx, rows,
                   tmp + (size_t)(yb - y0) * nx * channels);
    }

    /* ToTensor and Normalize as torchvision computes them, x.float().div(255)
     * then sub(mean).div(std), each a float32 operation: a function of the
     * byte alone, so tabulated (two divisions per element otherwise
     * dominate the cost for small images). */
    for (int c = 0; c < channels; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v / 255.0f - tf->mean[c]) / tf->std[c];
    /* Crop pixels outside the resized image are the padding value 0. */
    for (int c = 0; c < channels; c++) {
        float pad = lut[c][0];
        for (int i = 0; i < tf->out_h; i++) {
            float *orow = out + ((size_t)c * tf->out_h + i) * tf->out_w;
            int inside = i >= ay.lo && i < ay.hi && nx > 0;
            int left = inside ? ax.lo : tf->out_w;
            for (int j = 0; j < left; j++)
                orow[j] = pad;
            for (int j = inside ? ax.hi : tf->out_w; j < tf->out_w; j++)
                orow[j] = pad;
        }
    }
    /* Vertical pass over whole rows of tmp (contiguous, so it vectorises),
     * then the table into CHW. */
    for (int i = ay.lo; i < ay.hi && nx > 0; i++) {
        const int32_t *k = ky + (size_t)(i - ay.lo) * ay.ksize;
        int ymin = by[2 * (i - ay.lo)] - y0, n = by[2 * (i - ay.lo) + 1];
        vpass_row(tmp + (size_t)ymin * nx * channels,
                  (size_t)nx * channels, k, n, acc);
        for (int c = 0; c < channels; c++) {
            float *orow = out + ((size_t)c * tf->out_h + i) * tf->out_w +
                          ax.lo;
            for (int j = 0; j < nx; j++)
                orow[j] = lut[c][clip8(acc[(size_t)j * channels + c])];
        }
    }
    st = TD_OK;
done:
    td_arena_release(ar, mark);
    if (ar == &local)
        td_arena_free(&local);
    return st;
}
