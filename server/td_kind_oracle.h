/* td_kind_oracle: a distance oracle served as an OIP model.
 *
 * Inputs "source" and "target", INT64 [N] vertex ids as the graph file
 * numbers them (1-based for DIMACS, 0-based for edge lists and JSON; the
 * file's metadata "id_base" says which). Outputs "distance" FP64 [N]: an
 * upper bound within the oracle's factor of the true distance (or exact
 * with the request parameter {"exact": true}); infinity (written as JSON
 * null) when no path exists. "factor" FP64 [N] is the guarantee each
 * answer carries (1 for exact answers). */
#ifndef TD_KIND_ORACLE_H
#define TD_KIND_ORACLE_H

#include "td_servable.h"

extern const td_servable_kind td_kind_oracle;

#endif
