/* td_treecover: paper-style tree cover (see td_treecover.h). */
#include "config.h"

#include "td_treecover.h"

#include <math.h>

td_status td_treecover_build(td_oracle *o, const td_graph *g,
                             const td_oracle_params *p, td_error *err)
{
    (void)o;
    (void)g;
    (void)p;
    return td_error_set(err, TD_EUNSUPPORTED, "oracle mode treecover is not "
                        "implemented yet");
}

double td_treecover_query(const td_oracle *o, uint32_t u, uint32_t v)
{
    (void)o;
    (void)u;
    (void)v;
    return INFINITY;
}

size_t td_treecover_bytes(const td_oracle *o)
{
    (void)o;
    return 0;
}
