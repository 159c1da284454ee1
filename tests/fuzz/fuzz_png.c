/* libFuzzer target: td_image_probe + td_image_decode + td_image_preprocess
 * on PNG input (seeds in corpus/png/, tokens in png.dict); the checks are
 * in image_fuzz.h. Build and run: tests/fuzz/run_fuzzers.sh png */
#include "config.h"

#include "image_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_image_one(data, size);
}
