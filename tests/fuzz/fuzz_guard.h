/* Shared by the fuzz targets: CHECK, and the guarded copy of an input.
 *
 * jansson, libjpeg and libpng are system libraries without ASan
 * instrumentation, so their reads past the end of an input would go
 * unnoticed in a heap buffer. Each input is therefore copied to end
 * exactly at a PROT_NONE page: any over-read, instrumented or not, faults.
 * The region is reused between inputs. */
#ifndef FUZZ_GUARD_H
#define FUZZ_GUARD_H

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c))                                                           \
            __builtin_trap();                                               \
    } while (0)

static unsigned char *fuzz_guarded_copy(const uint8_t *data, size_t size)
{
    static unsigned char *region;
    static size_t cap; /* usable bytes before the guard page */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (!region || size > cap) {
        size_t want = size ? (size + page - 1) / page * page : page;
        void *p;
        if (region)
            munmap(region, cap + page);
        p = mmap(NULL, want + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(p != MAP_FAILED);
        CHECK(mprotect((unsigned char *)p + want, page, PROT_NONE) == 0);
        region = p;
        cap = want;
    }
    if (size)
        memcpy(region + cap - size, data, size);
    return region + cap - size;
}

#endif
