/* td_safetensors: strict reader and gap-free writer of the safetensors
 * container (see td_safetensors.h and docs/FORMATS.md). */
#include "config.h"

#include "td_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "td_file.h"

/* Tensor bytes are handed out as they lie in the file, which is
 * little-endian by definition. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "td_safetensors needs a little-endian host"
#endif

/* A hostile name can be a megabyte long; messages show its start only. */
#define QNAME "\"%.160s\""
#define SHAPE_STR 200

static const struct {
    const char *name;
    size_t size;
} dtype_info[TD_DT_COUNT] = {
    [TD_DT_BOOL] = {"BOOL", 1}, [TD_DT_U8] = {"U8", 1},
    [TD_DT_I8] = {"I8", 1},     [TD_DT_U16] = {"U16", 2},
    [TD_DT_I16] = {"I16", 2},   [TD_DT_F16] = {"F16", 2},
    [TD_DT_BF16] = {"BF16", 2}, [TD_DT_U32] = {"U32", 4},
    [TD_DT_I32] = {"I32", 4},   [TD_DT_F32] = {"F32", 4},
    [TD_DT_U64] = {"U64", 8},   [TD_DT_I64] = {"I64", 8},
    [TD_DT_F64] = {"F64", 8},
};

const char *td_dtype_name(td_dtype dt)
{
    return (unsigned)dt < TD_DT_COUNT ? dtype_info[dt].name : NULL;
}

td_dtype td_dtype_parse(const char *s)
{
    int i;
    for (i = 0; i < TD_DT_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0)
            return (td_dtype)i;
    return TD_DT_COUNT;
}

size_t td_dtype_size(td_dtype dt)
{
    return (unsigned)dt < TD_DT_COUNT ? dtype_info[dt].size : 0;
}

/* "[32,1,3,3]" ("[]" for a scalar), cut with "..." if it does not fit. */
static const char *shape_str(char *buf, size_t cap, int ndim,
                             const int64_t *shape)
{
    size_t used = 1;
    int i;
    buf[0] = '[';
    buf[1] = '\0';
    for (i = 0; i < ndim; i++) {
        int n = snprintf(buf + used, cap - used, "%s%" PRId64, i ? "," : "",
                         shape[i]);
        if (n < 0 || (size_t)n >= cap - used - 1) {
            snprintf(buf + (cap > 5 ? cap - 5 : 0), 5, "...]");
            return buf;
        }
        used += (size_t)n;
    }
    snprintf(buf + used, cap - used, "]");
    return buf;
}

/* Element count and byte size of a shape, or -1 when either does not fit
 * in size_t. A zero dimension makes the product zero whatever the other
 * dimensions are, so it is looked for before multiplying. */
static int shape_bytes(td_dtype dt, int ndim, const int64_t *shape,
                       size_t *numel, size_t *nbytes)
{
    size_t n = 1;
    int i;
    for (i = 0; i < ndim; i++)
        if (shape[i] == 0) {
            *numel = *nbytes = 0;
            return 0;
        }
    for (i = 0; i < ndim; i++) {
        if ((uint64_t)shape[i] > SIZE_MAX ||
            __builtin_mul_overflow(n, (size_t)shape[i], &n))
            return -1;
    }
    if (__builtin_mul_overflow(n, td_dtype_size(dt), nbytes))
        return -1;
    *numel = n;
    return 0;
}

/* ------------------------------------------------------------- reader */

/* One tensor entry while parsing: name points into the JSON tree until
 * the names are copied into f->strings. */
typedef struct st_entry {
    const char *name;
    size_t name_len;
    td_dtype dtype;
    int ndim;
    int64_t shape[TD_ST_MAX_DIMS];
    size_t numel, nbytes;
    uint64_t begin, end;
} st_entry;

