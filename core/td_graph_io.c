/* td_graph_io: DIMACS, edge-list and JSON graph readers, gzip or not. */
#include "config.h"

#include "td_graph_io.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "td_file.h"

#define DEFAULT_MAX_BYTES ((size_t)4 << 30)

const char *td_graph_format_name(td_graph_format f)
{
    switch (f) {
    case TD_GFMT_AUTO: return "auto";
    case TD_GFMT_DIMACS: return "dimacs";
    case TD_GFMT_EDGELIST: return "edgelist";
    case TD_GFMT_JSON: return "json";
    }
    return NULL;
}

int td_graph_format_parse(const char *s)
{
    for (int f = TD_GFMT_AUTO; f <= TD_GFMT_JSON; f++)
        if (strcmp(s, td_graph_format_name((td_graph_format)f)) == 0)
            return f;
    if (strcmp(s, "gr") == 0)
        return TD_GFMT_DIMACS;
    return -1;
}

td_status td_gunzip(const void *buf, size_t len, size_t max_bytes, char **out,
                    size_t *out_len, td_error *err)
{
    z_stream zs;
    size_t cap = len * 4 + 4096, used = 0;
    char *o;
    int rc;
    *out = NULL;
    *out_len = 0;
    if (cap > max_bytes + 1)
        cap = max_bytes + 1;
    o = malloc(cap);
    if (!o)
        return td_error_set(err, TD_ENOMEM, "gzip: out of memory");
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 32) != Z_OK) { /* +32: gzip/zlib header */
        free(o);
        return td_error_set(err, TD_EINTERNAL, "gzip: inflateInit failed");
    }
    zs.next_in = (Bytef *)(uintptr_t)buf;
    for (;;) {
        if (used + 1 >= cap) {
            if (cap > max_bytes) {
                inflateEnd(&zs);
                free(o);
                return td_error_set(err, TD_ETOOBIG, "gzip: decompressed "
                                    "data exceeds the limit of %zu bytes",
                                    max_bytes);
            }
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *n2 = realloc(o, ncap);
            if (!n2) {
                inflateEnd(&zs);
                free(o);
                return td_error_set(err, TD_ENOMEM, "gzip: out of memory");
            }
            o = n2;
            cap = ncap;
        }
        /* zlib counts in uInt; feed at most 1 GiB per call. */
        size_t in_left = len - (size_t)((const unsigned char *)zs.next_in -
                                        (const unsigned char *)buf);
        zs.avail_in = (uInt)(in_left > (1u << 30) ? (1u << 30) : in_left);
        size_t room = cap - 1 - used;
        zs.avail_out = (uInt)(room > (1u << 30) ? (1u << 30) : room);
        zs.next_out = (Bytef *)o + used;
        rc = inflate(&zs, Z_NO_FLUSH);
        used = (size_t)((char *)zs.next_out - o);
        if (rc == Z_STREAM_END) {
            /* Concatenated gzip members are legal; continue if more input. */
            in_left = len - (size_t)((const unsigned char *)zs.next_in -
                                     (const unsigned char *)buf);
            if (in_left == 0)
                break;
            if (inflateReset(&zs) != Z_OK)
                break;
            continue;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            inflateEnd(&zs);
            free(o);
            return td_error_set(err, TD_EFORMAT, "gzip: corrupt data (%s)",
                                zs.msg ? zs.msg : "inflate error");
        }
        if (rc == Z_BUF_ERROR && zs.avail_in == 0 && used + 1 < cap) {
            inflateEnd(&zs);
            free(o);
            return td_error_set(err, TD_EFORMAT, "gzip: truncated data");
        }
    }
    inflateEnd(&zs);
    o[used] = '\0';
    *out = o;
    *out_len = used;
    return TD_OK;
}

/* ---- line-oriented parsing on a private, NUL-split copy ---- */

typedef struct lexer {
    char *p, *end;
    size_t line_no;
    const char *name;
} lexer;

/* Next line as a NUL-terminated string, or NULL at the end. */
static char *next_line(lexer *lx)
{
    if (lx->p >= lx->end)
        return NULL;
    char *s = lx->p, *nl = memchr(s, '\n', (size_t)(lx->end - s));
    if (nl) {
        *nl = '\0';
        lx->p = nl + 1;
    } else {
        lx->p = lx->end;
    }
    lx->line_no++;
    return s;
}

