/* td_kinds: the table of servable kinds. Adding a kind is one line here. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "td_kind_bnn.h"
#include "td_kind_linear.h"
#include "td_kind_oracle.h"
#include "td_kind_tinynet.h"
#include "td_servable.h"

const td_servable_kind *const td_kinds[] = {
    &td_kind_linear,
    &td_kind_oracle,
    &td_kind_tinynet,
    &td_kind_bnn,
    NULL,
};

const td_servable_kind *td_kind_find(const char *kind)
{
    size_t i;
    if (!kind)
        return NULL;
    for (i = 0; td_kinds[i]; i++)
        if (strcmp(td_kinds[i]->kind, kind) == 0)
            return td_kinds[i];
    return NULL;
}

int td_io_pair_inputs(const void *impl, const td_tensor_spec **specs)
{
    *specs = &((const td_io_pair *)impl)->in;
    return 1;
}

int td_io_pair_outputs(const void *impl, const td_tensor_spec **specs)
{
    *specs = &((const td_io_pair *)impl)->out;
    return 1;
}

float *td_logits_alloc(td_tensor *out, int64_t rows, int64_t classes,
                       td_error *err)
{
    size_t bytes = (size_t)rows * (size_t)classes * sizeof(float);
    float *data = malloc(bytes ? bytes : 1);
    if (!data) {
        td_error_set(err, TD_ENOMEM, "out of memory for %lld rows of logits",
                     (long long)rows);
        return NULL;
    }
    snprintf(out->name, sizeof out->name, "logits");
    out->dtype = TD_DT_F32;
    out->ndim = 2;
    out->shape[0] = rows;
    out->shape[1] = classes;
    out->data = data;
    out->nbytes = bytes;
    return data;
}
