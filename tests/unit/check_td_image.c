/* Unit tests for td_image: probing, JPEG/PNG decoding (images encoded here
 * with libjpeg/libpng, and fixtures whose PIL decode is committed), refusal
 * of corrupt and oversized files, and the eval transform against
 * torchvision's output (tests/fixtures/image, gen_image_fixtures.py). */
#include "config.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "td_arena.h"
#include "td_err.h"
#include "td_file.h"
#include "td_image.h"

/* ------------------------------------------------------------ helpers */

static char *fixture_path(const char *name)
{
    const char *src = getenv("TD_SRCDIR");
    static char path[4096];
    snprintf(path, sizeof path, "%s/tests/fixtures/image/%s",
             src ? src : ".", name);
    return path;
}

static unsigned char *read_fixture(const char *name, size_t *len)
{
    char *buf;
    td_error err;
    if (td_file_read(fixture_path(name), (size_t)16 << 20, &buf, len,
                     &err) != TD_OK)
        ck_abort_msg("fixture %s: %s", name, err.msg);
    return (unsigned char *)buf;
}

typedef struct membuf {
    unsigned char *data;
    size_t len, cap;
} membuf;

static void mb_put(membuf *m, const void *p, size_t n)
{
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->data = realloc(m->data, m->cap);
        ck_assert_ptr_nonnull(m->data);
    }
    memcpy(m->data + m->len, p, n);
    m->len += n;
}

static void png_write_cb(png_structp png, png_bytep data, size_t n)
{
    mb_put(png_get_io_ptr(png), data, n);
}

static void png_flush_cb(png_structp png) { (void)png; }

/* Encodes rows of `bytes_per_row` packed samples as the given PNG type. */
static membuf encode_png(int w, int h, int depth, int ctype, int interlace,
                         const unsigned char *pixels, size_t bytes_per_row,
                         const png_color *palette, int npalette,
                         const png_byte *trns, int ntrns)
{
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL,
                                              NULL, NULL);
    png_infop info = png_create_info_struct(png);
    ck_assert_ptr_nonnull(info);
    ck_assert_int_eq(setjmp(png_jmpbuf(png)), 0);
    png_set_write_fn(png, &m, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette)
        png_set_PLTE(png, info, palette, npalette);
    if (trns)
        png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    {
        png_bytep *rows = malloc((size_t)h * sizeof *rows);
        for (int y = 0; y < h; y++)
            rows[y] = (png_bytep)pixels + (size_t)y * bytes_per_row;
        png_write_image(png, rows);
        free(rows);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return m;
}

static membuf encode_jpeg(int w, int h, int comps, J_COLOR_SPACE cs,
                          const unsigned char *pixels, int quality,
                          int progressive)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    membuf m = {0};
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &outlen);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    if (cs == JCS_RGB) { /* 4:4:4 so a round trip stays close */
        c.comp_info[0].h_samp_factor = 1;
        c.comp_info[0].v_samp_factor = 1;
    }
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)pixels +
                       (size_t)c.next_scanline * (size_t)w * (size_t)comps;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    mb_put(&m, out, outlen);
    free(out);
    return m;
}

/* A smooth test pattern, so JPEG round trips stay within a few levels. */
static unsigned char *pattern_rgb(int w, int h)
{
    unsigned char *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char *q = p + ((size_t)y * w + x) * 3;
            q[0] = (unsigned char)(x * 255 / (w - 1));
            q[1] = (unsigned char)(y * 255 / (h - 1));
            q[2] = (unsigned char)((x + y) * 255 / (w + h - 2));
        }
    return p;
}

/* ------------------------------------------------------------ probing */

