/* td_auth: bearer tokens for the endpoints that change state.
 *
 * Tokens come from a file (--tokens FILE): one per line, blank lines and
 * lines starting with '#' ignored, surrounding spaces trimmed. The file is
 * read at start and again on SIGHUP; a file that cannot be read on reload
 * keeps the previous tokens. A request proves itself with
 * "Authorization: Bearer TOKEN"; the comparison takes the same time
 * whichever token (if any) matches and however much of one matches.
 * Tokens are never logged.
 *
 * Thread: loop thread only. */
#ifndef TD_AUTH_H
#define TD_AUTH_H

#include "td_err.h"

typedef struct td_auth {
    char **tokens;    /* owned */
    int n;
    int enabled;      /* a token file was given */
} td_auth;

/* Read the token file (replacing the current tokens only on success). An
 * empty file is an error: it would lock every client out. */
td_status td_auth_load(td_auth *a, const char *path, td_error *err);
/* 200 when the header carries a known token, 401 when it carries none,
 * 403 when it carries a wrong one. Always 200 when auth is disabled. */
int td_auth_check(const td_auth *a, const char *authorization);
void td_auth_free(td_auth *a);

#endif
