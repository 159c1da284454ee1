/* td_base64: a table-driven decoder. */
#include "config.h"

#include "td_base64.h"

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62; /* '-' and '_': the URL-safe alphabet too */
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

long td_base64_decode(const char *in, size_t len, unsigned char *out,
                      size_t *bad_at)
{
    size_t i, o = 0;
    unsigned acc = 0;
    int bits = 0;
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1) {
        *bad_at = len;
        return -1;
    }
    for (i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) {
            *bad_at = i;
            return -1;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}
