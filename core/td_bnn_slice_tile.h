/* Template of the bit-sliced tile kernel (td_bnn_slice.h), included by
 * td_bnn_slice.c once per vector width with these defined:
 *   SL_NAME, SL_ATTR (target attribute or empty), SL_V (vector type),
 *   SL_W (64-bit words per vector), SL_LD(p), SL_ST(p, v),
 *   SL_TL(a, b, c, imm) (ternary logic: bit = imm[a<<2 | b<<1 | c]),
 *   SL_AND(a, b), SL_XOR(a, b), SL_ZERO, SL_ANY(v) (nonzero).
 * Not a header of its own: it has no include guard on purpose, and it
 * #undefs those macros at its end, ready for the next width.
 *
 * One tile is SL_W words of lanes starting at column g. For each step
 * (channel o, parent p): start from zero (root) or p's planes (child),
 * add the step's table rows 16 at a time by Harley-Seal carry-save adders
 * into planes b..b+3 (b = 0 for a root, 1 for a child: the child adds
 * 2*cnt), ripple each 16s carry into the planes above (nq >= b + 8), keep o's planes in
 * qs for its children and, unless last, compare with the thresholds.
 * tab: the table, rows 2^rshift words apart; qs: (cout, nq, SL_W); out:
 * rows os words apart. */
