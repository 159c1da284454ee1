/* td_safetensors: the one container format for models and oracles.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON header,
 * then the raw little-endian tensor bytes. The header maps tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
 * byte after the header) plus an optional "__metadata__" string->string
 * map. The metadata key "kind" says what servable thing the file is.
 * docs/FORMATS.md ("The container") is the full description.
 *
 * The reader validates strictly: header length limit, JSON object of
 * objects, known dtypes, shape product times dtype size equal to the byte
 * range, ranges inside the file, no overlaps, and no data bytes that no
 * tensor accounts for. It never trusts a number from the file before
 * checking it.
 *
 * Alignment: a tensor's data pointer is only as aligned as the file makes
 * it. Files from td_st_writer start their data area at a multiple of
 * TD_ST_ALIGN and put every tensor at a multiple of its element size, so
 * typed access is safe on an mmap (page aligned) or a malloc'd buffer of
 * them. Files written by others (the reference writer pads the header to a
 * multiple of 8 only) or buffers at odd addresses may not be: consumers
 * either check td_st_tensor_aligned() or memcpy the bytes out.
 *
 * Ownership: a td_st_file owns its names, keys and values (one allocation,
 * `strings`) and its arrays; tensor data points into the mapped or caller
 * buffer. The JSON tree is freed before td_st_open/td_st_parse return.
 *
 * Thread: a td_st_file is immutable after open; any thread may read it.
 * A td_st_writer belongs to one thread at a time. */
#ifndef TD_SAFETENSORS_H
#define TD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "td_err.h"

#define TD_ST_MAX_DIMS 8
/* Largest JSON header accepted (the reference implementation uses 100 MB). */
#define TD_ST_MAX_HEADER (100u * 1024u * 1024u)
/* The data area of files written by td_st_writer starts at a multiple of
 * this (the header is padded with spaces). Tensors whose byte size is a
 * multiple of it are written first, so each of those starts at a multiple
 * of it too; every other tensor starts at a multiple of its element size. */
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
/* Bytes per element (BOOL is one byte); 0 for an invalid dtype. */
size_t td_dtype_size(td_dtype dt);

typedef struct td_st_tensor {
    const char *name;               /* owned by the td_st_file */
    td_dtype dtype;
    int ndim;                       /* 0 .. TD_ST_MAX_DIMS */
    int64_t shape[TD_ST_MAX_DIMS];
    size_t numel;                   /* product of shape (1 for a scalar) */
    const void *data;               /* points into the file's bytes; may be
                                       misaligned, see the top comment */
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
    /* Owned, in data order (ascending begin offset; zero-size tensors
     * before the tensor that starts where they sit, ties by name). Data
     * order rather than header order because JSON object order carries no
     * meaning and writers disagree on it, while data order is a property
     * of the bytes: the same file always lists the same way. */
    td_st_tensor *tensors;
    size_t n_tensors;
    td_st_meta *meta;           /* owned, in header order */
    size_t n_meta;
} td_st_file;

/* mmap `path` read-only and validate it. On error nothing is left mapped
 * and *f is zeroed (td_st_close on it is a no-op). Release with
 * td_st_close. Files are replaced by rename (td_file.h), so a mapping
 * keeps seeing the old bytes; truncating a mapped file in place would not
 * be safe (SIGBUS), which is why nothing in tinyd writes in place. */
td_status td_st_open(td_st_file *f, const char *path, td_error *err);
/* Validate an in-memory file without copying its bytes: buf must outlive f
 * and is not freed by td_st_close. (The fuzz target uses this.) On error
 * *f is zeroed. */
td_status td_st_parse(td_st_file *f, const void *buf, size_t len,
                      td_error *err);
void td_st_close(td_st_file *f);

/* Lookups: NULL when absent. Pointers live as long as f. */
const td_st_tensor *td_st_find(const td_st_file *f, const char *name);
const char *td_st_meta_get(const td_st_file *f, const char *key);
/* Check that a tensor exists with this dtype and shape; the error names
 * the tensor and the shape expected, e.g.
 *   tensor "w": expected F32 [32,1,3,3], found F32 [32,1,5,5]
 *   missing tensor "w"
 * ndim = -1 skips the shape check (shape may then be NULL). TD_EFORMAT on
 * mismatch. *out (if out is non-NULL) gets the tensor on success. */
td_status td_st_expect(const td_st_file *f, const char *name, td_dtype dt,
                       int ndim, const int64_t *shape,
                       const td_st_tensor **out, td_error *err);
/* Check that metadata `key` exists and, when `value` is non-NULL, equals
 * it (loaders call td_st_expect_meta(f, "kind", "tinynet", err)).
 * TD_EFORMAT naming the key and both values on mismatch. */
td_status td_st_expect_meta(const td_st_file *f, const char *key,
                            const char *value, td_error *err);
/* 1 when t->data is a multiple of `align` bytes (a power of two; 0 and 1
 * mean any address), so it may be read through a typed pointer. */
int td_st_tensor_aligned(const td_st_tensor *t, size_t align);

/* Writer: collects tensors (data is kept by pointer, not copied: it must
 * stay valid until td_st_writer_write returns) and metadata, then writes
 * the file atomically (td_file.h) with no gaps between tensors, the data
 * area starting at a multiple of TD_ST_ALIGN (see there). Files are
 * readable by the reference safetensors implementation. Duplicate tensor
 * names or metadata keys, "__metadata__" as a tensor name and strings
 * that are not UTF-8 are refused with TD_EINVAL. */
typedef struct td_st_writer td_st_writer;
td_st_writer *td_st_writer_new(void);  /* NULL on out-of-memory */
void td_st_writer_free(td_st_writer *w);
/* in: data holds numel(shape) elements of dt, little-endian; may be NULL
 * only when that is zero bytes. ndim 0 is a scalar. */
td_status td_st_writer_add(td_st_writer *w, const char *name, td_dtype dt,
                           int ndim, const int64_t *shape, const void *data,
                           td_error *err);
td_status td_st_writer_meta(td_st_writer *w, const char *key,
                            const char *value, td_error *err);
td_status td_st_writer_write(td_st_writer *w, const char *path,
                             td_error *err);
/* The same bytes as td_st_writer_write, in a malloc'd buffer the caller
 * frees (for HTTP responses and tests). */
td_status td_st_writer_bytes(td_st_writer *w, unsigned char **out,
                             size_t *len, td_error *err);

#endif