START_TEST(test_probe_fixtures_and_other_formats)
{
    static const struct {
        const char *name;
        td_image_format fmt;
        int w, h;
    } want[] = {{"photo_97x61.png", TD_IMAGE_PNG, 97, 61},
                {"photo_97x61.jpg", TD_IMAGE_JPEG, 97, 61},
                {"progressive_64x48.jpg", TD_IMAGE_JPEG, 64, 48},
                {"large_300x200.jpg", TD_IMAGE_JPEG, 300, 200},
                {"palette_33x21.png", TD_IMAGE_PNG, 33, 21}};
    td_image_format fmt;
    int w, h;
    td_error err;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        size_t len;
        unsigned char *buf = read_fixture(want[i].name, &len);
        ck_assert_int_eq(td_image_probe(buf, len, &fmt, &w, &h, &err),
                         TD_OK);
        ck_assert_int_eq(fmt, want[i].fmt);
        ck_assert_int_eq(w, want[i].w);
        ck_assert_int_eq(h, want[i].h);
        /* Only the header is needed. */
        ck_assert_int_eq(td_image_probe(buf, fmt == TD_IMAGE_PNG ? 24 : 700,
                                        &fmt, &w, &h, &err), TD_OK);
        free(buf);
    }
    ck_assert_int_eq(td_image_probe("GIF89a\1\0\1\0", 10, &fmt, &w, &h,
                                    &err), TD_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "GIF"));
    ck_assert_int_eq(fmt, TD_IMAGE_UNKNOWN);
    ck_assert_int_eq(td_image_probe("RIFF\0\0\0\0WEBPVP8 ", 16, &fmt, &w,
                                    &h, &err), TD_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "WebP"));
    ck_assert_int_eq(td_image_probe("hello world", 11, &fmt, &w, &h, &err),
                     TD_EUNSUPPORTED);
    ck_assert_int_eq(td_image_probe("", 0, &fmt, &w, &h, &err), TD_EFORMAT);
    /* A JPEG that ends before its frame header. */
    ck_assert_int_eq(td_image_probe("\xff\xd8\xff\xe0\x00\x10JFIF", 10,
                                    &fmt, &w, &h, &err), TD_EFORMAT);
    ck_assert_str_eq(td_image_format_name(TD_IMAGE_PNG), "png");
}
END_TEST

/* ------------------------------------------------------------ decoding */

START_TEST(test_decode_matches_pil)
{
    /* PIL (Debian python3-pil, the same libjpeg-turbo) decoded these with
     * convert('RGB'): ours must be byte-identical, CMYK and palette
     * included. */
    static const char *names[] = {
        "photo_97x61.png", "photo_97x61.jpg", "small_13x9.png",
        "progressive_64x48.jpg", "gray_40x30.jpg", "cmyk_24x20.jpg",
        "palette_33x21.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char refname[128];
        size_t len, rlen, diff = 0;
        unsigned char *buf = read_fixture(names[i], &len), *ref;
        td_image img;
        td_error err;
        snprintf(refname, sizeof refname, "%s.rgb", names[i]);
        ref = read_fixture(refname, &rlen);
        ck_assert_msg(td_image_decode(buf, len, NULL, &img, &err) == TD_OK,
                      "%s: %s", names[i], err.msg);
        ck_assert_uint_eq((size_t)img.width * img.height * 3, rlen);
        for (size_t k = 0; k < rlen; k++)
            diff += img.rgb[k] != ref[k];
        ck_assert_msg(diff == 0, "%s: %zu bytes differ from PIL", names[i],
                      diff);
        td_image_free(&img);
        ck_assert_ptr_null(img.rgb);
        free(buf);
        free(ref);
    }
}
END_TEST

/* Every PNG colour type and bit depth, plain and interlaced, against the
 * RGB the samples mean (alpha dropped, 16-bit to the high byte, low depths
 * scaled as PIL and libpng scale them). */
