/* libFuzzer target for the safetensors reader: every input either is
 * refused with a message or yields a file whose tensors and metadata can
 * all be looked up and touched, that accounts for every data byte, and
 * that survives a write/read round trip unchanged.
 * Build and run: tests/fuzz/run_fuzzers.sh safetensors
 * fuzz-coverage: core/td_safetensors.c */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_guard.h"
#include "td_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void same_contents(const td_st_file *a, const td_st_file *b)
{
    size_t i;
    CHECK(a->n_tensors == b->n_tensors && a->n_meta == b->n_meta);
    for (i = 0; i < a->n_tensors; i++) {
        const td_st_tensor *x = &a->tensors[i];
        const td_st_tensor *y = td_st_find(b, x->name);
        CHECK(y && y->dtype == x->dtype && y->ndim == x->ndim &&
              y->nbytes == x->nbytes && y->numel == x->numel);
        CHECK(memcmp(x->shape, y->shape, sizeof x->shape) == 0);
        CHECK(x->nbytes == 0 || memcmp(x->data, y->data, x->nbytes) == 0);
    }
    for (i = 0; i < a->n_meta; i++) {
        const char *v = td_st_meta_get(b, a->meta[i].key);
        CHECK(v && strcmp(v, a->meta[i].value) == 0);
    }
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    td_st_file f, g;
    td_error err;
    td_st_writer *w;
    unsigned char *out;
    size_t out_len, i, covered = 0;
    volatile unsigned sink = 0;

    data = fuzz_guarded_copy(data, size);
    if (td_st_parse(&f, data, size, &err) != TD_OK) {
        CHECK(memchr(err.msg, '\0', sizeof err.msg) && err.msg[0]);
        CHECK(f.tensors == NULL && f.strings == NULL && f.meta == NULL);
        return 0;
    }
    for (i = 0; i < f.n_tensors; i++) {
        const td_st_tensor *t = &f.tensors[i], *e;
        const unsigned char *p = t->data;
        size_t k;
        CHECK(td_st_find(&f, t->name) == t);
        CHECK(td_st_expect(&f, t->name, t->dtype, t->ndim, t->shape, &e,
                           &err) == TD_OK && e == t);
        CHECK(t->nbytes == t->numel * td_dtype_size(t->dtype));
        CHECK(p >= f.bytes && p + t->nbytes <= f.bytes + f.len);
        /* Data order: contiguous from tensor to tensor. */
        if (i > 0)
            CHECK(p == (const unsigned char *)f.tensors[i - 1].data +
                           f.tensors[i - 1].nbytes);
        for (k = 0; k < t->nbytes; k++)
            sink += p[k];
        covered += t->nbytes;
    }
    /* Every data byte is accounted for: the tensors run from the end of
     * the header to the end of the file. */
    {
        uint64_t hlen = 0;
        int k;
        for (k = 7; k >= 0; k--)
            hlen = (hlen << 8) | f.bytes[k];
        CHECK(covered == f.len - 8 - hlen);
        if (f.n_tensors)
            CHECK((const unsigned char *)f.tensors[0].data ==
                  f.bytes + 8 + hlen);
    }
    for (i = 0; i < f.n_meta; i++) {
        CHECK(td_st_meta_get(&f, f.meta[i].key) == f.meta[i].value);
        sink += (unsigned char)f.meta[i].value[0];
    }
    (void)sink;

    /* What was accepted must write back and read back the same. */
    w = td_st_writer_new();
    CHECK(w);
    for (i = 0; i < f.n_tensors; i++) {
        const td_st_tensor *t = &f.tensors[i];
        CHECK(td_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape,
                               t->data, &err) == TD_OK);
    }
    for (i = 0; i < f.n_meta; i++)
        CHECK(td_st_writer_meta(w, f.meta[i].key, f.meta[i].value, &err) ==
              TD_OK);
    CHECK(td_st_writer_bytes(w, &out, &out_len, &err) == TD_OK);
    td_st_writer_free(w);
    CHECK(td_st_parse(&g, out, out_len, &err) == TD_OK);
    same_contents(&f, &g);
    same_contents(&g, &f);
    td_st_close(&g);
    free(out);
    td_st_close(&f);
    return 0;
}
