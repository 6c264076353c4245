/* v3check: a static Linux userland program for the x86-64-v3 level (AVX, AVX2, FMA, F16C, BMI1/2, LZCNT,
 * MOVBE) whose output is a pure function of the CPU's results. `frontends/tests/linux_boot.rs` builds it
 * with `gcc -O2 -march=x86-64-v3 -static`, runs it on this host, puts it in the guest's initramfs, runs it
 * under Ferrite's JIT and requires the two outputs to be identical, line by line.
 *
 * Groups: loops the compiler vectorises with 256-bit integer and double operations (and contracts into
 * FMA), explicit AVX2/FMA/F16C intrinsics (gathers, permutes, masked moves, half-precision conversion),
 * glibc's string functions (which glibc points at its AVX2 versions when CPUID offers AVX2), and a
 * context-switch check: several processes keep distinct values in all sixteen YMM registers across
 * sched_yield(), which only works if the kernel saves and restores the XSAVE AVX component. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t hash;
static void fold(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        hash ^= b[i];
        hash *= 0x100000001b3ull;
    }
}
static void begin(void) { hash = 0xcbf29ce484222325ull; }
static void report(const char *name, unsigned count) {
    printf("%-12s %6u %016llx\n", name, count, (unsigned long long)hash);
}

#define N 1024
static int32_t ia[N], ib[N], ic[N];
static uint8_t ua[N], ub[N];
static double da[N], db[N], dc[N];
static float fa[N], fb[N];

/* An operand biased to edge values. */
static double edge_double(void) {
    static const double e[] = {0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e308, -1e308, 1e-308, 4.9e-324, 1.0 / 3.0};
    uint64_t r = next();
    if (r % 4 == 0) return e[(r >> 8) % (sizeof e / sizeof e[0])];
    return (double)(int64_t)(next() >> 20) / (double)((next() >> 40) + 1);
}

static void fill(void) {
    for (int i = 0; i < N; i++) {
        ia[i] = (int32_t)next();
        ib[i] = (int32_t)(next() % 1000) - 500;
        ua[i] = (uint8_t)next();
        ub[i] = (uint8_t)next();
        da[i] = edge_double();
        db[i] = edge_double();
        dc[i] = edge_double();
        fa[i] = (float)edge_double();
        fb[i] = (float)edge_double();
    }
}

/* Vectorised integer loops: add, multiply, shifts, min/max, compare-and-select, byte averages. */
static void int_loops(int rounds) {
    begin();
    for (int r = 0; r < rounds; r++) {
        fill();
        for (int i = 0; i < N; i++) ic[i] = ia[i] * ib[i] + (ia[i] >> 3) - (ib[i] << 2);
        fold(ic, sizeof ic);
        for (int i = 0; i < N; i++) ic[i] = ia[i] > ib[i] ? ia[i] - ib[i] : ib[i] ^ 0x5a5a;
        fold(ic, sizeof ic);
        for (int i = 0; i < N; i++) ic[i] = (ia[i] < ic[i] ? ia[i] : ic[i]) + (ib[i] > 7 ? ib[i] : 7);
        fold(ic, sizeof ic);
        for (int i = 0; i < N; i++) ua[i] = (uint8_t)((ua[i] + ub[i] + 1) >> 1);
        fold(ua, sizeof ua);
        int64_t s = 0;
        for (int i = 0; i < N; i++) s += (int64_t)ia[i] * ib[i];
        fold(&s, sizeof s);
        uint32_t x = 0;
        for (int i = 0; i < N; i++) x += (uint32_t)__builtin_popcount((unsigned)ia[i]) + (uint32_t)(ua[i] == ub[i]);
        fold(&x, sizeof x);
    }
    report("int-vec", rounds);
}

/* Vectorised double loops: a*b+c (contracted into FMA), division, square root, min/max, sums. */
static void double_loops(int rounds) {
    begin();
    for (int r = 0; r < rounds; r++) {
        fill();
        for (int i = 0; i < N; i++) dc[i] = da[i] * db[i] + dc[i];
        fold(dc, sizeof dc);
        for (int i = 0; i < N; i++) dc[i] = da[i] / (db[i] + 2.0) - dc[i] * 0.125;
        fold(dc, sizeof dc);
        for (int i = 0; i < N; i++) dc[i] = __builtin_sqrt(da[i] * da[i] + db[i] * db[i]);
        fold(dc, sizeof dc);
        for (int i = 0; i < N; i++) dc[i] = da[i] < db[i] ? da[i] : db[i];
        fold(dc, sizeof dc);
        for (int i = 0; i < N; i++) fa[i] = fa[i] * fb[i] - fa[i];
        fold(fa, sizeof fa);
        double s = 0;
        for (int i = 0; i < N; i++) s += da[i] * 1e-3;
        fold(&s, sizeof s);
    }
    report("double-vec", rounds);
}