START_TEST(test_png_all_color_types)
{
    enum { W = 11, H = 7 };
    static const struct {
        int ctype, depth;
    } kinds[] = {
        {PNG_COLOR_TYPE_GRAY, 1},       {PNG_COLOR_TYPE_GRAY, 2},
        {PNG_COLOR_TYPE_GRAY, 4},       {PNG_COLOR_TYPE_GRAY, 8},
        {PNG_COLOR_TYPE_GRAY, 16},      {PNG_COLOR_TYPE_GRAY_ALPHA, 8},
        {PNG_COLOR_TYPE_GRAY_ALPHA, 16}, {PNG_COLOR_TYPE_RGB, 8},
        {PNG_COLOR_TYPE_RGB, 16},       {PNG_COLOR_TYPE_RGB_ALPHA, 8},
        {PNG_COLOR_TYPE_RGB_ALPHA, 16}, {PNG_COLOR_TYPE_PALETTE, 1},
        {PNG_COLOR_TYPE_PALETTE, 2},    {PNG_COLOR_TYPE_PALETTE, 4},
        {PNG_COLOR_TYPE_PALETTE, 8}};
    png_color pal[256];
    png_byte trns[256];
    for (int i = 0; i < 256; i++) {
        pal[i].red = (png_byte)(i * 7);
        pal[i].green = (png_byte)(255 - i);
        pal[i].blue = (png_byte)(i * 3 + 1);
        trns[i] = (png_byte)(i * 5); /* alpha must be ignored */
    }
    for (size_t kidx = 0; kidx < sizeof kinds / sizeof kinds[0]; kidx++) {
        for (int interlace = 0; interlace < 2; interlace++) {
            int ctype = kinds[kidx].ctype, depth = kinds[kidx].depth;
            int chans = ctype == PNG_COLOR_TYPE_GRAY ? 1
                        : ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                        : ctype == PNG_COLOR_TYPE_RGB ? 3
                        : ctype == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : 1;
            size_t bpr = ((size_t)W * chans * depth + 7) / 8;
            unsigned char *raw = calloc(bpr * H, 1);
            unsigned char want[W * H * 3];
            int maxv = (1 << depth) - 1;
            membuf m;
            td_image img;
            td_error err;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    unsigned char *o = want + (y * W + x) * 3;
                    for (int c = 0; c < chans; c++) {
                        /* sample value in [0, maxv] */
                        int v = (x * 37 + y * 101 + c * 53) % (maxv + 1);
                        int bit = (x * chans + c) * depth;
                        unsigned char *row = raw + (size_t)y * bpr;
                        if (depth == 16) {
                            v = (x * 6007 + y * 30011 + c * 211) % 65536;
                            row[bit / 8] = (unsigned char)(v >> 8);
                            row[bit / 8 + 1] = (unsigned char)v;
                        } else if (depth == 8) {
                            row[bit / 8] = (unsigned char)v;
                        } else {
                            row[bit / 8] |= (unsigned char)(
                                v << (8 - depth - bit % 8));
                        }
                        if (ctype == PNG_COLOR_TYPE_PALETTE) {
                            o[0] = pal[v].red;
                            o[1] = pal[v].green;
                            o[2] = pal[v].blue;
                        } else {
                            int b8 = depth == 16 ? v >> 8
                                                 : v * 255 / maxv;
                            int is_alpha = (chans == 2 && c == 1) ||
                                           (chans == 4 && c == 3);
                            if (is_alpha)
                                continue;
                            if (chans <= 2)
                                o[0] = o[1] = o[2] = (unsigned char)b8;
                            else
                                o[c] = (unsigned char)b8;
                        }
                    }
                }
            m = encode_png(W, H, depth, ctype, interlace, raw, bpr,
                           ctype == PNG_COLOR_TYPE_PALETTE ? pal : NULL,
                           ctype == PNG_COLOR_TYPE_PALETTE ? 1 << depth : 0,
                           ctype == PNG_COLOR_TYPE_PALETTE ? trns : NULL,
                           ctype == PNG_COLOR_TYPE_PALETTE ? 1 << depth : 0);
            ck_assert_msg(td_image_decode(m.data, m.len, NULL, &img, &err) ==
                              TD_OK,
                          "type %d depth %d interlace %d: %s", ctype, depth,
                          interlace, err.msg);
            ck_assert_int_eq(img.width, W);
            ck_assert_int_eq(img.height, H);
            ck_assert_int_eq(img.format, TD_IMAGE_PNG);
            ck_assert_msg(memcmp(img.rgb, want, sizeof want) == 0,
                          "type %d depth %d interlace %d: wrong pixels",
                          ctype, depth, interlace);
            td_image_free(&img);
            free(m.data);
            free(raw);
        }
    }
}
END_TEST

