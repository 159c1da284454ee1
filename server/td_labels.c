/* td_labels: parse the "labels" metadata entry. */
#include "config.h"

#include "td_labels.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

td_status td_labels_parse(td_labels *l, const char *json, int n_expected,
                          td_error *err)
{
    json_t *arr;
    json_error_t jerr;
    size_t i;
    l->names = NULL;
    l->n = 0;
    if (!json)
        return TD_OK;
    arr = json_loads(json, 0, &jerr);
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        return td_error_set(err, TD_EFORMAT,
                            "metadata \"labels\" must be a JSON array of "
                            "strings");
    }
    if (n_expected > 0 && json_array_size(arr) != (size_t)n_expected) {
        size_t got = json_array_size(arr);
        json_decref(arr);
        return td_error_set(err, TD_EFORMAT,
                            "metadata \"labels\" has %zu entries, expected "
                            "%d (one per class)",
                            got, n_expected);
    }
    l->names = calloc(json_array_size(arr) + 1, sizeof *l->names);
    if (!l->names) {
        json_decref(arr);
        return td_error_set(err, TD_ENOMEM, "out of memory");
    }
    for (i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v)) {
            json_decref(arr);
            td_labels_free(l);
            return td_error_set(err, TD_EFORMAT,
                                "metadata \"labels\"[%zu] is not a string", i);
        }
        l->names[i] = strdup(json_string_value(v));
        if (!l->names[i]) {
            json_decref(arr);
            td_labels_free(l);
            return td_error_set(err, TD_ENOMEM, "out of memory");
        }
        l->n++;
    }
    json_decref(arr);
    return TD_OK;
}

void td_labels_free(td_labels *l)
{
    int i;
    if (!l->names)
        return;
    for (i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = 0;
}
