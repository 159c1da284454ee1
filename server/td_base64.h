/* td_base64: standard base64 (RFC 4648 §4) decoding, for images sent as
 * {"b64": "..."}. Padding optional; whitespace is not allowed. Thread:
 * any. */
#ifndef TD_BASE64_H
#define TD_BASE64_H

#include <stddef.h>

/* Decode len characters of `in` into out (capacity at least len*3/4+3).
 * Returns the decoded length, or -1 (with *bad_at set) on an invalid
 * character or length. */
long td_base64_decode(const char *in, size_t len, unsigned char *out,
                      size_t *bad_at);

#endif