START_TEST(test_jpeg_roundtrip_rgb_gray_progressive)
{
    enum { W = 48, H = 40 };
    unsigned char *rgb = pattern_rgb(W, H), gray[W * H];
    for (int progressive = 0; progressive < 2; progressive++) {
        membuf m = encode_jpeg(W, H, 3, JCS_RGB, rgb, 100, progressive);
        td_image img;
        td_error err;
        int maxd = 0;
        ck_assert_int_eq(td_image_decode(m.data, m.len, NULL, &img, &err),
                         TD_OK);
        ck_assert_int_eq(img.width, W);
        ck_assert_int_eq(img.height, H);
        for (size_t k = 0; k < (size_t)W * H * 3; k++) {
            int d = abs((int)img.rgb[k] - (int)rgb[k]);
            maxd = d > maxd ? d : maxd;
        }
        /* Quality 100, 4:4:4: only DCT and colour rounding remain. */
        ck_assert_int_le(maxd, 4);
        td_image_free(&img);
        free(m.data);
    }
    for (int i = 0; i < W * H; i++)
        gray[i] = rgb[3 * i];
    {
        membuf m = encode_jpeg(W, H, 1, JCS_GRAYSCALE, gray, 100, 0);
        td_image img;
        td_error err;
        ck_assert_int_eq(td_image_decode(m.data, m.len, NULL, &img, &err),
                         TD_OK);
        for (int i = 0; i < W * H; i++) {
            ck_assert_int_eq(img.rgb[3 * i], img.rgb[3 * i + 1]);
            ck_assert_int_eq(img.rgb[3 * i], img.rgb[3 * i + 2]);
            ck_assert_int_le(abs((int)img.rgb[3 * i] - gray[i]), 2);
        }
        td_image_free(&img);
        free(m.data);
    }
    free(rgb);
}
END_TEST

/* ------------------------------------------------------------ refusals */

START_TEST(test_jpeg_truncated_and_corrupt)
{
    enum { W = 64, H = 48 };
    unsigned char *rgb = pattern_rgb(W, H);
    td_image img;
    td_error err;
    for (int progressive = 0; progressive < 2; progressive++) {
        membuf m = encode_jpeg(W, H, 3, JCS_RGB, rgb, 90, progressive);
        unsigned char *copy = malloc(m.len);
        /* Every cut is an error, never a partly grey image. */
        for (size_t cut = 0; cut < m.len; cut += 1 + m.len / 97) {
            td_status st = td_image_decode(m.data, cut, NULL, &img, &err);
            ck_assert_msg(st == TD_EFORMAT,
                          "cut at %zu of %zu: status %d", cut, m.len, st);
            ck_assert_ptr_null(img.rgb);
            ck_assert_str_ne(err.msg, "");
        }
        ck_assert_int_eq(td_image_decode(m.data, m.len - 2, NULL, &img,
                                         &err), TD_EFORMAT);
        ck_assert_ptr_nonnull(strstr(err.msg, "jpeg: "));
        /* A marker in the middle of the entropy-coded data. */
        memcpy(copy, m.data, m.len);
        copy[m.len * 2 / 3] = 0xFF;
        copy[m.len * 2 / 3 + 1] = 0xD9;
        ck_assert_int_eq(td_image_decode(copy, m.len, NULL, &img, &err),
                         TD_EFORMAT);
        /* Random byte flips: whatever happens, no crash and no leak (ASan
         * runs this), and the status is OK or EFORMAT. */
        srand(7);
        for (int trial = 0; trial < 200; trial++) {
            td_status st;
            memcpy(copy, m.data, m.len);
            for (int f = 0; f < 4; f++)
                copy[2 + (size_t)rand() % (m.len - 2)] ^=
                    (unsigned char)(1 + rand() % 255);
            st = td_image_decode(copy, m.len, NULL, &img, &err);
            ck_assert_msg(st == TD_OK || st == TD_EFORMAT ||
                              st == TD_EUNSUPPORTED || st == TD_ETOOBIG,
                          "trial %d: status %d", trial, st);
            ck_assert(st == TD_OK || img.rgb == NULL);
            td_image_free(&img);
        }
        free(copy);
        free(m.data);
    }
    free(rgb);
}
END_TEST