static char *skip_ws(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r')
        s++;
    return s;
}

/* An unsigned decimal integer token; 0 on failure. */
static int take_u64(char **s, uint64_t *out)
{
    char *p = skip_ws(*s), *e;
    if (!isdigit((unsigned char)*p))
        return 0;
    errno = 0;
    unsigned long long v = strtoull(p, &e, 10);
    if (errno || (*e && *e != ' ' && *e != '\t' && *e != '\r'))
        return 0;
    *out = v;
    *s = e;
    return 1;
}

/* A real-number token (sign, exponent, nan, inf accepted here, judged by
 * the caller so the message can say "non-finite"); 0 on failure. */
static int take_double(char **s, double *out)
{
    char *p = skip_ws(*s), *e;
    if (!*p)
        return 0;
    errno = 0;
    double v = strtod(p, &e);
    if (e == p || (*e && *e != ' ' && *e != '\t' && *e != '\r'))
        return 0;
    *out = v;
    *s = e;
    return 1;
}

static int at_eol(char *s)
{
    return *skip_ws(s) == '\0';
}

static td_status check_weight(const lexer *lx, double w, td_error *err)
{
    if (!isfinite(w))
        return td_error_set(err, TD_EFORMAT, "%s line %zu: weight is not "
                            "finite", lx->name, lx->line_no);
    if (w < 0)
        return td_error_set(err, TD_EFORMAT, "%s line %zu: negative weight "
                            "%g", lx->name, lx->line_no, w);
    return TD_OK;
}

static td_status parse_dimacs(lexer *lx, uint64_t max_nodes, uint64_t max_arcs,
                              td_edgelist *out, td_error *err)
{
    uint64_t n = 0, m = 0, seen = 0;
    size_t p_line = 0;
    char *s;
    td_status st;
    while ((s = next_line(lx)) != NULL) {
        char *t = skip_ws(s);
        if (*t == '\0' || *t == 'c')
            continue;
        if (*t == 'p') {
            if (p_line)
                return td_error_set(err, TD_EFORMAT, "%s line %zu: second "
                                    "'p' line (first on line %zu)", lx->name,
                                    lx->line_no, p_line);
            t = skip_ws(t + 1);
            if (strncmp(t, "sp", 2) != 0 || !take_u64((t += 2, &t), &n) ||
                !take_u64(&t, &m) || !at_eol(t))
                return td_error_set(err, TD_EFORMAT, "%s line %zu: expected "
                                    "'p sp NODES ARCS'", lx->name,
                                    lx->line_no);
            if (n > max_nodes)
                return td_error_set(err, TD_ETOOBIG, "%s line %zu: %llu "
                                    "vertices exceed the limit of %llu",
                                    lx->name, lx->line_no,
                                    (unsigned long long)n,
                                    (unsigned long long)max_nodes);
            if (max_arcs && m > max_arcs)
                return td_error_set(err, TD_ETOOBIG, "%s line %zu: %llu arcs "
                                    "exceed the limit of %llu", lx->name,
                                    lx->line_no, (unsigned long long)m,
                                    (unsigned long long)max_arcs);
            p_line = lx->line_no;
            out->n = (uint32_t)n;
            continue;
        }
        if (*t == 'a') {
            uint64_t u, v;
            double w;
            if (!p_line)
                return td_error_set(err, TD_EFORMAT, "%s line %zu: arc "
                                    "before the 'p sp' line", lx->name,
                                    lx->line_no);
            t++;
            if (!take_u64(&t, &u) || !take_u64(&t, &v) ||
                !take_double(&t, &w) || !at_eol(t))
                return td_error_set(err, TD_EFORMAT, "%s line %zu: expected "
                                    "'a TAIL HEAD WEIGHT'", lx->name,
                                    lx->line_no);
            if (u < 1 || u > n || v < 1 || v > n)
                return td_error_set(err, TD_EFORMAT, "%s line %zu: vertex id "
                                    "%llu out of range 1..%llu", lx->name,
                                    lx->line_no,
                                    (unsigned long long)(u < 1 || u > n ? u
                                                                        : v),
                                    (unsigned long long)n);
            if ((st = check_weight(lx, w, err)) != TD_OK)
                return st;
            if (++seen > m)
                return td_error_set(err, TD_EFORMAT, "%s line %zu: more arcs "
                                    "than the %llu declared on line %zu",
                                    lx->name, lx->line_no,
                                    (unsigned long long)m, p_line);
            if ((st = td_edgelist_push(out, (uint32_t)(u - 1),
                                       (uint32_t)(v - 1), w, err)) != TD_OK)
                return st;
            continue;
        }
        return td_error_set(err, TD_EFORMAT, "%s line %zu: unexpected line "
                            "(DIMACS lines start with c, p or a)", lx->name,
                            lx->line_no);
    }
    if (!p_line)
        return td_error_set(err, TD_EFORMAT, "%s: no 'p sp NODES ARCS' line",
                            lx->name);
    if (seen != m)
        return td_error_set(err, TD_EFORMAT, "%s: %llu arcs read but line %zu "
                            "declares %llu", lx->name,
                            (unsigned long long)seen, p_line,
                            (unsigned long long)m);
    return TD_OK;
}