static int entry_cmp(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    /* A zero-size tensor sitting at the start of another goes first, so
     * the contiguity walk below sees it before the cursor moves on. */
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* A JSON integer in [0, INT64_MAX] (jansson refuses larger literals). */
static int get_uint(const json_t *v, uint64_t *out)
{
    json_int_t i;
    if (!json_is_integer(v))
        return -1;
    i = json_integer_value(v);
    if (i < 0)
        return -1;
    *out = (uint64_t)i;
    return 0;
}

static td_status parse_entry(const char *name, json_t *obj,
                             uint64_t data_len, st_entry *e, td_error *err)
{
    json_t *dtype, *shape, *offs, *v;
    const char *key;
    size_t i;
    char sbuf[SHAPE_STR];

    memset(e, 0, sizeof *e);
    e->name = name;
    e->name_len = strlen(name);
    if (!json_is_object(obj))
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": entry is not a JSON object",
                            name);
    json_object_foreach(obj, key, v) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0)
            return td_error_set(err, TD_EFORMAT,
                                "tensor " QNAME ": unexpected key " QNAME
                                " (only dtype, shape, data_offsets)",
                                name, key);
    }
    dtype = json_object_get(obj, "dtype");
    shape = json_object_get(obj, "shape");
    offs = json_object_get(obj, "data_offsets");
    if (!dtype || !shape || !offs)
        return td_error_set(err, TD_EFORMAT, "tensor " QNAME ": missing \"%s\"",
                            name,
                            !dtype ? "dtype" : !shape ? "shape"
                                                      : "data_offsets");

    if (!json_is_string(dtype))
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": dtype is not a string", name);
    e->dtype = td_dtype_parse(json_string_value(dtype));
    if (e->dtype == TD_DT_COUNT)
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": unknown dtype \"%.32s\"", name,
                            json_string_value(dtype));

    if (!json_is_array(shape))
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": shape is not an array", name);
    if (json_array_size(shape) > TD_ST_MAX_DIMS)
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": shape has %zu dimensions, at "
                            "most %d are supported",
                            name, json_array_size(shape), TD_ST_MAX_DIMS);
    e->ndim = (int)json_array_size(shape);
    for (i = 0; i < json_array_size(shape); i++) {
        uint64_t d;
        if (get_uint(json_array_get(shape, i), &d) != 0)
            return td_error_set(err, TD_EFORMAT,
                                "tensor " QNAME ": shape[%zu] is not a "
                                "non-negative integer",
                                name, i);
        e->shape[i] = (int64_t)d;
    }
    if (shape_bytes(e->dtype, e->ndim, e->shape, &e->numel, &e->nbytes) != 0)
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": shape %s is too large (its "
                            "byte size overflows)",
                            name,
                            shape_str(sbuf, sizeof sbuf, e->ndim, e->shape));

    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        get_uint(json_array_get(offs, 0), &e->begin) != 0 ||
        get_uint(json_array_get(offs, 1), &e->end) != 0)
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": data_offsets is not an array "
                            "of two non-negative integers",
                            name);
    if (e->begin > e->end)
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": data_offsets [%" PRIu64
                            ",%" PRIu64 "] begin after end",
                            name, e->begin, e->end);
    if (e->end > data_len)
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": data_offsets [%" PRIu64
                            ",%" PRIu64 "] run past the %" PRIu64
                            "-byte data area",
                            name, e->begin, e->end, data_len);
    if (e->end - e->begin != (uint64_t)e->nbytes)
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": %s %s needs %zu bytes but "
                            "data_offsets [%" PRIu64 ",%" PRIu64
                            "] hold %" PRIu64,
                            name, td_dtype_name(e->dtype),
                            shape_str(sbuf, sizeof sbuf, e->ndim, e->shape),
                            e->nbytes, e->begin, e->end, e->end - e->begin);
    return TD_OK;
}

/* Every data byte belongs to exactly one tensor: walking the entries in
 * data order, each must start where the previous one ended, and the last
 * must end at the end of the file. */
