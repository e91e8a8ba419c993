// Decode speed of row-granular codec candidates for bf16 rows of 64 (issue 13), rows decoded
// one at a time in random order into their stored bytes, against memcpy of raw rows. Built and
// run by Tools/codec_speed.sh; the sizes of the same candidates are Tools/codec_candidates.py's.
//
// Each element, as u16 rotated left by one bit (sign to bit 0), is a top byte (the exponent)
// and a low byte (mantissa and sign). Candidates:
//   nibble:  the 15 most frequent top bytes as 4-bit codes (a row with any other top byte is
//            stored raw, flagged), decoded with byte shuffles;
//   huffman: the top bytes coded with one static Huffman code limited to 11 bits, decoded
//            through a 2^11-entry table, one row at a time or four rows interleaved (the
//            four-row loop also compares each decoded row with the raw one, inside the timing).
// Prints produced GB/s (128 bytes a row) per candidate, single thread, median of 9 passes.
//     codec_speed [LOG2_ROWS]      (default 20)
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { DIM = 64, MAXLEN = 11 };

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int by_double(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static uint64_t state = 0x9E3779B97F4A7C15ull;
static double uniform(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return (state >> 11) * 0x1p-53; }

static uint16_t bf16(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16); }
static uint16_t rotl(uint16_t x) { return (uint16_t)((x << 1) | (x >> 15)); }
static uint16_t rotr(uint16_t x) { return (uint16_t)((x >> 1) | (x << 15)); }

// Huffman code lengths limited to MAXLEN: lengths from the frequencies, then the longest codes
// shortened and others lengthened until the Kraft sum is 1 again.
static void code_lengths(const uint64_t *count, int *len) {
    int order[256], n = 0;
    for (int s = 0; s < 256; s++) { len[s] = 0; if (count[s]) order[n++] = s; }
    // Lengths by the two-queue Huffman construction over symbols sorted by count.
    for (int i = 1; i < n; i++) for (int j = i; j > 0 && count[order[j]] < count[order[j - 1]]; j--) { int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t; }
    uint64_t weight[512]; int parent[512], nodes = n;
    for (int i = 0; i < n; i++) weight[i] = count[order[i]];
    int leaf = 0, inner = n;
    for (int k = 0; k < n - 1; k++) {
        int pick[2];
        for (int p = 0; p < 2; p++) {
            if (leaf < n && (inner >= nodes || weight[leaf] <= weight[inner])) pick[p] = leaf++; else pick[p] = inner++;
        }
        weight[nodes] = weight[pick[0]] + weight[pick[1]];
        parent[pick[0]] = parent[pick[1]] = nodes;
        nodes++;
    }
    for (int i = 0; i < n; i++) { int d = 0; for (int x = i; x != nodes - 1; x = parent[x]) d++; len[order[i]] = n == 1 ? 1 : d; }
    for (int s = 0; s < 256; s++) if (len[s] > MAXLEN) len[s] = MAXLEN;
    for (;;) {  // Kraft sum in units of 2^-MAXLEN
        long kraft = 0;
        for (int s = 0; s < 256; s++) if (len[s]) kraft += 1L << (MAXLEN - len[s]);
        if (kraft <= 1L << MAXLEN) break;
        int best = -1;  // lengthen the most frequent symbol that is shorter than MAXLEN... the least costly: the rarest
        for (int s = 0; s < 256; s++) if (len[s] && len[s] < MAXLEN && (best < 0 || count[s] < count[best])) best = s;
        len[best]++;
    }
}