static td_status parse_edgelist(lexer *lx, uint64_t max_nodes,
                                uint64_t max_arcs, td_edgelist *out,
                                td_error *err)
{
    uint64_t maxid = 0;
    int any = 0;
    char *s;
    td_status st;
    while ((s = next_line(lx)) != NULL) {
        char *t = skip_ws(s);
        uint64_t u, v;
        double w = 1;
        if (*t == '\0' || *t == '#' || *t == '%')
            continue;
        if (!take_u64(&t, &u) || !take_u64(&t, &v))
            return td_error_set(err, TD_EFORMAT, "%s line %zu: expected "
                                "'U V [W]' with 0-based vertex ids", lx->name,
                                lx->line_no);
        if (!at_eol(t) && (!take_double(&t, &w) || !at_eol(t)))
            return td_error_set(err, TD_EFORMAT, "%s line %zu: malformed "
                                "weight", lx->name, lx->line_no);
        if ((st = check_weight(lx, w, err)) != TD_OK)
            return st;
        if (u >= max_nodes || v >= max_nodes)
            return td_error_set(err, TD_ETOOBIG, "%s line %zu: vertex id "
                                "%llu exceeds the limit of %llu vertices",
                                lx->name, lx->line_no,
                                (unsigned long long)(u > v ? u : v),
                                (unsigned long long)max_nodes);
        if (max_arcs && out->m >= max_arcs)
            return td_error_set(err, TD_ETOOBIG, "%s line %zu: more than %llu "
                                "edges", lx->name, lx->line_no,
                                (unsigned long long)max_arcs);
        if (u > maxid)
            maxid = u;
        if (v > maxid)
            maxid = v;
        any = 1;
        if ((st = td_edgelist_push(out, (uint32_t)u, (uint32_t)v, w, err)) !=
            TD_OK)
            return st;
    }
    out->n = any ? (uint32_t)(maxid + 1) : 0;
    return TD_OK;
}

