/* td_kinds: the table of servable kinds. Adding a kind is one line here. */
#include "config.h"

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