int main(int argc, char **argv) {
    const size_t rows = (size_t)1 << (argc > 1 ? atoi(argv[1]) : 20);
    uint16_t *raw = malloc(rows * DIM * 2);
    for (size_t i = 0; i < rows * DIM; i++) {
        double g = sqrt(-2 * log(uniform() + 1e-300)) * cos(2 * M_PI * uniform());
        raw[i] = bf16((float)(g * 0.02));
    }
    uint64_t count[256] = {0};
    for (size_t i = 0; i < rows * DIM; i++) count[rotl(raw[i]) >> 8]++;

    // nibble: 32 bytes of codes, then the 64 low bytes; flag byte 1 = raw row.
    int rank[256]; uint8_t table[16] = {0};
    { int used[256] = {0};
      for (int c = 0; c < 15; c++) { int best = -1; for (int s = 0; s < 256; s++) if (!used[s] && (best < 0 || count[s] > count[best])) best = s; used[best] = 1; table[c] = (uint8_t)best; }
      for (int s = 0; s < 256; s++) { rank[s] = 15; for (int c = 0; c < 15; c++) if (table[c] == s) rank[s] = c; } }
    const size_t nrow = 1 + 32 + 64 + 32;  // flag, codes, low bytes (raw rows use 1 + 128)
    uint8_t *nib = malloc(rows * nrow);
    size_t escaped = 0;
    for (size_t r = 0; r < rows; r++) {
        uint8_t *o = nib + r * nrow;
        int plain = 1;
        for (int j = 0; j < DIM; j++) if (rank[rotl(raw[r * DIM + j]) >> 8] == 15) plain = 0;
        o[0] = !plain;
        if (!plain) { memcpy(o + 1, raw + r * DIM, 128); escaped++; continue; }
        for (int j = 0; j < 32; j++) {
            const int a = rank[rotl(raw[r * DIM + 2 * j]) >> 8], b = rank[rotl(raw[r * DIM + 2 * j + 1]) >> 8];
            o[1 + j] = (uint8_t)(a | b << 4);
        }
        for (int j = 0; j < DIM; j++) o[33 + j] = (uint8_t)rotl(raw[r * DIM + j]);
    }

    // huffman: canonical codes; each row its bit stream (MSB first), 8-byte aligned slots.
    int len[256]; code_lengths(count, len);
    uint32_t code[256] = {0};
    { uint32_t next = 0; for (int l = 1; l <= MAXLEN; l++) { for (int s = 0; s < 256; s++) if (len[s] == l) code[s] = next++; next <<= 1; } }
    uint16_t lut[1 << MAXLEN];  // symbol | length << 8
    for (int s = 0; s < 256; s++) if (len[s]) {
        const uint32_t first = code[s] << (MAXLEN - len[s]);
        for (uint32_t k = 0; k < (1u << (MAXLEN - len[s])); k++) lut[first + k] = (uint16_t)(s | len[s] << 8);
    }
    const size_t hrow = 64 + 96;  // codes (at most 64 x 11 bits = 88 bytes), then the 64 low bytes
    uint8_t *huf = calloc(rows, hrow);
    double bits = 0;
    for (size_t r = 0; r < rows; r++) {
        uint8_t *o = huf + r * hrow;
        uint64_t acc = 0; int fill = 0, at = 0;
        for (int j = 0; j < DIM; j++) {
            const int s = rotl(raw[r * DIM + j]) >> 8;
            acc = acc << len[s] | code[s]; fill += len[s]; bits += len[s];
            while (fill >= 8) { o[at++] = (uint8_t)(acc >> (fill - 8)); fill -= 8; }
        }
        if (fill) o[at++] = (uint8_t)(acc << (8 - fill));
        for (int j = 0; j < DIM; j++) o[96 + j] = (uint8_t)rotl(raw[r * DIM + j]);
    }

    const size_t reads = 1 << 20;
    const __m128i lo_table = _mm_loadu_si128((const __m128i *)table), mask = _mm_set1_epi8(0x0F);
    uint32_t *pick = malloc(reads * 4);
    for (size_t i = 0; i < reads; i++) pick[i] = (uint32_t)(uniform() * rows);
    uint16_t out[DIM];
    uint64_t sink = 0;
    double t[4][9];
    for (int pass = 0; pass < 9; pass++) {
        double t0 = now();
        for (size_t i = 0; i < reads; i++) { memcpy(out, raw + (size_t)pick[i] * DIM, 128); sink += out[i & 63]; }
        t[0][pass] = now() - t0;

        t0 = now();
        for (size_t i = 0; i < reads; i++) {
            const uint8_t *p = nib + (size_t)pick[i] * nrow;
            if (p[0]) { memcpy(out, p + 1, 128); sink += out[i & 63]; continue; }
            for (int h = 0; h < 2; h++) {  // 16 code bytes -> 32 top bytes -> 32 elements
                const __m128i c = _mm_loadu_si128((const __m128i *)(p + 1 + 16 * h));
                const __m128i even = _mm_shuffle_epi8(lo_table, _mm_and_si128(c, mask));
                const __m128i odd = _mm_shuffle_epi8(lo_table, _mm_and_si128(_mm_srli_epi16(c, 4), mask));
                const __m128i top0 = _mm_unpacklo_epi8(even, odd), top1 = _mm_unpackhi_epi8(even, odd);
                const __m128i low0 = _mm_loadu_si128((const __m128i *)(p + 33 + 32 * h));
                const __m128i low1 = _mm_loadu_si128((const __m128i *)(p + 33 + 32 * h + 16));
                __m128i e[4] = {_mm_unpacklo_epi8(low0, top0), _mm_unpackhi_epi8(low0, top0),
                                _mm_unpacklo_epi8(low1, top1), _mm_unpackhi_epi8(low1, top1)};
                for (int k = 0; k < 4; k++) {  // rotate right by one bit
                    e[k] = _mm_or_si128(_mm_srli_epi16(e[k], 1), _mm_slli_epi16(e[k], 15));
                    _mm_storeu_si128((__m128i *)(out + 32 * h + 8 * k), e[k]);
                }
            }
            sink += out[i & 63];
        }
        t[1][pass] = now() - t0;

        t0 = now();
        for (size_t i = 0; i < reads; i++) {
            const uint8_t *p = huf + (size_t)pick[i] * hrow;
            uint64_t window = __builtin_bswap64(*(const uint64_t *)p); int used = 0, next = 8;
            for (int j = 0; j < DIM; j++) {
                if (used > 64 - MAXLEN) {  // refill: drop the consumed bytes
                    const int bytes = used / 8;
                    window = __builtin_bswap64(*(const uint64_t *)(p + next - 8 + bytes)); next += bytes; used -= 8 * bytes;
                }
                const uint16_t e = lut[(window << used) >> (64 - MAXLEN)];
                used += e >> 8;
                out[j] = rotr((uint16_t)((e & 0xFF) << 8 | p[96 + j]));
            }
            sink += out[i & 63];
        }
        t[2][pass] = now() - t0;

        // Four rows at once, each with its own bit window: the serial chains of four rows overlap.
        t0 = now();
        uint16_t out4[4][DIM];
        for (size_t i = 0; i + 4 <= reads; i += 4) {
            const uint8_t *p[4]; uint64_t window[4]; int used[4], next[4];
            for (int q = 0; q < 4; q++) {
                p[q] = huf + (size_t)pick[i + q] * hrow;
                window[q] = __builtin_bswap64(*(const uint64_t *)p[q]); used[q] = 0; next[q] = 8;
            }
            for (int j = 0; j < DIM; j++) {
                for (int q = 0; q < 4; q++) {
                    if (used[q] > 64 - MAXLEN) {
                        const int bytes = used[q] / 8;
                        window[q] = __builtin_bswap64(*(const uint64_t *)(p[q] + next[q] - 8 + bytes)); next[q] += bytes; used[q] -= 8 * bytes;
                    }
                    const uint16_t e = lut[(window[q] << used[q]) >> (64 - MAXLEN)];
                    used[q] += e >> 8;
                    out4[q][j] = rotr((uint16_t)((e & 0xFF) << 8 | p[q][96 + j]));
                }
            }
            for (int q = 0; q < 4; q++) if (memcmp(out4[q], raw + (size_t)pick[i + q] * DIM, 128)) { fprintf(stderr, "4-row Huffman decode wrong\n"); return 1; }
            sink += out4[0][i & 63];
        }
        t[3][pass] = now() - t0;
    }
    // Check the decoders against the raw rows (the nibble one on its first plain rows).
    for (size_t r = 0, checked = 0; r < rows && checked < 64; r++) {
        const uint8_t *p = nib + r * nrow;
        if (p[0]) continue;
        checked++;
        for (int j = 0; j < DIM; j++) {
            const uint8_t top = table[(p[1 + j / 2] >> (4 * (j & 1))) & 15];
            if (rotr((uint16_t)(top << 8 | p[33 + j])) != raw[r * DIM + j]) { fprintf(stderr, "nibble codes row %zu wrong\n", r); return 1; }
        }
        // And the shuffle decoder on this row.
        uint16_t got[DIM];
        for (int h = 0; h < 2; h++) {
            const __m128i c = _mm_loadu_si128((const __m128i *)(p + 1 + 16 * h));
            const __m128i even = _mm_shuffle_epi8(lo_table, _mm_and_si128(c, mask));
            const __m128i odd = _mm_shuffle_epi8(lo_table, _mm_and_si128(_mm_srli_epi16(c, 4), mask));
            const __m128i top0 = _mm_unpacklo_epi8(even, odd), top1 = _mm_unpackhi_epi8(even, odd);
            const __m128i low0 = _mm_loadu_si128((const __m128i *)(p + 33 + 32 * h)), low1 = _mm_loadu_si128((const __m128i *)(p + 49 + 32 * h));
            __m128i e[4] = {_mm_unpacklo_epi8(low0, top0), _mm_unpackhi_epi8(low0, top0), _mm_unpacklo_epi8(low1, top1), _mm_unpackhi_epi8(low1, top1)};
            for (int k = 0; k < 4; k++) _mm_storeu_si128((__m128i *)(got + 32 * h + 8 * k), _mm_or_si128(_mm_srli_epi16(e[k], 1), _mm_slli_epi16(e[k], 15)));
        }
        if (memcmp(got, raw + r * DIM, 128)) { fprintf(stderr, "the shuffle decoder decodes row %zu wrong\n", r); return 1; }
    }
    for (size_t r = 0; r < 64; r++) {
        const uint8_t *p = huf + r * hrow; uint64_t window = __builtin_bswap64(*(const uint64_t *)p); int used = 0, next = 8;
        for (int j = 0; j < DIM; j++) {
            if (used > 64 - MAXLEN) { const int bytes = used / 8; window = __builtin_bswap64(*(const uint64_t *)(p + next - 8 + bytes)); next += bytes; used -= 8 * bytes; }
            const uint16_t e = lut[(window << used) >> (64 - MAXLEN)]; used += e >> 8;
            if (rotr((uint16_t)((e & 0xFF) << 8 | p[96 + j])) != raw[r * DIM + j]) { fprintf(stderr, "huffman decodes row %zu wrong\n", r); return 1; }
        }
    }
    const char *name[4] = {"memcpy (raw rows)", "nibble top byte", "huffman top byte", "huffman, 4 rows"};
    printf("%zu rows, %zu random single-row decodes, %.3f%% of rows raw under nibble, Huffman %.2f bits a top byte (sink %llu)\n",
           rows, reads, 100.0 * escaped / rows, bits / (rows * DIM), (unsigned long long)(sink & 1));
    for (int c = 0; c < 4; c++) {
        qsort(t[c], 9, sizeof(double), by_double);
        printf("%-18s %6.2f GB/s produced, %5.1f ns a row\n", name[c], reads * 128 / t[c][4] / 1e9, t[c][4] / reads * 1e9);
    }
    return 0;
}