START_TEST(test_png_truncated_and_corrupt)
{
    size_t len;
    unsigned char *buf = read_fixture("photo_97x61.png", &len), *copy;
    td_image img;
    td_error err;
    for (size_t cut = 0; cut < len; cut += 1 + len / 89) {
        ck_assert_int_eq(td_image_decode(buf, cut, NULL, &img, &err),
                         TD_EFORMAT);
        ck_assert_ptr_null(img.rgb);
    }
    /* Without IEND: still truncated. */
    ck_assert_int_eq(td_image_decode(buf, len - 12, NULL, &img, &err),
                     TD_EFORMAT);
    /* A flipped byte inside the image data fails its CRC. */
    copy = malloc(len);
    memcpy(copy, buf, len);
    copy[len / 2] ^= 0x40;
    ck_assert_int_eq(td_image_decode(copy, len, NULL, &img, &err),
                     TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "png: "));
    free(copy);
    free(buf);
}
END_TEST

static uint32_t crc_of(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(0, p, (unsigned)n);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

START_TEST(test_huge_header_refused_before_decoding)
{
    /* A valid small PNG whose IHDR is rewritten to 50000 x 50000 (CRC
     * fixed, so the header itself is well-formed): 7.5 GB of RGB if
     * anyone believed it. */
    unsigned char px[3 * 4] = {0};
    membuf m = encode_png(2, 2, 8, PNG_COLOR_TYPE_RGB, 0, px, 6, NULL, 0,
                          NULL, 0);
    td_image_limits lim = {4096, 4096, 16u << 20};
    td_image img;
    td_image_format fmt;
    td_error err;
    int w, h;
    put_be32(m.data + 16, 50000);
    put_be32(m.data + 20, 50000);
    put_be32(m.data + 29, crc_of(m.data + 12, 17));
    ck_assert_int_eq(td_image_probe(m.data, m.len, &fmt, &w, &h, &err),
                     TD_OK);
    ck_assert_int_eq(w, 50000);
    ck_assert_int_eq(h, 50000);
    ck_assert_int_eq(td_image_check_limits(w, h, &lim, &err), TD_ETOOBIG);
    ck_assert_int_eq(td_status_http(err.status), 413);
    ck_assert_int_eq(td_image_decode(m.data, m.len, &lim, &img, &err),
                     TD_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "50000"));
    ck_assert_ptr_null(img.rgb);
    /* The defaults refuse it too. */
    ck_assert_int_eq(td_image_decode(m.data, m.len, NULL, &img, &err),
                     TD_ETOOBIG);
    /* Per-side and pixel limits separately. */
    ck_assert_int_eq(td_image_check_limits(5000, 10, &lim, &err),
                     TD_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "width"));
    lim.max_pixels = 100;
    ck_assert_int_eq(td_image_check_limits(11, 10, &lim, &err), TD_ETOOBIG);
    ck_assert_int_eq(td_image_check_limits(10, 10, &lim, &err), TD_OK);
    free(m.data);

    /* A JPEG whose SOF claims 60000 x 60000. */
    {
        unsigned char *rgb = pattern_rgb(16, 16);
        membuf j = encode_jpeg(16, 16, 3, JCS_RGB, rgb, 90, 0);
        for (size_t p = 2; p + 9 < j.len; p++)
            if (j.data[p] == 0xFF && j.data[p + 1] == 0xC0) {
                j.data[p + 5] = 0xEA; /* 60000 = 0xEA60 */
                j.data[p + 6] = 0x60;
                j.data[p + 7] = 0xEA;
                j.data[p + 8] = 0x60;
                break;
            }
        ck_assert_int_eq(td_image_probe(j.data, j.len, &fmt, &w, &h, &err),
                         TD_OK);
        ck_assert_int_eq(w, 60000);
        ck_assert_int_eq(td_image_decode(j.data, j.len, &lim, &img, &err),
                         TD_ETOOBIG);
        free(j.data);
        free(rgb);
    }
}
END_TEST

/* Well-formed headers of JPEG processes libjpeg-turbo's 8-bit API does not
 * decode: 12-bit precision, lossless (SOF3). Unsupported, not malformed. */
