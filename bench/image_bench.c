/* Figures for td_image: JPEG decode and the timm eval transform (224x224,
 * crop_pct 0.875, bicubic) for a few source sizes, median ms per image over
 * a few rounds, one thread, in thread CPU time (the machine is shared, so
 * wall time mostly measures the neighbours). The JPEGs are synthetic (libjpeg, quality 85,
 * 4:2:0), made here so the bench needs no files.
 *   bench/image_bench [ROUNDS]   */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>

#include "td_arena.h"
#include "td_image.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static unsigned char *make_jpeg(int w, int h, unsigned long *len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    unsigned char *out = NULL, *row = malloc((size_t)w * 3);
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 85, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        int y = (int)c.next_scanline;
        for (int x = 0; x < w; x++) {
            row[3 * x] = (unsigned char)(x * 255 / w);
            row[3 * x + 1] = (unsigned char)(y * 255 / h);
            row[3 * x + 2] = (unsigned char)(((x / 16 + y / 16) & 1) * 200);
        }
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    return out;
}

int main(int argc, char **argv)
{
    static const int sizes[][2] = {{224, 224}, {640, 480}, {1920, 1080}};
    int rounds = argc > 1 ? atoi(argv[1]) : 15;
    td_image_transform tf = {224, 224, 0.875, TD_INTERP_BICUBIC,
                             {0.485f, 0.456f, 0.406f},
                             {0.229f, 0.224f, 0.225f}, 0};
    float *out = malloc(3 * 224 * 224 * sizeof(float));
    double *t_dec, *t_pre;
    if (rounds < 1)
        rounds = 1;
    t_dec = malloc(sizeof(double) * (size_t)rounds);
    t_pre = malloc(sizeof(double) * (size_t)rounds);
    printf("%-10s %8s %12s %14s %12s\n", "source", "jpeg KB", "decode ms",
           "preprocess ms", "scratch KB");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        unsigned long len = 0;
        unsigned char *jpg = make_jpeg(sizes[s][0], sizes[s][1], &len);
        size_t need = td_image_preprocess_scratch(&tf, sizes[s][0],
                                                  sizes[s][1]);
        td_arena arena;
        td_error err;
        char name[32];
        if (td_arena_init(&arena, need, &err) != TD_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        for (int r = 0; r < rounds; r++) {
            td_image img;
            double t0 = now_ms(), t1, t2;
            if (td_image_decode(jpg, len, NULL, &img, &err) != TD_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            t1 = now_ms();
            if (td_image_preprocess(&img, &tf, out, &arena, &err) != TD_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            t2 = now_ms();
            t_dec[r] = t1 - t0;
            t_pre[r] = t2 - t1;
            td_image_free(&img);
        }
        qsort(t_dec, (size_t)rounds, sizeof(double), cmp_double);
        qsort(t_pre, (size_t)rounds, sizeof(double), cmp_double);
        snprintf(name, sizeof name, "%dx%d", sizes[s][0], sizes[s][1]);
        printf("%-10s %8.1f %12.3f %14.3f %12.1f\n", name, len / 1024.0,
               t_dec[rounds / 2], t_pre[rounds / 2], need / 1024.0);
        td_arena_free(&arena);
        free(jpg);
    }
    free(out);
    free(t_dec);
    free(t_pre);
    return 0;
}