static td_status parse_json(const char *buf, size_t len, const char *name,
                            uint64_t max_nodes, uint64_t max_arcs,
                            td_edgelist *out, td_error *err)
{
    json_error_t je;
    json_t *root = json_loadb(buf, len, 0, &je), *nodes, *edges;
    td_status st = TD_OK;
    if (!root)
        return td_error_set(err, TD_EFORMAT, "%s line %d: invalid JSON: %s",
                            name, je.line, je.text);
    nodes = json_object_get(root, "nodes");
    edges = json_object_get(root, "edges");
    if (!json_is_object(root) || !json_is_integer(nodes) ||
        json_integer_value(nodes) < 0) {
        st = td_error_set(err, TD_EFORMAT, "%s: expected an object with an "
                          "integer \"nodes\" >= 0", name);
        goto done;
    }
    if (!json_is_array(edges)) {
        st = td_error_set(err, TD_EFORMAT, "%s: \"edges\" must be an array "
                          "of [u, v, w]", name);
        goto done;
    }
    uint64_t n = (uint64_t)json_integer_value(nodes);
    if (n > max_nodes) {
        st = td_error_set(err, TD_ETOOBIG, "%s: %llu vertices exceed the "
                          "limit of %llu", name, (unsigned long long)n,
                          (unsigned long long)max_nodes);
        goto done;
    }
    if (max_arcs && json_array_size(edges) > max_arcs) {
        st = td_error_set(err, TD_ETOOBIG, "%s: %zu edges exceed the limit "
                          "of %llu", name, json_array_size(edges),
                          (unsigned long long)max_arcs);
        goto done;
    }
    out->n = (uint32_t)n;
    for (size_t i = 0; i < json_array_size(edges); i++) {
        json_t *e = json_array_get(edges, i);
        size_t k = json_array_size(e);
        double w = 1;
        if (!json_is_array(e) || (k != 2 && k != 3) ||
            !json_is_integer(json_array_get(e, 0)) ||
            !json_is_integer(json_array_get(e, 1)) ||
            (k == 3 && !json_is_number(json_array_get(e, 2)))) {
            st = td_error_set(err, TD_EFORMAT, "%s: edges[%zu] must be [u, v] "
                              "or [u, v, w] with integer ids", name, i);
            goto done;
        }
        json_int_t u = json_integer_value(json_array_get(e, 0));
        json_int_t v = json_integer_value(json_array_get(e, 1));
        if (k == 3)
            w = json_number_value(json_array_get(e, 2));
        if (u < 0 || v < 0 || (uint64_t)u >= n || (uint64_t)v >= n) {
            st = td_error_set(err, TD_EFORMAT, "%s: edges[%zu]: vertex id "
                              "%lld out of range 0..%lld", name, i,
                              (long long)(u < 0 || (uint64_t)u >= n ? u : v),
                              (long long)n - 1);
            goto done;
        }
        if (!isfinite(w) || w < 0) {
            st = td_error_set(err, TD_EFORMAT, "%s: edges[%zu]: weight %g is "
                              "not a finite number >= 0", name, i, w);
            goto done;
        }
        if ((st = td_edgelist_push(out, (uint32_t)u, (uint32_t)v, w, err)) !=
            TD_OK)
            goto done;
    }
done:
    json_decref(root);
    return st;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static td_graph_format guess_format(const char *name, const char *text,
                                    size_t len)
{
    if (name) {
        char base[512];
        snprintf(base, sizeof base, "%s", name);
        if (ends_with(base, ".gz"))
            base[strlen(base) - 3] = '\0';
        if (ends_with(base, ".gr"))
            return TD_GFMT_DIMACS;
        if (ends_with(base, ".json"))
            return TD_GFMT_JSON;
        if (ends_with(base, ".txt") || ends_with(base, ".el") ||
            ends_with(base, ".edges"))
            return TD_GFMT_EDGELIST;
    }
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i]))
        i++;
    if (i < len && text[i] == '{')
        return TD_GFMT_JSON;
    if (i + 1 < len && (text[i] == 'c' || text[i] == 'p') &&
        (text[i + 1] == ' ' || text[i + 1] == '\t' || text[i + 1] == '\n' ||
         text[i + 1] == '\r'))
        return TD_GFMT_DIMACS;
    return TD_GFMT_EDGELIST;
}

