/* td_bnn_slice: binary conv layers executed bit-sliced, so that the MST
 * plan's counted savings (K + sum d row additions instead of Cout*K) show
 * in wall time.
 *
 * Why. The XOR-popcount kernels (td_bnn.h) count 64 window bits of one
 * pixel per operation, so a child channel costs its nonzero 64-bit mask
 * words, and trained layers have almost none empty (docs/BNN.md). Here
 * the lanes of a vector are *pixels*: bit j of every pixel's count sits in
 * one "plane", and one ternary-logic operation adds a window position for
 * up to 512 pixels at once. The cost of a channel is then the number of
 * window positions it adds: K for a root, d for a child.
 *
 * Planar activations. One bit stream per channel; image i's stream is `lw`
 * words at column i*lw of the channel's row (rows `stride` words apart).
 * Within a stream pixels sit in a phase-major layout (td_bslice_layout):
 * pixel (y, x) belongs to phase (y mod m, x mod m), each phase is a
 * sub-grid with margin rows and columns of zeros, and each phase starts on
 * a word. A layer of stride s reads an input laid out with m = s * m_out,
 * so every tap of every output phase is one input phase shifted by whole
 * rows and columns: building the layer's table is word copies at bit
 * offsets, never a per-pixel gather. Lanes that are not pixels are zero.
 *
 * Counting. P_o = sum_k (a_k XOR w_ok) over the K window positions k
 * (y_o = K - 2 P_o with zero padding read as +1, as in td_bnn.h). A table
 * holds, per position k = (tap t, input channel c), the row of lanes a_k
 * (row K is zero and pads lists to multiples of 16). A channel's rows are
 * split by its weight bit: where w = 0 it adds a_k, where w = 1 it adds
 * NOT a_k, which the carry-save adder takes with a different ternary
 * function, so the table needs no complemented rows. A root adds its K
 * rows into bit planes with carry-save adders (Harley-Seal, two ternary
 * ops per row). A child j of parent p adds only the d positions where
 * their weights differ, with j's bits:
 *     Q_j = Q_p + 2 cnt_j,  cnt_j = sum_{k in D_pj} (a_k XOR w_jk),
 * where Q_j = P_j + D_j and D_j is the sum of d along the tree path (from
 * the identity of td_mst.h: P_j = P_p + 2 cnt_j - d). So a child starts
 * from a copy of its parent's planes. (Pads in the NOT part add 1 each;
 * D counts them too.)
 *
 * Threshold. bit = (s*y < t) with y = K + 2 D_o - corr - 2 Q (corr: the
 * padded taps' weight sums at that pixel, td_bnn.h) is Q >= C or Q < C
 * for a per-lane constant C, precomputed bit-sliced: one ternary op per
 * plane. Lanes that are not pixels get a C that yields 0. The last layer
 * instead returns, per image and channel, the exact integer sum of y over
 * the output pixels.
 *
 * Every path gives the integers of the dense layer (tests compare them).
 * Ownership: td_bslice_prepare allocates what the layer owns (released by
 * td_bslice_release); forwards use caller scratch and never allocate.
 * Thread: a prepared layer is immutable; forwards are reentrant. */
#ifndef TD_BNN_SLICE_H
#define TD_BNN_SLICE_H

#include <stddef.h>
#include <stdint.h>

#include "td_bnn.h"
#include "td_err.h"
#include "td_mst.h"

/* The most bit planes a count can need (Q < 2^31 for every legal layer). */
#define TD_BSLICE_MAX_PLANES 32
/* The longest chain td_bslice_layouts plans (a model's blocks). */
#define TD_BSLICE_MAX_LAYERS 16
/* Zero words callers keep before and after planar buffers: tables read a
 * little outside the streams for lanes that are not pixels. */
#define TD_BSLICE_GUARD 8

/* Where the pixels of an h x w grid sit in one image's stream. Pixel
 * (y, x) is in phase f = (y mod m)*m + (x mod m), at lane
 * f*pw*64 + (mt + y/m)*pitch + x/m. */
typedef struct td_bslice_layout {
    int h, w;
    int m;      /* phases per axis */
    int hs, ws; /* sub-grid: ceil(h/m) x ceil(w/m) */
    int pitch;  /* lanes per sub-grid row, >= ws (the rest are zeros) */
    int mt;     /* rows before each sub-grid: 0 here (the margin above a
                   sub-grid is the end of the previous phase, zeros) */
    int pw;     /* words per phase */
    int lw;     /* words per image (td_bslice_words of m*m*pw words) */
} td_bslice_layout;

/* Words an image stream of `words` words occupies: 1, 2, 4, or a multiple
 * of 8 (so that 8-word vectors tile images evenly). */
int td_bslice_words(int64_t words);

/* Layouts for a chain of n <= TD_BSLICE_MAX_LAYERS convolutions (k,
 * stride, pad per layer) on an h x w input: lay[0] is the input's, lay[i+1] layer i's output. Returns 0
 * when the chain does not suit slicing (too many phases, or streams too
 * large), with the reason in err. */