static td_status check_coverage(const st_entry *e, size_t n,
                                uint64_t data_len, td_error *err)
{
    uint64_t cursor = 0;
    size_t i, owner = 0; /* entry that moved the cursor last */
    int have_owner = 0;
    for (i = 0; i < n; i++) {
        if (e[i].begin < cursor)
            return td_error_set(
                err, TD_EFORMAT,
                "tensor " QNAME ": data_offsets [%" PRIu64 ",%" PRIu64
                "] overlap tensor " QNAME " [%" PRIu64 ",%" PRIu64 "]",
                e[i].name, e[i].begin, e[i].end, e[owner].name,
                e[owner].begin, e[owner].end);
        if (e[i].begin > cursor)
            return td_error_set(err, TD_EFORMAT,
                                "data bytes [%" PRIu64 ",%" PRIu64
                                ") before tensor " QNAME
                                " belong to no tensor",
                                cursor, e[i].begin, e[i].name);
        if (e[i].end > cursor || !have_owner) {
            owner = i;
            have_owner = 1;
        }
        cursor = e[i].end;
    }
    if (cursor != data_len)
        return td_error_set(err, TD_EFORMAT,
                            "the last %" PRIu64 " data bytes [%" PRIu64
                            ",%" PRIu64 ") belong to no tensor",
                            data_len - cursor, cursor, data_len);
    return TD_OK;
}

static char *copy_str(char **cursor, const char *s, size_t len)
{
    char *dst = *cursor;
    memcpy(dst, s, len);
    dst[len] = '\0';
    *cursor += len + 1;
    return dst;
}

td_status td_st_parse(td_st_file *f, const void *buf, size_t len,
                      td_error *err)
{
    const unsigned char *b = buf;
    uint64_t hlen = 0, data_len;
    json_t *root = NULL, *meta = NULL, *v;
    json_error_t jerr;
    st_entry *ents = NULL;
    size_t n_ents = 0, n_meta = 0, str_bytes = 0, i;
    const char *key;
    char *cur;
    td_status st = TD_OK;
    int k;

    memset(f, 0, sizeof *f);
    if (len < 8)
        return td_error_set(err, TD_EFORMAT,
                            "file is %zu bytes, too short for the 8-byte "
                            "header length",
                            len);
    for (k = 7; k >= 0; k--)
        hlen = (hlen << 8) | b[k];
    if (hlen > TD_ST_MAX_HEADER)
        return td_error_set(err, TD_ETOOBIG,
                            "header length %" PRIu64 " exceeds the limit of "
                            "%u bytes",
                            hlen, TD_ST_MAX_HEADER);
    if (hlen > len - 8)
        return td_error_set(err, TD_EFORMAT,
                            "header length %" PRIu64 " runs past the end of "
                            "the %zu-byte file",
                            hlen, len);
    data_len = len - 8 - hlen;

    root = json_loadb((const char *)b + 8, (size_t)hlen,
                      JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return td_error_set(err, TD_EFORMAT,
                            "header is not valid JSON: %s (line %d, column "
                            "%d)",
                            jerr.text, jerr.line, jerr.column);
    if (!json_is_object(root)) {
        st = td_error_set(err, TD_EFORMAT, "header is not a JSON object");
        goto fail;
    }

    ents = calloc(json_object_size(root) ? json_object_size(root) : 1,
                  sizeof *ents);
    if (!ents) {
        st = td_error_set(err, TD_ENOMEM, "out of memory for %zu tensors",
                          json_object_size(root));
        goto fail;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) {
                st = td_error_set(err, TD_EFORMAT,
                                  "__metadata__ is not a JSON object");
                goto fail;
            }
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    st = td_error_set(err, TD_EFORMAT,
                                      "__metadata__ value for key " QNAME
                                      " is not a string",
                                      mk);
                    goto fail;
                }
                str_bytes += strlen(mk) + 1 + json_string_length(mv) + 1;
            }
            meta = v;
            n_meta = json_object_size(v);
            continue;
        }
        st = parse_entry(key, v, data_len, &ents[n_ents], err);
        if (st != TD_OK)
            goto fail;
        str_bytes += ents[n_ents].name_len + 1;
        n_ents++;
    }
    qsort(ents, n_ents, sizeof *ents, entry_cmp);
    st = check_coverage(ents, n_ents, data_len, err);
    if (st != TD_OK)
        goto fail;

    f->strings = malloc(str_bytes ? str_bytes : 1);
    f->tensors = calloc(n_ents ? n_ents : 1, sizeof *f->tensors);
    f->meta = calloc(n_meta ? n_meta : 1, sizeof *f->meta);
    if (!f->strings || !f->tensors || !f->meta) {
        st = td_error_set(err, TD_ENOMEM, "out of memory for the header");
        goto fail;
    }
    cur = f->strings;
    for (i = 0; i < n_ents; i++) {
        td_st_tensor *t = &f->tensors[i];
        t->name = copy_str(&cur, ents[i].name, ents[i].name_len);
        t->dtype = ents[i].dtype;
        t->ndim = ents[i].ndim;
        memcpy(t->shape, ents[i].shape, sizeof t->shape);
        t->numel = ents[i].numel;
        t->nbytes = ents[i].nbytes;
        t->data = b + 8 + hlen + ents[i].begin;
    }
    if (meta) {
        const char *mk;
        json_t *mv;
        i = 0;
        json_object_foreach(meta, mk, mv) {
            f->meta[i].key = copy_str(&cur, mk, strlen(mk));
            f->meta[i].value = copy_str(&cur, json_string_value(mv),
                                        json_string_length(mv));
            i++;
        }
    }
    f->n_tensors = n_ents;
    f->n_meta = n_meta;
    f->bytes = b;
    f->len = len;
    free(ents);
    json_decref(root);
    return TD_OK;

