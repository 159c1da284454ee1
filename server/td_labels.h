/* td_labels: class labels stored in file metadata as a JSON array string.
 *
 * Shared by every classifier kind. Thread: any. */
#ifndef TD_LABELS_H
#define TD_LABELS_H

#include "td_err.h"

typedef struct td_labels {
    char **names; /* owned, n entries */
    int n;
} td_labels;

/* Parse `json` (may be NULL: no labels). If n_expected > 0 the count must
 * match. The error names the metadata key. */
td_status td_labels_parse(td_labels *l, const char *json, int n_expected,
                          td_error *err);
void td_labels_free(td_labels *l);

#endif