START_TEST(test_jpeg_unsupported_variants)
{
    unsigned char *rgb = pattern_rgb(16, 16);
    membuf j = encode_jpeg(16, 16, 3, JCS_RGB, rgb, 90, 0);
    size_t sof = 0;
    td_image img;
    td_error err;
    for (size_t p = 2; p + 1 < j.len; p++)
        if (j.data[p] == 0xFF && j.data[p + 1] == 0xC0) {
            sof = p;
            break;
        }
    ck_assert_uint_gt(sof, 0);
    j.data[sof + 4] = 12; /* sample precision */
    ck_assert_int_eq(td_image_decode(j.data, j.len, NULL, &img, &err),
                     TD_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "precision"));
    j.data[sof + 4] = 8;
    j.data[sof + 1] = 0xC3;
    ck_assert_int_eq(td_image_decode(j.data, j.len, NULL, &img, &err),
                     TD_EUNSUPPORTED);
    ck_assert_ptr_null(img.rgb);
    j.data[sof + 1] = 0xC0;
    ck_assert_int_eq(td_image_decode(j.data, j.len, NULL, &img, &err),
                     TD_OK);
    td_image_free(&img);
    free(j.data);
    free(rgb);
}
END_TEST

/* ------------------------------------------------------------ transform */

/* Against torchvision (PIL resize, CenterCrop, ToTensor, Normalize) on the
 * committed cases. The resize replicates PIL's integer arithmetic, so the
 * outputs should agree to float rounding; the tolerance is 1e-6 absolute,
 * far below one grey level (1/255/std >= 0.011 here). */
START_TEST(test_preprocess_matches_torchvision)
{
    size_t mlen;
    unsigned char *mtext = read_fixture("manifest.json", &mlen);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)mtext, mlen, 0, &jerr), *cases;
    size_t i;
    ck_assert_ptr_nonnull(root);
    cases = json_object_get(root, "cases");
    ck_assert_int_ge(json_array_size(cases), 8);
    for (i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *name = json_string_value(json_object_get(c, "name"));
        td_image_transform tf;
        td_image img;
        td_error err;
        td_arena arena;
        size_t len, elen, n, need;
        unsigned char *buf, *expect;
        float *out;
        double maxd = 0;
        memset(&tf, 0, sizeof tf);
        tf.out_h = (int)json_integer_value(json_object_get(c, "out_h"));
        tf.out_w = (int)json_integer_value(json_object_get(c, "out_w"));
        tf.crop_pct = json_number_value(json_object_get(c, "crop_pct"));
        tf.grayscale = json_is_true(json_object_get(c, "grayscale"));
        ck_assert_int_eq(
            td_interp_parse(json_string_value(json_object_get(c, "interp")),
                            &tf.interp, &err), TD_OK);
        for (int k = 0; k < td_image_transform_channels(&tf); k++) {
            tf.mean[k] = (float)json_number_value(
                json_array_get(json_object_get(c, "mean"), (size_t)k));
            tf.std[k] = (float)json_number_value(
                json_array_get(json_object_get(c, "std"), (size_t)k));
        }
        buf = read_fixture(json_string_value(json_object_get(c, "image")),
                           &len);
        expect = read_fixture(json_string_value(json_object_get(c, "expect")),
                              &elen);
        ck_assert_int_eq(td_image_decode(buf, len, NULL, &img, &err), TD_OK);
        n = (size_t)td_image_transform_channels(&tf) * tf.out_h * tf.out_w;
        ck_assert_uint_eq(elen, n * sizeof(float));
        out = malloc(n * sizeof(float));
        need = td_image_preprocess_scratch(&tf, img.width, img.height);
        ck_assert_uint_ne(need, SIZE_MAX);
        ck_assert_int_eq(td_arena_init(&arena, need, &err), TD_OK);
        ck_assert_msg(td_image_preprocess(&img, &tf, out, &arena, &err) ==
                          TD_OK, "%s: %s", name, err.msg);
        ck_assert_uint_eq(arena.used, 0);    /* released */
        ck_assert_uint_le(arena.high_water, need);
        for (size_t k = 0; k < n; k++) {
            float ref;
            memcpy(&ref, expect + 4 * k, 4);
            double d = fabs((double)out[k] - (double)ref);
            maxd = d > maxd ? d : maxd;
        }
        ck_assert_msg(maxd <= 1e-6, "%s: max |diff| %g against torchvision",
                      name, maxd);
        /* The same without an arena. */
        memset(out, 0, n * sizeof(float));
        ck_assert_int_eq(td_image_preprocess(&img, &tf, out, NULL, &err),
                         TD_OK);
        ck_assert(memcmp(out, expect, n * sizeof(float)) == 0 || maxd > 0);
        td_arena_free(&arena);
        free(out);
        free(buf);
        free(expect);
        td_image_free(&img);
    }
    json_decref(root);
    free(mtext);
}
END_TEST