/* Explicit AVX2/FMA/F16C operations. */
static void intrinsics(int rounds) {
    begin();
    for (int r = 0; r < rounds; r++) {
        fill();
        for (int i = 0; i + 8 <= N; i += 8) {
            __m256i a = _mm256_loadu_si256((const __m256i *)&ia[i]);
            __m256i b = _mm256_loadu_si256((const __m256i *)&ib[i]);
            __m256i idx = _mm256_and_si256(a, _mm256_set1_epi32(N - 1));
            __m256i g = _mm256_i32gather_epi32(ib, idx, 4);
            __m256i mg = _mm256_mask_i32gather_epi32(a, ia, idx, _mm256_cmpgt_epi32(b, _mm256_setzero_si256()), 4);
            __m256i p = _mm256_permutevar8x32_epi32(a, b);
            __m256i sh = _mm256_shuffle_epi8(a, b);
            __m256i sv = _mm256_sllv_epi32(a, _mm256_and_si256(b, _mm256_set1_epi32(31)));
            __m256i mx = _mm256_madd_epi16(a, b);
            __m256i sad = _mm256_sad_epu8(a, b);
            __m256i pk = _mm256_packs_epi32(a, b);
            __m256i t[] = {g, mg, p, sh, sv, mx, sad, pk, _mm256_permute4x64_epi64(a, 0x9c)};
            fold(t, sizeof t);
            int m = _mm256_movemask_epi8(_mm256_cmpeq_epi8(a, b));
            fold(&m, sizeof m);
        }
        for (int i = 0; i + 4 <= N; i += 4) {
            __m256d a = _mm256_loadu_pd(&da[i]), b = _mm256_loadu_pd(&db[i]), c = _mm256_loadu_pd(&dc[i]);
            __m256i idx = _mm256_cvtepi32_epi64(_mm_and_si128(_mm_loadu_si128((const __m128i *)&ia[i]),
                                                              _mm_set1_epi32(N - 1)));
            __m256d t[] = {_mm256_fmadd_pd(a, b, c), _mm256_fmsub_pd(a, b, c), _mm256_fnmadd_pd(a, b, c),
                           _mm256_fmaddsub_pd(a, b, c), _mm256_i64gather_pd(dc, idx, 8),
                           _mm256_maskload_pd(&db[i], _mm256_castpd_si256(a)), _mm256_hadd_pd(a, b),
                           _mm256_round_pd(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                           _mm256_blendv_pd(a, b, c), _mm256_permute2f128_pd(a, b, 0x21)};
            fold(t, sizeof t);
        }
        for (int i = 0; i + 8 <= N; i += 8) {
            __m256 a = _mm256_loadu_ps(&fa[i]), b = _mm256_loadu_ps(&fb[i]);
            __m128i h = _mm256_cvtps_ph(_mm256_fmadd_ps(a, b, a), _MM_FROUND_TO_NEAREST_INT);
            __m256 back = _mm256_cvtph_ps(h);
            __m256 t[] = {back, _mm256_rsqrt_ps(_mm256_set1_ps(4.0f)), _mm256_permutevar8x32_ps(a, _mm256_set1_epi32(i & 7)),
                          _mm256_dp_ps(a, b, 0xff), _mm256_cmp_ps(a, b, _CMP_LT_OQ)};
            fold(&h, sizeof h);
            fold(t, sizeof t);
        }
        /* BMI1/BMI2/LZCNT/MOVBE through the compiler's builtins. */
        for (int i = 0; i < N; i++) {
            uint64_t v = (uint64_t)(uint32_t)ia[i] << 32 | (uint32_t)ib[i];
            uint64_t t[] = {_pdep_u64(v, 0x0f0f0f0f0f0f0f0full), _pext_u64(v, 0xff00ff00ff00ff00ull),
                            _bzhi_u64(v, i & 63), _lzcnt_u64(v), _tzcnt_u64(v), _blsr_u64(v),
                            __builtin_bswap64(v), _andn_u64(v, 0x123456789abcdefull)};
            fold(t, sizeof t);
        }
    }
    report("intrinsics", rounds);
}

/* glibc's memcpy, memmove, memset, strlen, strchr, memchr, strcmp, memcmp over many sizes and
 * alignments (glibc selects its AVX2 or EVEX versions from CPUID). */
static void strings(int rounds) {
    static char src[8192], dst[8192];
    begin();
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < sizeof src; i++) src[i] = (char)(next() % 255 + 1);
        for (int k = 0; k < 200; k++) {
            size_t off = next() % 64, doff = next() % 64, len = next() % (k < 100 ? 300 : 4000);
            memcpy(dst + doff, src + off, len);
            fold(dst + doff, len);
            memmove(dst + doff + (next() % 32), dst + doff, len);
            fold(dst, sizeof dst);
            memset(dst + off, (int)(next() & 0xff), len / 2);
            fold(dst, sizeof dst);
            src[off + len] = 0;
            size_t l = strlen(src + off);
            const char *c = strchr(src + off, src[off + len / 2]);
            const char *m = memchr(src + off, 0x41, len);
            long t[] = {(long)l, c ? c - src : -1, m ? m - src : -1, strcmp(src + off, dst + doff) > 0,
                        memcmp(src + off, dst + doff, len / 3) > 0, (long)strnlen(src, off + 5)};
            fold(t, sizeof t);
            src[off + len] = (char)(next() % 255 + 1);
        }
    }
    report("strings", rounds);
}