int td_bslice_layouts(int n, const int *k, const int *stride, const int *pad,
                      int h, int w, td_bslice_layout *lay, td_error *err);

typedef struct td_bslice {
    int cin, cout, k, stride, pad;
    td_bslice_layout in, out;
    int kbits;                   /* K = cin*k*k window positions */
    int nq;                      /* bit planes of Q */
    int last;                    /* 1: sums of y instead of bits */
    int max_img;                 /* images per forward at most */
    size_t rs;                   /* words between table rows, max_img */
    /* Table rows: tap t of output phase f copies the input stream from bit
     * src_off[t*m_out^2 + f] (relative to the image's stream). */
    int32_t *src_off;
    /* Execution: channels in order (parents first); par -1: counted from
     * all K rows; the table rows of step i are erow[eptr[i]..eptr[i+1]). */
    int32_t *ch, *par, *eptr;
    int32_t *eneg;                /* (cout) where step i's w = 1 rows
                                     start (those add NOT a_k) */
    uint32_t *erow;
    int64_t n_rows;               /* sum of list lengths (with padding) */
    int pwc;                      /* pattern words of cpl and valid:
                                     max(lw, 8) */
    uint64_t *cpl;                /* (cout, nq, pwc) compare constants */
    uint8_t *inv;                 /* (cout) 1: bit = Q >= C, 0: Q < C */
    uint64_t *valid;              /* (pwc) lanes that are pixels */
    int64_t *ybase;               /* (cout) last: sum over pixels of
                                     K + 2 D_o - corr */
    void *mem;
} td_bslice;

/* Prepare from a prepared dense layer `conv` (its weights and tap sums
 * must outlive l). in/out: the layouts (td_bslice_layouts). plan: the MST
 * plan of these weights, or NULL to count every channel from its own row
 * (the bit-sliced dense layer). tsign/thr: the threshold (td_bnn.h), or
 * NULL for the last layer. max_img: images per forward at most. */
td_status td_bslice_prepare(td_bslice *l, const td_bconv *conv,
                            const td_bslice_layout *in,
                            const td_bslice_layout *out, int max_img,
                            const td_mst_plan *plan, const int8_t *tsign,
                            const int32_t *thr, td_error *err);
void td_bslice_release(td_bslice *l);

/* Row stride (words) of planar buffers for nimg images of lw words. */
size_t td_bslice_stride(int lw, int nimg);
/* 64-bit words of scratch a forward needs (any nimg <= max_img). */
size_t td_bslice_scratch_words(const td_bslice *l);

/* Forward flags: portable C (one 64-bit word at a time) even where the
 * CPU has SIMD (same value as TD_BCONV_PORTABLE); AVX2 (256-bit, no
 * ternary logic) even where it has AVX-512, to measure and test what an
 * AVX2-only machine runs. */
#define TD_BSLICE_PORTABLE TD_BCONV_PORTABLE
#define TD_BSLICE_AVX2 128

/* in: (cin, in_stride) words, image i at column i*in.lw; out (not last):
 * (cout, td_bslice_stride(out.lw, nimg)) words, image i at column
 * i*out.lw, its spare column zeroed, followed by TD_BSLICE_GUARD words it
 * zeroes; ysum (last): (nimg, cout) sums of y over the output pixels.
 * in_stride >= td_bslice_stride(in.lw, nimg), the spare column of each row
 * zero (a row's spare column is the word before the next row's first
 * stream, read as padding), and TD_BSLICE_GUARD zero words before the
 * first row and after the last. nimg <= max_img. */
void td_bslice_forward(const td_bslice *l, int flags, const uint64_t *in,
                       size_t in_stride, int nimg, uint64_t *out,
                       int64_t *ysum, uint64_t *scratch);

/* The lane of every pixel of lay, raster order: lane (h*w). */
void td_bslice_lane_table(const td_bslice_layout *lay, int32_t *lane);

/* Channel-packed NHWC bits of one image (the stem's output) to planar
 * streams in layout `lay`. in: (h*w, td_bp_words(c)) words; lane: from
 * td_bslice_lane_table; out: c rows `stride` words apart, lay->lw words
 * written to each; lanes: scratch of lay->lw*64*td_bp_words(c) words. */
void td_bslice_from_nhwc(const uint64_t *in, int c,
                         const td_bslice_layout *lay, const int32_t *lane,
                         uint64_t *out, size_t stride, uint64_t *lanes);

/* The reverse: planar streams of one image (c rows `stride` words apart,
 * layout lay) to channel-packed NHWC words out (h*w, td_bp_words(c));
 * lane and lanes as above. */
void td_bslice_to_nhwc(const uint64_t *in, size_t stride, int c,
                       const td_bslice_layout *lay, const int32_t *lane,
                       uint64_t *out, uint64_t *lanes);

/* 1 when the AVX-512 (F + VL) kernels run on this CPU. */
int td_bslice_has_simd(void);
/* 1 when the AVX2 kernels can run. */
int td_bslice_has_avx2(void);
/* The kernels a forward with these flags runs: 2 AVX-512, 1 AVX2 (and
 * SSE2 for 2-word tiles), 0 portable. */
int td_bslice_level(int flags);

#endif