td_status td_graph_parse(const void *buf, size_t len, const char *name,
                         const td_graph_read_opts *opts, td_edgelist *out,
                         td_error *err)
{
    td_graph_read_opts o = {0};
    char *text = NULL;
    size_t tlen = 0;
    td_status st;
    if (opts)
        o = *opts;
    if (!o.max_nodes || o.max_nodes > TD_GRAPH_MAX_NODES)
        o.max_nodes = TD_GRAPH_MAX_NODES;
    if (!o.max_bytes)
        o.max_bytes = DEFAULT_MAX_BYTES;
    if (!name)
        name = "graph";
    td_edgelist_init(out);
    if (len >= 2 && ((const unsigned char *)buf)[0] == 0x1f &&
        ((const unsigned char *)buf)[1] == 0x8b) {
        st = td_gunzip(buf, len, o.max_bytes, &text, &tlen, err);
        if (st != TD_OK) {
            td_error_prefix(err, "%s", name);
            return st;
        }
    } else {
        if (len > o.max_bytes)
            return td_error_set(err, TD_ETOOBIG, "%s: %zu bytes exceed the "
                                "limit of %zu", name, len, o.max_bytes);
        /* A private copy: the lexer splits lines in place. */
        text = malloc(len + 1);
        if (!text)
            return td_error_set(err, TD_ENOMEM, "%s: out of memory", name);
        memcpy(text, buf, len);
        text[len] = '\0';
        tlen = len;
    }
    td_graph_format f = o.format ? o.format : guess_format(name, text, tlen);
    lexer lx = {text, text + tlen, 0, name};
    switch (f) {
    case TD_GFMT_DIMACS:
        st = parse_dimacs(&lx, o.max_nodes, o.max_arcs, out, err);
        out->id_base = 1;
        break;
    case TD_GFMT_JSON:
        st = parse_json(text, tlen, name, o.max_nodes, o.max_arcs, out, err);
        break;
    default:
        st = parse_edgelist(&lx, o.max_nodes, o.max_arcs, out, err);
        break;
    }
    free(text);
    if (st != TD_OK)
        td_edgelist_free(out);
    return st;
}

td_status td_graph_read_file(const char *path, const td_graph_read_opts *opts,
                             td_edgelist *out, td_error *err)
{
    char *buf;
    size_t len;
    size_t lim = opts && opts->max_bytes ? opts->max_bytes : DEFAULT_MAX_BYTES;
    td_edgelist_init(out);
    td_status st = td_file_read(path, lim, &buf, &len, err);
    if (st != TD_OK)
        return st;
    st = td_graph_parse(buf, len, path, opts, out, err);
    free(buf);
    return st;
}

td_status td_graph_read_coords(const char *path, uint32_t n, double **x,
                               double **y, td_error *err)
{
    char *raw, *text;
    size_t len, tlen;
    td_status st;
    *x = *y = NULL;
    if ((st = td_file_read(path, DEFAULT_MAX_BYTES, &raw, &len, err)) != TD_OK)
        return st;
    if (len >= 2 && (unsigned char)raw[0] == 0x1f &&
        (unsigned char)raw[1] == 0x8b) {
        st = td_gunzip(raw, len, DEFAULT_MAX_BYTES, &text, &tlen, err);
        free(raw);
        if (st != TD_OK)
            return st;
    } else {
        text = raw;
        tlen = len;
    }
    double *xs = malloc(((size_t)n + 1) * sizeof *xs);
    double *ys = malloc(((size_t)n + 1) * sizeof *ys);
    if (!xs || !ys) {
        free(xs);
        free(ys);
        free(text);
        return td_error_set(err, TD_ENOMEM, "%s: out of memory", path);
    }
    for (uint32_t i = 0; i < n; i++)
        xs[i] = ys[i] = NAN;
    lexer lx = {text, text + tlen, 0, path};
    char *s;
    st = TD_OK;
    while ((s = next_line(&lx)) != NULL) {
        char *t = skip_ws(s);
        uint64_t id;
        double a, b;
        if (*t == '\0' || *t == 'c' || *t == 'p')
            continue;
        if (*t != 'v' || (t++, !take_u64(&t, &id)) || !take_double(&t, &a) ||
            !take_double(&t, &b) || !at_eol(t)) {
            st = td_error_set(err, TD_EFORMAT, "%s line %zu: expected "
                              "'v ID X Y'", path, lx.line_no);
            break;
        }
        if (id < 1 || id > n) {
            st = td_error_set(err, TD_EFORMAT, "%s line %zu: vertex id %llu "
                              "out of range 1..%u", path, lx.line_no,
                              (unsigned long long)id, (unsigned)n);
            break;
        }
        xs[id - 1] = a;
        ys[id - 1] = b;
    }
    free(text);
    if (st != TD_OK) {
        free(xs);
        free(ys);
        return st;
    }
    *x = xs;
    *y = ys;
    return TD_OK;
}
