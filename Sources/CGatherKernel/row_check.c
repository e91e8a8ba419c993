#include "gather_kernel.h"

#include <string.h>

static const uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full, P3 = 0x165667B19E3779F9ull,
                      P4 = 0x85EBCA77C2B2AE63ull, P5 = 0x27D4EB2F165667C5ull;

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t round64(uint64_t acc, uint64_t input) { return rotl(acc + input * P2, 31) * P1; }
static inline uint64_t merge64(uint64_t acc, uint64_t val) { return (acc ^ round64(0, val)) * P1 + P4; }

/// Little-endian loads (x86-64 and arm64 are little-endian; memcpy compiles to one load).
static inline uint64_t load64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t load32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

uint64_t pkm_xxh64(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = data, *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        for (; p + 32 <= end; p += 32) {
            v1 = round64(v1, load64(p));
            v2 = round64(v2, load64(p + 8));
            v3 = round64(v3, load64(p + 16));
            v4 = round64(v4, load64(p + 24));
        }
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = merge64(merge64(merge64(merge64(h, v1), v2), v3), v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)n;
    for (; p + 8 <= end; p += 8) h = rotl(h ^ round64(0, load64(p)), 27) * P1 + P4;
    if (p + 4 <= end) {
        h = rotl(h ^ (uint64_t)load32(p) * P1, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++) h = rotl(h ^ (uint64_t)*p * P5, 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    return h ^ (h >> 32);
}

/// Row r's shard and its place in it.
static inline void place(const pkm_row_map *map, uint64_t r, uint64_t *s, size_t *i) {
    *s = map->shard_multiplier ? (uint64_t)(((unsigned __int128)map->shard_multiplier * r) >> 64) : r / map->rows_per_shard;
    *i = (size_t)(r - *s * map->rows_per_shard);
}

/// Row j of its unit's checksum, from the row's address.
static inline const unsigned char *checksum_of(const void *row, size_t j, size_t row_bytes, size_t rows_offset,
                                               size_t checksums_offset) {
    return (const unsigned char *)row - rows_offset - j * row_bytes + checksums_offset + j * 8;
}

/// Whether rows first ..< end of the unit at `unit` (row j at rows_offset + j x row_bytes, its
/// checksum at checksums_offset + j x 8), rows `table_first` on in the table, match their checksums.
static int unit_matches(const unsigned char *unit, size_t first, size_t end, uint64_t table_first, size_t row_bytes,
                        size_t rows_offset, size_t checksums_offset) {
    for (size_t j = first; j < end; j++)
        if (pkm_xxh64(unit + rows_offset + j * row_bytes, row_bytes, table_first + (j - first)) != load64(unit + checksums_offset + j * 8))
            return 0;
    return 1;
}

size_t pkm_check_rows(const pkm_row_map *map, const intptr_t *indices, const intptr_t *positions, size_t count,
                      const void *const *rows, size_t rows_offset, size_t checksums_offset, uint64_t *touched,
                      size_t ahead, size_t *newly_checked) {
    const size_t row_bytes = map->row_bytes, group_rows = (size_t)1 << map->group_shift, group_mask = group_rows - 1;
    uint64_t *checked = (uint64_t *)map->checked;
    for (size_t k = 0; k < count; k++) {
        if (k + ahead < count) {
            // The checksum line, and the whole group when it is touched (its whole check is next).
            const size_t p = positions ? (size_t)positions[k + ahead] : k + ahead;
            uint64_t s;
            size_t i;
            place(map, (uint64_t)indices[p], &s, &i);
            const unsigned char *sum = checksum_of(rows[p], i & group_mask, row_bytes, rows_offset, checksums_offset);
            const uint64_t g = (s << map->checked_shift) + (i >> map->group_shift);
            if ((__atomic_load_n(&touched[g >> 6], __ATOMIC_RELAXED) >> (g & 63)) & 1)
                pkm_prefetch(sum - checksums_offset, rows_offset + group_rows * row_bytes);
            else
                __builtin_prefetch(sum, 0, PKM_PREFETCH_LOCALITY);
        }
        const size_t p = positions ? (size_t)positions[k] : k;
        const uint64_t r = (uint64_t)indices[p];
        uint64_t s;
        size_t i;
        place(map, r, &s, &i);
        const uint64_t g = (s << map->checked_shift) + (i >> map->group_shift), bit = (uint64_t)1 << (g & 63);
        if (__atomic_load_n(&checked[g >> 6], __ATOMIC_RELAXED) & bit) continue;
        const uint64_t word = __atomic_load_n(&touched[g >> 6], __ATOMIC_RELAXED);
        const size_t j = i & group_mask;
        const unsigned char *unit = checksum_of(rows[p], j, row_bytes, rows_offset, checksums_offset) - checksums_offset - j * 8;
        if (word & bit) {
            // The group whole: its rows in this shard (the table's last shard may end within it).
            const size_t first = i - j, shard_end = map->rows - s * map->rows_per_shard;
            size_t end = first + group_rows;
            if (end > map->rows_per_shard) end = map->rows_per_shard;
            if (end > shard_end) end = shard_end;
            if (!unit_matches(unit, 0, end - first, r - j, row_bytes, rows_offset, checksums_offset)) return k;
            if (!(__atomic_fetch_or(&checked[g >> 6], bit, __ATOMIC_RELEASE) & bit)) ++*newly_checked;
            continue;
        }
        if (!unit_matches(unit, j, j + 1, r, row_bytes, rows_offset, checksums_offset)) return k;
        __atomic_store_n(&touched[g >> 6], word | bit, __ATOMIC_RELAXED);
    }
    return count;
}
