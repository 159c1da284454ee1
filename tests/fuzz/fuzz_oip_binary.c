/* libFuzzer target: Triton's binary tensor extension, a JSON header of
 * Inference-Header-Content-Length bytes followed by raw tensors.
 * Input: two bytes, little-endian: the low 13 bits are the header length
 * (clamped to the body), the top three bits modulo 5 pick one of the spec
 * sets in oip_fuzz.h; then the body.
 * Seeds in corpus/oip_binary/, tokens in oip_binary.dict.
 * Build and run: tests/fuzz/run_fuzzers.sh oip_binary
 * fuzz-sources: server/td_oip.c
 * fuzz-coverage: server/td_oip.c */
#include "config.h"

#include "oip_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned prefix;
    size_t json_len;
    if (size < 2)
        return 0;
    prefix = data[0] | (unsigned)data[1] << 8;
    json_len = prefix & 0x1fff;
    if (json_len > size - 2)
        json_len = size - 2;
    return fuzz_oip_one(data + 2, size - 2, json_len, prefix >> 13, 0);
}
