/* cpubench: the guest CPU benchmark of issue 13, a static Linux program with eight kernels whose output
 * is a pure function of the CPU's results (never of time, PIDs or memory size).
 *
 *     cpubench SCALE [KERNEL...]
 *
 * runs each named kernel (all eight when none is named) SCALE times over a fixed problem and prints, for
 * each one, three lines:
 *
 *     CPUBENCH-START <kernel>
 *     CPUBENCH-SUM <kernel> <16 hex digits>
 *     CPUBENCH-END <kernel>
 *
 * A host driver (benches/guest/cpu_bench.py) times each kernel between its START and END lines as they
 * appear on the guest's console, and frontends/tests/linux_cpubench.rs checks the SUM lines against the
 * same binary run natively. Built with `gcc -O2 -static` (the x86-64 baseline: SSE2, no AVX). The
 * kernels: sieve (byte array, inner loops of stores), crc32 (table driven, byte loads, shifts, XOR), matmul
 * (f64 multiply-add), qsort (glibc's qsort with a comparison called through a pointer), strhash (string
 * building, FNV-1a and an open-addressing table), chase (a pointer chase through a random cycle), syscall
 * (umask, a cheap system call, in a loop) and pagefault (fresh anonymous pages touched and unmapped). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t rng_state;
static void seed(uint64_t s) { rng_state = s ? s : 1; }
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

/* Sieve of Eratosthenes below 1,000,000: the count of primes and the sum of every 97th one. */
static uint64_t k_sieve(int scale) {
    enum { N = 1000000 };
    static unsigned char comp[N];
    uint64_t h = 0;
    for (int r = 0; r < scale; r++) {
        memset(comp, 0, sizeof comp);
        for (uint32_t i = 2; (uint64_t)i * i < N; i++)
            if (!comp[i])
                for (uint32_t j = i * i; j < N; j += i) comp[j] = 1;
        uint64_t count = 0, sum = 0;
        for (uint32_t i = 2; i < N; i++)
            if (!comp[i]) {
                count++;
                if (count % 97 == 0) sum += i;
            }
        h = mix(h, count);
        h = mix(h, sum);
    }
    return h;
}

/* CRC-32 (IEEE, reflected, table driven) of a 256 KiB buffer, four times per round. */
static uint64_t k_crc32(int scale) {
    enum { N = 256 * 1024 };
    static uint32_t table[256];
    static unsigned char buf[N];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & -(c & 1));
        table[i] = c;
    }
    seed(42);
    for (int i = 0; i < N; i++) buf[i] = (unsigned char)rnd();
    uint64_t h = 0;
    for (int r = 0; r < scale * 4; r++) {
        buf[r % N] ^= (unsigned char)r;
        uint32_t c = 0xffffffffu;
        for (int i = 0; i < N; i++) c = table[(c ^ buf[i]) & 0xff] ^ (c >> 8);
        h = mix(h, c ^ 0xffffffffu);
    }
    return h;
}

/* 96x96 double-precision matrix product, the result fed back as the next left operand. */
static uint64_t k_matmul(int scale) {
    enum { N = 96 };
    static double a[N][N], b[N][N], c[N][N];
    seed(7);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            a[i][j] = (double)(rnd() % 2001) / 1000.0 - 1.0;
            b[i][j] = (double)(rnd() % 2001) / 1000.0 - 1.0;
        }
    uint64_t h = 0;
    for (int r = 0; r < scale * 2; r++) {
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double s = 0.0;
                for (int k = 0; k < N; k++) s += a[i][k] * b[k][j];
                c[i][j] = s;
            }
        /* Scale back to keep magnitudes bounded, then feed back. */
        double norm = 0.0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) norm += c[i][j] * c[i][j];
        double f = 1.0 / (1.0 + norm / (N * N));
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) a[i][j] = c[i][j] * f;
        uint64_t bits;
        memcpy(&bits, &norm, sizeof bits);
        h = mix(h, bits);
    }
    return h;
}

