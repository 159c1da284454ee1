/* The real road networks for tests: $TD_ROADS_DIR, else shared/data/roads
 * beside the source tree, else /work/shared/data/roads. Tests that use them
 * skip with a message when the folder is absent. */
#ifndef TD_TEST_ROADS_H
#define TD_TEST_ROADS_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *roads_dir(char *buf, size_t len)
{
    const char *env = getenv("TD_ROADS_DIR"), *src = getenv("TD_SRCDIR");
    if (env)
        return env;
    if (src) {
        snprintf(buf, len, "%s/../../shared/data/roads/rome99.gr", src);
        if (access(buf, R_OK) == 0) {
            snprintf(buf, len, "%s/../../shared/data/roads", src);
            return buf;
        }
    }
    return "/work/shared/data/roads";
}

#endif