START_TEST(test_preprocess_identity_and_padding)
{
    /* Same size, crop_pct 1: the pixels come through, normalised. */
    enum { S = 20 };
    td_image img = {S, S, TD_IMAGE_PNG, pattern_rgb(S, S)};
    td_image_transform tf = {S, S, 1.0, TD_INTERP_BICUBIC,
                             {0.5f, 0.25f, 0.0f}, {0.5f, 2.0f, 1.0f}, 0};
    float out[3 * S * S];
    td_error err;
    ck_assert_int_eq(td_image_preprocess(&img, &tf, out, NULL, &err), TD_OK);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++)
            ck_assert_float_eq(out[c * S * S + i],
                               ((float)img.rgb[3 * i + c] / 255.0f -
                                tf.mean[c]) / tf.std[c]);
    /* crop_pct 2: resized to 10 x 10 and centred in a zero border of 5. */
    tf.crop_pct = 2.0;
    tf.interp = TD_INTERP_BILINEAR;
    ck_assert_int_eq(td_image_preprocess(&img, &tf, out, NULL, &err), TD_OK);
    ck_assert_float_eq(out[0], -1.0f);         /* (0 - 0.5) / 0.5 */
    ck_assert_float_eq(out[4 * S + 4], -1.0f); /* still border */
    ck_assert_float_eq(out[S * S + 15 * S + 15], -0.125f);
    ck_assert_float_ne(out[5 * S + 5], -1.0f); /* image */
    ck_assert_float_eq(out[14 * S + 15], -1.0f); /* right border */
    ck_assert_float_ne(out[14 * S + 14], -1.0f);
    free(img.rgb);
}
END_TEST

START_TEST(test_transform_validation_and_scratch)
{
    td_image_transform tf = {224, 224, 0.875, TD_INTERP_BICUBIC,
                             {0.485f, 0.456f, 0.406f},
                             {0.229f, 0.224f, 0.225f}, 0};
    td_image img = {640, 480, TD_IMAGE_JPEG, NULL};
    td_interp ip;
    td_arena small;
    td_error err;
    float *out;
    size_t need;
    ck_assert_int_eq(td_image_transform_check(&tf, &err), TD_OK);
    tf.crop_pct = 0;
    ck_assert_int_eq(td_image_transform_check(&tf, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "crop_pct"));
    tf.out_h = tf.out_w = 1;
    tf.crop_pct = 1.5; /* floor(1 / 1.5) = 0 */
    ck_assert_int_eq(td_image_transform_check(&tf, &err), TD_EINVAL);
    tf.out_h = tf.out_w = 224;
    tf.crop_pct = 0.875;
    tf.std[2] = 0;
    ck_assert_int_eq(td_image_transform_check(&tf, &err), TD_EINVAL);
    tf.std[2] = 0.225f;
    tf.out_h = 0;
    ck_assert_int_eq(td_image_transform_check(&tf, &err), TD_EINVAL);
    tf.out_h = 224;
    ck_assert_int_eq(td_interp_parse("nearest", &ip, &err), TD_EUNSUPPORTED);
    ck_assert_int_eq(td_interp_parse("bilinear", &ip, &err), TD_OK);
    ck_assert_int_eq(ip, TD_INTERP_BILINEAR);
    ck_assert_str_eq(td_interp_name(TD_INTERP_BICUBIC), "bicubic");

    /* An arena short of the stated need is refused, not overrun. */
    img.rgb = calloc((size_t)640 * 480 * 3, 1);
    need = td_image_preprocess_scratch(&tf, 640, 480);
    ck_assert_uint_gt(need, 0);
    ck_assert_uint_lt(need, (size_t)8 << 20);
    out = malloc(3 * 224 * 224 * sizeof(float));
    ck_assert_int_eq(td_arena_init(&small, need - 4096, &err), TD_OK);
    ck_assert_int_eq(td_image_preprocess(&img, &tf, out, &small, &err),
                     TD_ENOMEM);
    ck_assert_uint_eq(small.used, 0);
    td_arena_free(&small);
    ck_assert_int_eq(td_arena_init(&small, need, &err), TD_OK);
    ck_assert_int_eq(td_image_preprocess(&img, &tf, out, &small, &err),
                     TD_OK);
    /* A black image normalises to -mean/std. */
    ck_assert_float_eq_tol(out[0], -0.485f / 0.229f, 1e-6);
    ck_assert_float_eq_tol(out[2 * 224 * 224 + 5], -0.406f / 0.225f, 1e-6);
    td_arena_free(&small);
    free(out);
    free(img.rgb);
}
END_TEST

