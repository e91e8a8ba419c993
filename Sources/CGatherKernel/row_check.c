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
    *s = pkm_row_shard(map, r);
    *i = (size_t)(r - *s * map->rows_per_shard);
}

/// Row i of a shard whose units start at `base`: its checksum.
static inline const unsigned char *checksum_of(const pkm_check_layout *c, const char *base, size_t i) {
    return (const unsigned char *)base + (i / c->unit_rows) * c->unit_bytes + c->checksums_offset + (i % c->unit_rows) * c->checksum_bytes;
}

/// Whether row i of a shard whose units start at `base`, row r of the table, matches its checksum:
/// raw rows as stored, nibble slots once decoded (an escaped slot passes: its values are checked
/// where they are read).
static int row_matches(const pkm_row_map *map, const pkm_check_layout *c, const char *base, size_t i, uint64_t r) {
    const unsigned char *row = (const unsigned char *)base + map->row_offsets[i], *sum = checksum_of(c, base, i);
    if (!c->nibble_table) return pkm_xxh64(row, map->row_bytes, r) == load64(sum);
    if (row[0] == 0xFF) return 1;
    const void *slot = row;
    pkm_nibble_decode(&slot, 1, c->dim, c->element_size, c->nibble_table, c->scratch, 0);
    return (uint32_t)pkm_xxh64(c->scratch, c->dim * c->element_size, r) == load32(sum);
}

size_t pkm_check_rows(const pkm_row_map *map, const pkm_check_layout *c, const intptr_t *indices, const intptr_t *positions,
                      size_t count, uint64_t *touched, size_t ahead, size_t *newly_checked) {
    const size_t group_rows = (size_t)1 << map->group_shift;
    uint64_t *checked = (uint64_t *)map->checked;
    for (size_t k = 0; k < count; k++) {
        if (k + ahead < count) {
            // Unless its group is checked: the checksum, and the whole group's rows when the group
            // is touched (its whole check is next).
            uint64_t s;
            size_t i;
            place(map, (uint64_t)indices[positions ? (size_t)positions[k + ahead] : k + ahead], &s, &i);
            const uint64_t g = pkm_group_bit(map, s, i);
            if (!((__atomic_load_n(&checked[g >> 6], __ATOMIC_RELAXED) >> (g & 63)) & 1)) {
                const char *base = (const char *)__atomic_load_n(&map->shard_rows[s], __ATOMIC_RELAXED);
                __builtin_prefetch(checksum_of(c, base, i), 0, PKM_PREFETCH_LOCALITY);
                if ((__atomic_load_n(&touched[g >> 6], __ATOMIC_RELAXED) >> (g & 63)) & 1) {
                    const size_t first = (i >> map->group_shift) << map->group_shift;
                    for (size_t j = first; j < first + group_rows && j < map->rows_per_shard; j++)
                        pkm_prefetch(base + map->row_offsets[j], map->row_bytes);
                }
            }
        }
        const uint64_t r = (uint64_t)indices[positions ? (size_t)positions[k] : k];
        uint64_t s;
        size_t i;
        place(map, r, &s, &i);
        const uint64_t g = pkm_group_bit(map, s, i), bit = (uint64_t)1 << (g & 63);
        if (__atomic_load_n(&checked[g >> 6], __ATOMIC_RELAXED) & bit) continue;
        const char *base = (const char *)__atomic_load_n(&map->shard_rows[s], __ATOMIC_RELAXED);
        const uint64_t word = __atomic_load_n(&touched[g >> 6], __ATOMIC_RELAXED);
        if (word & bit) {
            // The group whole: its rows in this shard (the table's last shard may end within it).
            const size_t first = (i >> map->group_shift) << map->group_shift, shard_end = map->rows - s * map->rows_per_shard;
            size_t end = first + group_rows;
            if (end > map->rows_per_shard) end = map->rows_per_shard;
            if (end > shard_end) end = shard_end;
            for (size_t j = first; j < end; j++)
                if (!row_matches(map, c, base, j, r - i + j)) return k;
            if (!(__atomic_fetch_or(&checked[g >> 6], bit, __ATOMIC_RELEASE) & bit)) ++*newly_checked;
            continue;
        }
        if (!row_matches(map, c, base, i, r)) return k;
        __atomic_store_n(&touched[g >> 6], word | bit, __ATOMIC_RELAXED);
    }
    return count;
}
