/* libFuzzer target: an Open Inference Protocol JSON infer request.
 * Input: one byte choosing the model (its low 7 bits modulo 5 pick one of
 * the spec sets in oip_fuzz.h, bit 7 a batch limit of 64), then the body.
 * Seeds in corpus/oip_json/, tokens in oip_json.dict.
 * Build and run: tests/fuzz/run_fuzzers.sh oip_json
 * fuzz-sources: server/td_oip.c
 * fuzz-coverage: server/td_oip.c */
#include "config.h"

#include "oip_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    return fuzz_oip_one(data + 1, size - 1, size - 1, data[0] & 0x7f,
                        data[0] & 0x80 ? 64 : 0);
}
