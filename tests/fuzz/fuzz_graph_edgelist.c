/* libFuzzer target: td_graph_parse with the format forced to edgelist (plain
 * or gzip-wrapped), then td_graph_build; the checks are in graph_fuzz.h.
 * Seeds in corpus/graph_edgelist/, tokens in graph_edgelist.dict.
 * Build and run: tests/fuzz/run_fuzzers.sh graph_edgelist
 * fuzz-coverage: core/td_graph_io.c core/td_graph.c */
#include "config.h"

#include "graph_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_graph_one(data, size, TD_GFMT_EDGELIST);
}