/* The per-model bound covers every source size the limits let through,
 * extreme aspect ratios and both resize paths included. */
START_TEST(test_scratch_max_bounds_every_size)
{
    static const td_image_transform tfs[] = {
        {224, 224, 0.875, TD_INTERP_BICUBIC, {0.5f, 0.5f, 0.5f},
         {0.5f, 0.5f, 0.5f}, 0},
        {28, 28, 1.0, TD_INTERP_BILINEAR, {0.5f}, {0.5f}, 1},
        {24, 36, 0.9, TD_INTERP_BICUBIC, {0.5f, 0.5f, 0.5f},
         {0.5f, 0.5f, 0.5f}, 0},
        {1, 1, 1.0, TD_INTERP_BICUBIC, {0.5f, 0.5f, 0.5f},
         {0.5f, 0.5f, 0.5f}, 0},
        {3, 2, 1.9, TD_INTERP_BILINEAR, {0.5f, 0.5f, 0.5f},
         {0.5f, 0.5f, 0.5f}, 0}};
    const td_image_limits lim = {3000, 2000, 0};
    unsigned seed = 12345;
    for (size_t t = 0; t < sizeof tfs / sizeof tfs[0]; t++) {
        size_t max = td_image_preprocess_scratch_max(&tfs[t], &lim);
        ck_assert_uint_ne(max, SIZE_MAX);
        for (int i = 0; i < 3000; i++) {
            int w, h;
            size_t need;
            seed = seed * 1103515245u + 12345u;
            w = 1 + (int)((seed >> 8) % 3000);
            seed = seed * 1103515245u + 12345u;
            h = 1 + (int)((seed >> 8) % 2000);
            if (i % 3 == 0)
                h = 1 + h % 3; /* very wide */
            if (i % 3 == 1)
                w = 1 + w % 3; /* very tall */
            need = td_image_preprocess_scratch(&tfs[t], w, h);
            ck_assert_msg(need <= max, "transform %zu, %dx%d: %zu > %zu", t,
                          w, h, need, max);
        }
    }
    /* Defaults are finite too. */
    ck_assert_uint_lt(td_image_preprocess_scratch_max(&tfs[0], NULL),
                      (size_t)64 << 20);
}
END_TEST

static Suite *image_suite(void)
{
    Suite *s = suite_create("td_image");
    TCase *tc = tcase_create("image");
    tcase_add_test(tc, test_probe_fixtures_and_other_formats);
    tcase_add_test(tc, test_decode_matches_pil);
    tcase_add_test(tc, test_png_all_color_types);
    tcase_add_test(tc, test_jpeg_roundtrip_rgb_gray_progressive);
    tcase_add_test(tc, test_jpeg_truncated_and_corrupt);
    tcase_add_test(tc, test_png_truncated_and_corrupt);
    tcase_add_test(tc, test_huge_header_refused_before_decoding);
    tcase_add_test(tc, test_jpeg_unsupported_variants);
    tcase_add_test(tc, test_preprocess_matches_torchvision);
    tcase_add_test(tc, test_preprocess_identity_and_padding);
    tcase_add_test(tc, test_transform_validation_and_scratch);
    tcase_add_test(tc, test_scratch_max_bounds_every_size);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(image_suite());
    int failed;
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
