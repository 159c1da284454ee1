/* td_safetensors: the one container format for models and oracles.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header,
 * then the raw little-endian tensor bytes. The header maps tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
 * byte after the header) plus an optional "__metadata__" string->string
 * map. The metadata key "kind" says what servable thing the file is.
 *
 * The reader validates strictly: header length limit, JSON object of
 * objects, known dtypes, shape product times dtype size equal to the byte
 * range, ranges inside the file, no overlaps, and no data bytes that no
 * tensor accounts for. It never trusts a number from the file before
 * checking it.
 *
 * Thread: a td_st_file is immutable after open; any thread may read it. */
#ifndef TD_SAFETENSORS_H
#define TD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"

#define TD_ST_MAX_DIMS 8
/* Largest JSON header accepted (the reference implementation uses 100 MB). */
#define TD_ST_MAX_HEADER (100u * 1024u * 1024u)
/* Tensor data written by td_st_writer starts at multiples of this. */
#define TD_ST_ALIGN 64

typedef enum td_dtype {
    TD_DT_BOOL,
    TD_DT_U8,
    TD_DT_I8,
    TD_DT_U16,
    TD_DT_I16,
    TD_DT_F16,
    TD_DT_BF16,
    TD_DT_U32,
    TD_DT_I32,
    TD_DT_F32,
    TD_DT_U64,
    TD_DT_I64,
    TD_DT_F64,
    TD_DT_COUNT
} td_dtype;

/* "F32" etc. as safetensors spells them; NULL for an invalid dtype. */
const char *td_dtype_name(td_dtype dt);
/* Parse a safetensors dtype string; returns TD_DT_COUNT when unknown. */
td_dtype td_dtype_parse(const char *s);
size_t td_dtype_size(td_dtype dt);

typedef struct td_st_tensor {
    const char *name;               /* owned by the td_st_file */
    td_dtype dtype;
    int ndim;                       /* 0 .. TD_ST_MAX_DIMS */
    int64_t shape[TD_ST_MAX_DIMS];
    size_t numel;                   /* product of shape (1 for a scalar) */
    const void *data;               /* points into the file's bytes */
    size_t nbytes;
} td_st_tensor;

typedef struct td_st_meta {
    const char *key;  /* owned by the td_st_file */
    const char *value;
} td_st_meta;

typedef struct td_st_file {
    const unsigned char *bytes; /* the whole file */
    size_t len;
    int mapped;                 /* 1: bytes is an mmap this struct unmaps */
    char *strings;              /* owned: names, keys and values */
    td_st_tensor *tensors;      /* owned, in header order */
    size_t n_tensors;
    td_st_meta *meta;           /* owned */
    size_t n_meta;
} td_st_file;

/* mmap `path` read-only and validate it. On error nothing is left mapped.
 * Release with td_st_close. */
td_status td_st_open(td_st_file *f, const char *path, td_error *err);
/* Validate an in-memory file without copying its bytes: buf must outlive f
 * and is not freed by td_st_close. (The fuzz target uses this.) */
td_status td_st_parse(td_st_file *f, const void *buf, size_t len,
                      td_error *err);
void td_st_close(td_st_file *f);

/* Lookups: NULL when absent. Pointers live as long as f. */
const td_st_tensor *td_st_find(const td_st_file *f, const char *name);
const char *td_st_meta_get(const td_st_file *f, const char *key);
/* Check that a tensor exists with this dtype and shape; the error names
 * the tensor and the shape expected. ndim = -1 skips the shape check. */
td_status td_st_expect(const td_st_file *f, const char *name, td_dtype dt,
                       int ndim, const int64_t *shape,
                       const td_st_tensor **out, td_error *err);

/* Writer: collects tensors (data is copied by pointer, not bytes: it must
 * stay valid until td_st_writer_write returns) and metadata, then writes
 * the file atomically with each tensor aligned to TD_ST_ALIGN. */
typedef struct td_st_writer td_st_writer;
td_st_writer *td_st_writer_new(void);  /* NULL on out-of-memory */
void td_st_writer_free(td_st_writer *w);
td_status td_st_writer_add(td_st_writer *w, const char *name, td_dtype dt,
                           int ndim, const int64_t *shape, const void *data,
                           td_error *err);
td_status td_st_writer_meta(td_st_writer *w, const char *key,
                            const char *value, td_error *err);
td_status td_st_writer_write(td_st_writer *w, const char *path,
                             td_error *err);

#endif
