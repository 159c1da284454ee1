/* libFuzzer target: td_base64_decode, the decoder behind :classify's
 * {"b64": "..."} images. The output buffer is exactly as large as the
 * header promises is enough (and no larger than the one td_api_classify
 * allocates), so ASan catches any write past it.
 * Properties: decoding succeeds exactly when every character before the
 * trailing '=' is in the standard or URL-safe alphabet and that length is
 * not 1 mod 4; then the output has floor(6 * length / 8) bytes and
 * re-encoding it decodes to the same bytes; a refusal points at the bad
 * character (or at the end, for a bad length).
 * Build and run: tests/fuzz/run_fuzzers.sh base64
 * fuzz-sources: server/td_base64.c
 * fuzz-coverage: server/td_base64.c */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "td_base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c))                                                           \
            __builtin_trap();                                               \
    } while (0)

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int valid_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '-' ||
           c == '_';
}

/* Capacity the decoder may use for len input characters: the smaller of
 * the header's promise and what td_api_classify allocates. */
static size_t out_cap(size_t len)
{
    size_t a = len * 3 / 4 + 3, b = len / 4 * 3 + 4;
    return a < b ? a : b;
}

static char *encode(const unsigned char *in, size_t n, size_t *out_len)
{
    char *out = malloc(n / 3 * 4 + 5), *o = out;
    size_t i;
    CHECK(out);
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 |
                     in[i + 2];
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = '=';
    }
    *out_len = (size_t)(o - out);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t stripped = size, i, bad = (size_t)-1, cap = out_cap(size);
    int ok = 1;
    unsigned char *out = malloc(cap ? cap : 1);
    long got;
    CHECK(out);
    while (stripped > 0 && in[stripped - 1] == '=')
        stripped--;
    for (i = 0; i < stripped && ok; i++)
        ok = valid_char(data[i]);
    ok = ok && stripped % 4 != 1;

    got = td_base64_decode(in, size, out, &bad);
    if (!ok) {
        CHECK(got == -1 && bad <= stripped);
        CHECK(bad == stripped ? stripped % 4 == 1 : !valid_char(data[bad]));
        free(out);
        return 0;
    }
    CHECK(got >= 0 && (size_t)got == stripped * 6 / 8 &&
          (size_t)got <= cap);
    {
        size_t elen, cap2;
        char *e = encode(out, (size_t)got, &elen);
        unsigned char *again;
        cap2 = out_cap(elen);
        again = malloc(cap2 ? cap2 : 1);
        CHECK(again);
        CHECK(td_base64_decode(e, elen, again, &bad) == got);
        CHECK(got == 0 || memcmp(out, again, (size_t)got) == 0);
        free(again);
        free(e);
    }
    free(out);
    return 0;
}
