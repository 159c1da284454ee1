/* The body shared by fuzz_jpeg.c and fuzz_png.c (they differ only in their
 * corpus and dictionary): probe, decode under small limits, check that what
 * was decoded agrees with the header, and push it through the eval
 * transform with a geometry derived from the image size.
 * Properties: no crash, no leak, no over-read (ASan/UBSan); an accepted
 * image has the probed size and every output float is finite; a refusal
 * carries a message and leaves nothing allocated. */
#ifndef IMAGE_FUZZ_H
#define IMAGE_FUZZ_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_guard.h"
#include "td_arena.h"
#include "td_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);



static int fuzz_image_one(const uint8_t *data, size_t size)
{
    /* Small limits keep each run fast; 1 Mpx still allows odd shapes. */
    const td_image_limits lim = {2048, 2048, 1u << 20};
    td_image_format fmt;
    td_image img;
    td_error err;
    int w, h;
    td_status pst, dst;

    data = fuzz_guarded_copy(data, size);
    pst = td_image_probe(data, size, &fmt, &w, &h, &err);
    CHECK(pst == TD_OK || err.msg[0]);
    dst = td_image_decode(data, size, &lim, &img, &err);
    if (dst != TD_OK) {
        CHECK(err.msg[0] && memchr(err.msg, '\0', sizeof err.msg));
        CHECK(img.rgb == NULL);
        return 0;
    }
    CHECK(pst == TD_OK && fmt == img.format && w == img.width &&
          h == img.height);
    CHECK((uint64_t)w * (uint64_t)h <= lim.max_pixels);
    {
        td_image_transform tf;
        td_arena arena;
        float *out;
        size_t n, need;
        memset(&tf, 0, sizeof tf);
        tf.out_h = 4 + w % 13;
        tf.out_w = 4 + h % 11;
        tf.crop_pct = 0.5 + (double)((w + h) % 16) / 10.0;
        tf.interp = (w ^ h) & 1 ? TD_INTERP_BICUBIC : TD_INTERP_BILINEAR;
        tf.grayscale = (w / 2 + h) % 3 == 0;
        for (int c = 0; c < 3; c++) {
            tf.mean[c] = 0.5f;
            tf.std[c] = 0.25f;
        }
        n = (size_t)td_image_transform_channels(&tf) * tf.out_h * tf.out_w;
        need = td_image_preprocess_scratch(&tf, w, h);
        CHECK(need != SIZE_MAX);
        CHECK(need <= td_image_preprocess_scratch_max(&tf, &lim));
        CHECK(td_arena_init(&arena, need, &err) == TD_OK);
        out = malloc(n * sizeof *out);
        CHECK(out);
        CHECK(td_image_preprocess(&img, &tf, out, &arena, &err) == TD_OK);
        CHECK(arena.high_water <= need && arena.used == 0);
        for (size_t i = 0; i < n; i++)
            CHECK(out[i] >= -2.0f && out[i] <= 2.0f); /* (v - .5) / .25 */
        free(out);
        td_arena_free(&arena);
    }
    td_image_free(&img);
    return 0;
}

#endif