SL_ATTR static void SL_NAME(const td_bslice *l, const uint64_t *tab,
                            int rshift, size_t g, uint64_t *qs, uint64_t *out,
                            size_t os)
{
    SL_V q[TD_BSLICE_MAX_PLANES];
    const int nq = l->nq;
    const uint64_t *tg = tab + g;
    size_t pofs = g % (size_t)l->pwc;
#define SL_X(p, i) SL_LD(tg + ((size_t)(p)[i] << rshift))
#define SL_CSA(hi, lo, a, b, c)                                               \
    do {                                                                      \
        SL_V a_ = (a), b_ = (b), c_ = (c);                                    \
        (hi) = SL_TL(a_, b_, c_, 0xE8); /* majority */                        \
        (lo) = SL_TL(a_, b_, c_, 0x96); /* parity */                          \
    } while (0)
/* the same with the majority's function given (parity is the same for
 * none or both of b, c complemented) */
#define SL_CSA1(hi, lo, a, b, c, MAJ)                                         \
    do {                                                                      \
        SL_V a_ = (a), b_ = (b), c_ = (c);                                    \
        (hi) = SL_TL(a_, b_, c_, MAJ);                                        \
        (lo) = SL_TL(a_, b_, c_, 0x96);                                       \
    } while (0)
    /* 16 rows from e: Harley-Seal into ones..eights, the 16s carry
     * rippled through four planes kept in registers; past them (a lane's
     * count crossing a multiple of 256) it is rare, so it is tested
     * before touching memory. MAJ: the first level's majority. */
#define SL_HS_LOOP(from, to, MAJ)                                             \
    for (const uint32_t *x_ = (from); x_ < (to); x_ += 16) {                  \
        SL_V tA, tB, fA, fB, eA, eB, sx;                                      \
        SL_CSA1(tA, ones, ones, SL_X(x_, 0), SL_X(x_, 1), MAJ);               \
        SL_CSA1(tB, ones, ones, SL_X(x_, 2), SL_X(x_, 3), MAJ);               \
        SL_CSA(fA, twos, twos, tA, tB);                                       \
        SL_CSA1(tA, ones, ones, SL_X(x_, 4), SL_X(x_, 5), MAJ);               \
        SL_CSA1(tB, ones, ones, SL_X(x_, 6), SL_X(x_, 7), MAJ);               \
        SL_CSA(fB, twos, twos, tA, tB);                                       \
        SL_CSA(eA, fours, fours, fA, fB);                                     \
        SL_CSA1(tA, ones, ones, SL_X(x_, 8), SL_X(x_, 9), MAJ);               \
        SL_CSA1(tB, ones, ones, SL_X(x_, 10), SL_X(x_, 11), MAJ);             \
        SL_CSA(fA, twos, twos, tA, tB);                                       \
        SL_CSA1(tA, ones, ones, SL_X(x_, 12), SL_X(x_, 13), MAJ);             \
        SL_CSA1(tB, ones, ones, SL_X(x_, 14), SL_X(x_, 15), MAJ);             \
        SL_CSA(fB, twos, twos, tA, tB);                                       \
        SL_CSA(eB, fours, fours, fA, fB);                                     \
        SL_CSA(sx, eights, eights, eA, eB);                                   \
        tA = SL_AND(h16, sx);                                                 \
        h16 = SL_XOR(h16, sx);                                                \
        tB = SL_AND(h32, tA);                                                 \
        h32 = SL_XOR(h32, tA);                                                \
        tA = SL_AND(h64, tB);                                                 \
        h64 = SL_XOR(h64, tB);                                                \
        sx = SL_AND(h128, tA);                                                \
        h128 = SL_XOR(h128, tA);                                              \
        if (SL_ANY(sx))                                                       \
            for (int j = b + 8; j < nq; j++) {                                \
                SL_V t_ = SL_AND(q[j], sx);                                   \
                q[j] = SL_XOR(q[j], sx);                                      \
                sx = t_;                                                      \
            }                                                                 \
    }
    for (int st = 0; st < l->cout; st++) {
        int o = l->ch[st], p = l->par[st], b = p < 0 ? 0 : 1;
        const uint32_t *e = l->erow + l->eptr[st];
        const uint32_t *end = l->erow + l->eptr[st + 1];
        const uint32_t *neg = l->erow + l->eneg[st];
        if (p < 0)
            for (int j = 0; j < nq; j++)
                q[j] = SL_ZERO;
        else
            for (int j = 0; j < nq; j++)
                q[j] = SL_LD(qs + ((size_t)p * (size_t)nq + (size_t)j) * SL_W);
        SL_V ones = q[b], twos = q[b + 1], fours = q[b + 2],
             eights = q[b + 3], h16 = q[b + 4], h32 = q[b + 5],
             h64 = q[b + 6], h128 = q[b + 7];
        /* the w = 0 rows add a_k (majority 0xE8), then the w = 1 rows
         * add NOT a_k: majority(a, NOT x, NOT y) is 0x71 and the parity
         * of two complemented inputs is unchanged */
        SL_HS_LOOP(e, neg, 0xE8);
        SL_HS_LOOP(neg, end, 0x71);
        q[b] = ones;
        q[b + 1] = twos;
        q[b + 2] = fours;
        q[b + 3] = eights;
        q[b + 4] = h16;
        q[b + 5] = h32;
        q[b + 6] = h64;
        q[b + 7] = h128;
        for (int j = 0; j < nq; j++)
            SL_ST(qs + ((size_t)o * (size_t)nq + (size_t)j) * SL_W, q[j]);
        if (!l->last) {
            /* borrow of Q - C, plane by plane from the bottom */
            const uint64_t *c = l->cpl + (size_t)o * (size_t)nq *
                                             (size_t)l->pwc + pofs;
            SL_V br = SL_ZERO;
            for (int j = 0; j < nq; j++)
                br = SL_TL(q[j], SL_LD(c + (size_t)j * (size_t)l->pwc), br,
                           0x8E);
            if (l->inv[o])
                br = SL_TL(br, br, br, 0x55); /* NOT */
            SL_ST(out + (size_t)o * os + g, br);
        }
    }
#undef SL_X
#undef SL_CSA
#undef SL_CSA1
#undef SL_HS_LOOP
}

#undef SL_NAME
#undef SL_ATTR
#undef SL_V
#undef SL_W
#undef SL_LD
#undef SL_ST
#undef SL_TL
#undef SL_AND
#undef SL_XOR
#undef SL_ZERO
#undef SL_ANY
