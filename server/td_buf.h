/* td_buf: a growable byte string for building responses.
 *
 * On allocation failure the buffer latches `failed` and ignores further
 * appends, so callers check once at the end. Thread: one owner. */
#ifndef TD_BUF_H
#define TD_BUF_H

#include <stddef.h>

typedef struct td_buf {
    char *data;   /* owned, NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    int failed;
} td_buf;

void td_buf_init(td_buf *b);
void td_buf_free(td_buf *b);
void td_buf_append(td_buf *b, const char *s, size_t n);
void td_buf_printf(td_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hand the bytes to the caller (who frees them); b is left empty. NULL if
 * an append failed. */
char *td_buf_take(td_buf *b, size_t *len);

#endif