fail:
    free(ents);
    json_decref(root);
    free(f->strings);
    free(f->tensors);
    free(f->meta);
    memset(f, 0, sizeof *f);
    return st;
}

td_status td_st_open(td_st_file *f, const char *path, td_error *err)
{
    struct stat sb;
    void *map;
    td_status st;
    int fd;

    memset(f, 0, sizeof *f);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return td_error_set(err, errno == ENOENT ? TD_ENOTFOUND : TD_EIO,
                            "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return td_error_set(err, TD_EIO, "%s is not a regular file", path);
    }
    /* mmap of an empty file fails, so short files are refused here. */
    if (sb.st_size < 8) {
        close(fd);
        return td_error_set(err, TD_EFORMAT,
                            "%s: file is %lld bytes, too short for the "
                            "8-byte header length",
                            path, (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return td_error_set(err, TD_ETOOBIG, "%s: too large to map", path);
    }
    map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return td_error_set(err, TD_EIO, "cannot map %s: %s", path,
                            strerror(errno));
    st = td_st_parse(f, map, (size_t)sb.st_size, err);
    if (st != TD_OK) {
        munmap(map, (size_t)sb.st_size);
        td_error_prefix(err, "%s", path);
        return st;
    }
    f->mapped = 1;
    return TD_OK;
}

void td_st_close(td_st_file *f)
{
    if (!f)
        return;
    if (f->mapped && f->bytes)
        munmap((void *)f->bytes, f->len);
    free(f->strings);
    free(f->tensors);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

const td_st_tensor *td_st_find(const td_st_file *f, const char *name)
{
    size_t i;
    /* Linear: models have tens to hundreds of tensors, looked up once at
     * load time. */
    for (i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *td_st_meta_get(const td_st_file *f, const char *key)
{
    size_t i;
    for (i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

td_status td_st_expect(const td_st_file *f, const char *name, td_dtype dt,
                       int ndim, const int64_t *shape,
                       const td_st_tensor **out, td_error *err)
{
    const td_st_tensor *t = td_st_find(f, name);
    char want[SHAPE_STR], got[SHAPE_STR];
    int i, ok;
    if (out)
        *out = NULL;
    if (!t) {
        const char *dn = td_dtype_name(dt);
        if (ndim < 0)
            return td_error_set(err, TD_EFORMAT,
                                "missing tensor " QNAME " (expected %s)",
                                name, dn ? dn : "?");
        shape_str(want, sizeof want,
                  ndim > TD_ST_MAX_DIMS ? TD_ST_MAX_DIMS : ndim, shape);
        return td_error_set(err, TD_EFORMAT,
                            "missing tensor " QNAME " (expected %s %s)",
                            name, dn ? dn : "?", want);
    }
    ok = t->dtype == dt;
    if (ndim >= 0) {
        ok = ok && t->ndim == ndim;
        for (i = 0; ok && i < ndim; i++)
            ok = t->shape[i] == shape[i];
    }
    if (!ok) {
        const char *dn = td_dtype_name(dt);
        if (ndim >= 0)
            shape_str(want, sizeof want,
                      ndim > TD_ST_MAX_DIMS ? TD_ST_MAX_DIMS : ndim, shape);
        return td_error_set(err, TD_EFORMAT,
                            "tensor " QNAME ": expected %s%s%s, found %s %s",
                            name, dn ? dn : "?", ndim >= 0 ? " " : "",
                            ndim >= 0 ? want : "", td_dtype_name(t->dtype),
                            shape_str(got, sizeof got, t->ndim, t->shape));
    }
    if (out)
        *out = t;
    return TD_OK;
}

td_status td_st_expect_meta(const td_st_file *f, const char *key,
                            const char *value, td_error *err)
{
    const char *got = td_st_meta_get(f, key);
    if (!got)
        return td_error_set(err, TD_EFORMAT, "missing metadata " QNAME, key);
    if (value && strcmp(got, value) != 0)
        return td_error_set(err, TD_EFORMAT,
                            "metadata " QNAME ": expected " QNAME
                            ", found " QNAME,
                            key, value, got);
    return TD_OK;
}

int td_st_tensor_aligned(const td_st_tensor *t, size_t align)
{
    return align <= 1 || (uintptr_t)t->data % align == 0;
}

/* ------------------------------------------------------------- writer */

typedef struct wr_tensor {
    char *name;
    td_dtype dtype;
    int ndim;
    int64_t shape[TD_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wr_tensor;

struct td_st_writer {
    wr_tensor *t;
    size_t n, cap;
    char **mkey, **mval;
    size_t n_meta, meta_cap;
    size_t total; /* data bytes so far */
};

td_st_writer *td_st_writer_new(void)
{
    return calloc(1, sizeof(td_st_writer));
}

void td_st_writer_free(td_st_writer *w)
{
    size_t i;
    if (!w)
        return;
    for (i = 0; i < w->n; i++)
        free(w->t[i].name);
    for (i = 0; i < w->n_meta; i++) {
        free(w->mkey[i]);
        free(w->mval[i]);
    }
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w);
}

/* jansson refuses strings that are not UTF-8; the header must be. */
static int is_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

td_status td_st_writer_add(td_st_writer *w, const char *name, td_dtype dt,
                           int ndim, const int64_t *shape, const void *data,
                           td_error *err)
{
    wr_tensor *t;
    size_t numel, nbytes, total, i;
    int d;
    if (!name || !is_utf8(name))
        return td_error_set(err, TD_EINVAL,
                            "tensor name is missing or not UTF-8");
    if (strcmp(name, "__metadata__") == 0)
        return td_error_set(err, TD_EINVAL,
                            "\"__metadata__\" cannot name a tensor");
    if ((unsigned)dt >= TD_DT_COUNT)
        return td_error_set(err, TD_EINVAL, "tensor " QNAME ": invalid dtype",
                            name);
    if (ndim < 0 || ndim > TD_ST_MAX_DIMS || (ndim > 0 && !shape))
        return td_error_set(err, TD_EINVAL,
                            "tensor " QNAME ": %d dimensions, 0..%d allowed",
                            name, ndim, TD_ST_MAX_DIMS);
    for (d = 0; d < ndim; d++)
        if (shape[d] < 0)
            return td_error_set(err, TD_EINVAL,
                                "tensor " QNAME ": negative shape[%d]", name,
                                d);
    if (shape_bytes(dt, ndim, shape, &numel, &nbytes) != 0 ||
        __builtin_add_overflow(w->total, nbytes, &total) ||
        total > (size_t)INT64_MAX)
        return td_error_set(err, TD_EINVAL, "tensor " QNAME ": too large",
                            name);
    if (nbytes && !data)
        return td_error_set(err, TD_EINVAL, "tensor " QNAME ": no data",
                            name);
    for (i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return td_error_set(err, TD_EINVAL,
                                "tensor " QNAME " added twice", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        wr_tensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt)
            return td_error_set(err, TD_ENOMEM, "out of memory");
        w->t = nt;
        w->cap = cap;
    }
    t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name)
        return td_error_set(err, TD_ENOMEM, "out of memory");
    t->dtype = dt;
    t->ndim = ndim;
    for (d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->data = data;
    t->nbytes = nbytes;
    w->total = total;
    w->n++;
    return TD_OK;
}

td_status td_st_writer_meta(td_st_writer *w, const char *key,
                            const char *value, td_error *err)
{
    size_t i;
    char *k, *v;
    if (!key || !value || !is_utf8(key) || !is_utf8(value))
        return td_error_set(err, TD_EINVAL,
                            "metadata key or value missing or not UTF-8");
    for (i = 0; i < w->n_meta; i++)
        if (strcmp(w->mkey[i], key) == 0)
            return td_error_set(err, TD_EINVAL,
                                "metadata " QNAME " set twice", key);
    if (w->n_meta == w->meta_cap) {
        size_t cap = w->meta_cap ? 2 * w->meta_cap : 8;
        char **nk = realloc(w->mkey, cap * sizeof *nk);
        char **nv;
        if (!nk)
            return td_error_set(err, TD_ENOMEM, "out of memory");
        w->mkey = nk;
        nv = realloc(w->mval, cap * sizeof *nv);
        if (!nv)
            return td_error_set(err, TD_ENOMEM, "out of memory");
        w->mval = nv;
        w->meta_cap = cap;
    }
    k = strdup(key);
    v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    w->mkey[w->n_meta] = k;
    w->mval[w->n_meta] = v;
    w->n_meta++;
    return TD_OK;
}

/* Data order of the writer: the format forbids gaps, so alignment can only
 * come from order. With the data area at a multiple of TD_ST_ALIGN,
 * tensors whose size is a multiple of TD_ST_ALIGN go first (each then
 * starts at a multiple of it), then the rest by decreasing element size
 * (element sizes are powers of two, so each starts at a multiple of its
 * own element size); ties by name for reproducible files. */
static int wr_order_cmp(const void *a, const void *b)
{
    const wr_tensor *x = *(const wr_tensor *const *)a;
    const wr_tensor *y = *(const wr_tensor *const *)b;
    int xr = x->nbytes % TD_ST_ALIGN != 0, yr = y->nbytes % TD_ST_ALIGN != 0;
    size_t xs = td_dtype_size(x->dtype), ys = td_dtype_size(y->dtype);
    if (xr != yr)
        return xr - yr;
    if (xr && xs != ys)
        return xs > ys ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Build the padded header and the data order. *hdr (malloc'd, *hlen bytes
 * incl. padding) and *order (w->n pointers) are the caller's to free. */
static td_status wr_header(td_st_writer *w, char **hdr, size_t *hlen,
                           wr_tensor ***order, td_error *err)
{
    json_t *root = json_object(), *m = NULL;
    wr_tensor **ord = calloc(w->n ? w->n : 1, sizeof *ord);
    char *txt = NULL, *padded;
    size_t i, off = 0, raw, pad;
    int d, bad = !root || !ord;

    *hdr = NULL;
    *order = NULL;
    for (i = 0; !bad && i < w->n; i++)
        ord[i] = &w->t[i];
    if (!bad)
        qsort(ord, w->n, sizeof *ord, wr_order_cmp);
    if (!bad && w->n_meta) {
        /* First, as the reference writer does; jansson keeps insertion
         * order, so the header lists tensors in data order too. */
        m = json_object();
        bad = !m || json_object_set_new(root, "__metadata__", m) != 0;
        for (i = 0; !bad && i < w->n_meta; i++)
            bad = json_object_set_new(m, w->mkey[i],
                                      json_string(w->mval[i])) != 0;
    }
    for (i = 0; !bad && i < w->n; i++) {
        wr_tensor *t = ord[i];
        json_t *e = json_object(), *sh = json_array();
        bad = !e || !sh;
        for (d = 0; !bad && d < t->ndim; d++)
            bad = json_array_append_new(sh, json_integer(t->shape[d])) != 0;
        /* Every call runs even after a failure: set_new consumes its
         * value either way, so nothing leaks on out-of-memory. */
        if (!bad) {
            int rc = json_object_set_new(
                e, "dtype", json_string(td_dtype_name(t->dtype)));
            rc |= json_object_set_new(e, "shape", sh);
            rc |= json_object_set_new(
                e, "data_offsets",
                json_pack("[II]", (json_int_t)off,
                          (json_int_t)(off + t->nbytes)));
            bad = rc != 0;
        } else
            json_decref(sh);
        if (!bad)
            bad = json_object_set_new(root, t->name, e) != 0;
        else
            json_decref(e);
        off += t->nbytes;
    }
    if (!bad)
        txt = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (bad || !txt) {
        free(txt);
        free(ord);
        return td_error_set(err, TD_ENOMEM, "out of memory for the header");
    }
    /* Spaces are JSON whitespace, so every reader skips them. */
    raw = strlen(txt);
    pad = (TD_ST_ALIGN - (8 + raw) % TD_ST_ALIGN) % TD_ST_ALIGN;
    if (raw + pad > TD_ST_MAX_HEADER) {
        free(txt);
        free(ord);
        return td_error_set(err, TD_ETOOBIG,
                            "header of %zu bytes exceeds the limit of %u",
                            raw + pad, TD_ST_MAX_HEADER);
    }
    padded = realloc(txt, raw + pad + 1);
    if (!padded) {
        free(txt);
        free(ord);
        return td_error_set(err, TD_ENOMEM, "out of memory for the header");
    }
    memset(padded + raw, ' ', pad);
    padded[raw + pad] = '\0';
    *hdr = padded;
    *hlen = raw + pad;
    *order = ord;
    return TD_OK;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    int k;
    for (k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

td_status td_st_writer_bytes(td_st_writer *w, unsigned char **out,
                             size_t *len, td_error *err)
{
    char *hdr;
    size_t hlen, total, off, i;
    wr_tensor **ord;
    unsigned char *buf;
    td_status st = wr_header(w, &hdr, &hlen, &ord, err);
    *out = NULL;
    *len = 0;
    if (st != TD_OK)
        return st;
    total = 8 + hlen + w->total; /* hlen <= 100 MB, w->total <= INT64_MAX */
    buf = malloc(total ? total : 1);
    if (!buf) {
        free(hdr);
        free(ord);
        return td_error_set(err, TD_ENOMEM, "out of memory for %zu bytes",
                            total);
    }
    put_le64(buf, hlen);
    memcpy(buf + 8, hdr, hlen);
    off = 8 + hlen;
    for (i = 0; i < w->n; i++) {
        if (ord[i]->nbytes)
            memcpy(buf + off, ord[i]->data, ord[i]->nbytes);
        off += ord[i]->nbytes;
    }
    free(hdr);
    free(ord);
    *out = buf;
    *len = total;
    return TD_OK;
}

td_status td_st_writer_write(td_st_writer *w, const char *path,
                             td_error *err)
{
    char *hdr;
    size_t hlen, i;
    wr_tensor **ord;
    unsigned char lenbuf[8];
    td_atomic_file af;
    int ok;
    td_status st = wr_header(w, &hdr, &hlen, &ord, err);
    if (st != TD_OK)
        return st;
    st = td_atomic_open(&af, path, err);
    if (st != TD_OK) {
        free(hdr);
        free(ord);
        return st;
    }
    put_le64(lenbuf, hlen);
    ok = fwrite(lenbuf, 1, 8, af.fp) == 8 &&
         fwrite(hdr, 1, hlen, af.fp) == hlen;
    for (i = 0; ok && i < w->n; i++)
        ok = ord[i]->nbytes == 0 ||
             fwrite(ord[i]->data, 1, ord[i]->nbytes, af.fp) == ord[i]->nbytes;
    free(hdr);
    free(ord);
    if (!ok) {
        int saved = errno;
        td_atomic_abort(&af);
        return td_error_set(err, TD_EIO, "writing %s failed: %s", path,
                            strerror(saved));
    }
    return td_atomic_commit(&af, err);
}