/* Fills YMM0-15 with values derived from `seed`, yields `n` times, and checks every register still
 * holds its value. Returns 0 when all do. */
static int ymm_keeps(uint32_t seed, int n) {
    uint32_t in[16][8] __attribute__((aligned(32))), out[16][8] __attribute__((aligned(32)));
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < 8; k++) in[r][k] = seed * 0x01000193u + (uint32_t)(r * 8 + k) * 0x9e3779b9u;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        __asm__ volatile(
            "vmovdqa 0(%0), %%ymm0\n\tvmovdqa 32(%0), %%ymm1\n\tvmovdqa 64(%0), %%ymm2\n\t"
            "vmovdqa 96(%0), %%ymm3\n\tvmovdqa 128(%0), %%ymm4\n\tvmovdqa 160(%0), %%ymm5\n\t"
            "vmovdqa 192(%0), %%ymm6\n\tvmovdqa 224(%0), %%ymm7\n\tvmovdqa 256(%0), %%ymm8\n\t"
            "vmovdqa 288(%0), %%ymm9\n\tvmovdqa 320(%0), %%ymm10\n\tvmovdqa 352(%0), %%ymm11\n\t"
            "vmovdqa 384(%0), %%ymm12\n\tvmovdqa 416(%0), %%ymm13\n\tvmovdqa 448(%0), %%ymm14\n\t"
            "vmovdqa 480(%0), %%ymm15\n\t"
            /* sched_yield() straight through the system call, so no library code touches the registers. */
            "mov $24, %%eax\n\tsyscall\n\t"
            "vmovdqa %%ymm0, 0(%1)\n\tvmovdqa %%ymm1, 32(%1)\n\tvmovdqa %%ymm2, 64(%1)\n\t"
            "vmovdqa %%ymm3, 96(%1)\n\tvmovdqa %%ymm4, 128(%1)\n\tvmovdqa %%ymm5, 160(%1)\n\t"
            "vmovdqa %%ymm6, 192(%1)\n\tvmovdqa %%ymm7, 224(%1)\n\tvmovdqa %%ymm8, 256(%1)\n\t"
            "vmovdqa %%ymm9, 288(%1)\n\tvmovdqa %%ymm10, 320(%1)\n\tvmovdqa %%ymm11, 352(%1)\n\t"
            "vmovdqa %%ymm12, 384(%1)\n\tvmovdqa %%ymm13, 416(%1)\n\tvmovdqa %%ymm14, 448(%1)\n\t"
            "vmovdqa %%ymm15, 480(%1)\n\t"
            :
            : "r"(in), "r"(out)
            : "rax", "rcx", "r11", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
              "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
        if (memcmp(in, out, sizeof in) != 0) bad++;
    }
    return bad;
}

/* Four processes (pinned to one CPU by the guest's single CPU, or by sched_setaffinity here) that keep
 * distinct YMM values across many context switches. */
static void ymm_context_switch(void) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    sched_setaffinity(0, sizeof one, &one);
    pid_t kids[4];
    for (int p = 0; p < 4; p++) {
        kids[p] = fork();
        if (kids[p] == 0) _exit(ymm_keeps((uint32_t)p + 1, 2000) ? 1 : 0);
    }
    int bad = ymm_keeps(77, 2000);
    for (int p = 0; p < 4; p++) {
        int st = 0;
        waitpid(kids[p], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad++;
    }
    printf("ymm-ctxsw    %s\n", bad ? "CORRUPTED" : "ok");
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 4;
    __builtin_cpu_init();
    printf("cpu          avx=%d avx2=%d fma=%d f16c=%d bmi2=%d\n", __builtin_cpu_supports("avx") != 0,
           __builtin_cpu_supports("avx2") != 0, __builtin_cpu_supports("fma") != 0,
           __builtin_cpu_supports("f16c") != 0, __builtin_cpu_supports("bmi2") != 0);
    int_loops(rounds);
    double_loops(rounds);
    intrinsics(rounds);
    strings(rounds);
    ymm_context_switch();
    return 0;
}
