/* td_auth: token file parsing and constant-time comparison. */
#include "config.h"

#include "td_auth.h"

#include <stdlib.h>
#include <string.h>

#include "td_file.h"

#define TOKEN_MAX 512

static void free_tokens(char **tokens, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        /* Do not leave secrets in freed memory. */
        volatile char *p = tokens[i];
        size_t k, len = strlen(tokens[i]);
        for (k = 0; k < len; k++)
            p[k] = 0;
        free(tokens[i]);
    }
    free(tokens);
}

td_status td_auth_load(td_auth *a, const char *path, td_error *err)
{
    char *text, *line, *save = NULL;
    size_t len;
    char **tokens = NULL;
    int n = 0, cap = 0, lineno = 0;
    td_status st = td_file_read(path, 1 << 20, &text, &len, err);
    if (st != TD_OK)
        return st;
    for (line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *end;
        lineno++;
        while (*line == ' ' || *line == '\t')
            line++;
        end = line + strlen(line);
        while (end > line && (end[-1] == ' ' || end[-1] == '\t' ||
                              end[-1] == '\r'))
            *--end = '\0';
        if (!*line || *line == '#')
            continue;
        if (end - line > TOKEN_MAX || strchr(line, ' ') ||
            strchr(line, '\t')) {
            st = td_error_set(err, TD_EINVAL,
                              "%s: a token must be one word of at most %d "
                              "characters (a line holds one token)",
                              path, TOKEN_MAX);
            break;
        }
        if (n == cap) {
            char **grown;
            cap = cap ? cap * 2 : 8;
            grown = realloc(tokens, (size_t)cap * sizeof *grown);
            if (!grown) {
                st = td_error_set(err, TD_ENOMEM, "out of memory");
                break;
            }
            tokens = grown;
        }
        tokens[n] = strdup(line);
        if (!tokens[n]) {
            st = td_error_set(err, TD_ENOMEM, "out of memory");
            break;
        }
        n++;
    }
    memset(text, 0, len);
    free(text);
    if (st == TD_OK && n == 0)
        st = td_error_set(err, TD_EINVAL,
                          "%s holds no token: every state-changing request "
                          "would be refused",
                          path);
    if (st != TD_OK) {
        free_tokens(tokens, n);
        return st;
    }
    free_tokens(a->tokens, a->n);
    a->tokens = tokens;
    a->n = n;
    a->enabled = 1;
    return TD_OK;
}

/* 1 when equal; time depends only on the lengths' maximum. */
static int equal_ct(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t i, n = alen > blen ? alen : blen;
    unsigned diff = (unsigned)(alen ^ blen);
    for (i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= (unsigned)(x ^ y);
    }
    return diff == 0;
}

int td_auth_check(const td_auth *a, const char *authorization)
{
    const char *tok;
    size_t len;
    int i, ok = 0;
    if (!a->enabled)
        return 200;
    if (!authorization || strncmp(authorization, "Bearer ", 7) != 0)
        return 401;
    tok = authorization + 7;
    while (*tok == ' ')
        tok++;
    len = strlen(tok);
    if (len == 0)
        return 401;
    if (len > TOKEN_MAX)
        len = TOKEN_MAX + 1;
    /* Compare with every token, without stopping at a match. */
    for (i = 0; i < a->n; i++)
        ok |= equal_ct(tok, len, a->tokens[i], strlen(a->tokens[i]));
    return ok ? 200 : 403;
}

void td_auth_free(td_auth *a)
{
    free_tokens(a->tokens, a->n);
    a->tokens = NULL;
    a->n = 0;
    a->enabled = 0;
}