static int cmp_u32(const void *x, const void *y) {
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

/* glibc qsort of 50,000 random 32-bit values; the sorted array is hashed (not the comparison count,
 * which depends on the algorithm glibc picks for the machine's memory size). */
static uint64_t k_qsort(int scale) {
    enum { N = 50000 };
    static uint32_t v[N];
    uint64_t h = 0;
    seed(99);
    for (int r = 0; r < scale; r++) {
        for (int i = 0; i < N; i++) v[i] = (uint32_t)rnd();
        qsort(v, N, sizeof v[0], cmp_u32);
        for (int i = 0; i < N; i += 61) h = mix(h, v[i]);
    }
    return h;
}

/* Strings built with snprintf, hashed with FNV-1a into an open-addressing table with memcmp on hits. */
static uint64_t k_strhash(int scale) {
    enum { N = 20000, SLOTS = 1 << 16 };
    static char keys[N][24];
    static int32_t slot[SLOTS];
    uint64_t h = 0;
    for (int r = 0; r < scale; r++) {
        for (int i = 0; i < SLOTS; i++) slot[i] = -1;
        uint64_t found = 0, probes = 0;
        for (int i = 0; i < N; i++) snprintf(keys[i], sizeof keys[i], "key-%d-%x", i * 7 + r, i ^ 0x5a5a);
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < N; i++) {
                const char *k = keys[i];
                size_t len = strlen(k);
                uint32_t f = 2166136261u;
                for (size_t j = 0; j < len; j++) f = (f ^ (unsigned char)k[j]) * 16777619u;
                uint32_t s = f & (SLOTS - 1);
                for (;;) {
                    probes++;
                    if (slot[s] < 0) {
                        slot[s] = i;
                        break;
                    }
                    if (strlen(keys[slot[s]]) == len && memcmp(keys[slot[s]], k, len) == 0) {
                        found++;
                        break;
                    }
                    s = (s + 1) & (SLOTS - 1);
                }
            }
        h = mix(h, found);
        h = mix(h, probes);
    }
    return h;
}

/* A pointer chase through one random cycle over 1 MiB of 64-byte nodes. */
static uint64_t k_chase(int scale) {
    enum { N = 16384 };
    struct node {
        struct node *next;
        uint64_t val;
        char pad[48];
    };
    static struct node nodes[N];
    static uint32_t perm[N];
    seed(1234);
    for (uint32_t i = 0; i < N; i++) perm[i] = i;
    for (uint32_t i = N - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rnd() % (i + 1));
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (uint32_t i = 0; i < N; i++) {
        nodes[perm[i]].next = &nodes[perm[(i + 1) % N]];
        nodes[perm[i]].val = perm[i] * 2654435761u;
    }
    struct node *p = &nodes[perm[0]];
    uint64_t sum = 0;
    for (long s = 0; s < (long)scale * 2000000; s++) {
        sum += p->val ^ (uint64_t)s;
        p = p->next;
    }
    return mix(sum, (uint64_t)(p - nodes));
}

/* umask in a loop: each call returns the mask the previous one set. */
static uint64_t k_syscall(int scale) {
    mode_t first = umask(0);
    uint64_t h = 0;
    for (long i = 1; i <= (long)scale * 20000; i++) h = h * 31 + umask((mode_t)(i & 0777));
    umask(first);
    return h;
}

/* 2 MiB of fresh anonymous memory: every page written (a fault each) and read back, then unmapped. */
static uint64_t k_pagefault(int scale) {
    enum { BYTES = 2 << 20, PAGE = 4096 };
    uint64_t h = 0;
    for (int r = 0; r < scale * 4; r++) {
        unsigned char *m = mmap(NULL, BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            perror("mmap");
            exit(1);
        }
        for (size_t o = 0; o < BYTES; o += PAGE) m[o + (o / PAGE) % PAGE] = (unsigned char)(o / PAGE + r);
        uint64_t s = 0;
        for (size_t o = 0; o < BYTES; o += PAGE) s += m[o + (o / PAGE) % PAGE] + m[o + 1];
        munmap(m, BYTES);
        h = mix(h, s);
    }
    return h;
}

static const struct {
    const char *name;
    uint64_t (*run)(int);
} KERNELS[] = {
    {"sieve", k_sieve},     {"crc32", k_crc32},     {"matmul", k_matmul},   {"qsort", k_qsort},
    {"strhash", k_strhash}, {"chase", k_chase},     {"syscall", k_syscall}, {"pagefault", k_pagefault},
};
enum { NKERNELS = sizeof KERNELS / sizeof KERNELS[0] };

static void run_one(int k, int scale) {
    printf("CPUBENCH-START %s\n", KERNELS[k].name);
    fflush(stdout);
    uint64_t h = KERNELS[k].run(scale);
    printf("CPUBENCH-SUM %s %016llx\n", KERNELS[k].name, (unsigned long long)h);
    printf("CPUBENCH-END %s\n", KERNELS[k].name);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 2 || atoi(argv[1]) < 1) {
        fprintf(stderr, "usage: cpubench SCALE [KERNEL...]\n");
        return 2;
    }
    int scale = atoi(argv[1]);
    if (argc == 2) {
        for (int k = 0; k < NKERNELS; k++) run_one(k, scale);
    } else {
        for (int a = 2; a < argc; a++) {
            int k = 0;
            while (k < NKERNELS && strcmp(KERNELS[k].name, argv[a]) != 0) k++;
            if (k == NKERNELS) {
                fprintf(stderr, "cpubench: no kernel named %s\n", argv[a]);
                return 2;
            }
            run_one(k, scale);
        }
    }
    printf("CPUBENCH-DONE\n");
    return 0;
}
