/* fpcheck: a static Linux userland program whose output is a pure function of the CPU's x87 and SSE
 * results. `frontends/tests/linux_boot.rs` compiles it on the host (gcc -static), runs it natively, puts
 * it in the guest's initramfs, runs it under Ferrite, and requires the two outputs to be identical.
 *
 * Each group runs one family of instructions over operands biased to edge values (zeros, denormals,
 * infinities, NaNs, huge and tiny numbers) in every rounding mode and precision, and folds every result
 * bit and every status flag (FSW, MXCSR) into an FNV-1a hash. The last group checks that the kernel keeps
 * x87 registers, FCW and MXCSR of several processes apart across context switches (XSAVE/XRSTOR). */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <immintrin.h>

static uint64_t rng = 0x243f6a8885a308d3ull;
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
static void report(const char *name, unsigned count) { printf("%-12s %6u %016llx\n", name, count, (unsigned long long)hash); }

/* An 80-bit value: 64-bit significand and sign/exponent. */
typedef struct { uint64_t m; uint16_t se; uint16_t pad[3]; } f80;

static f80 edge80(void) {
    f80 v = { 0, 0, { 0, 0, 0 } };
    uint64_t r = next();
    uint16_t sign = (r & 1) ? 0x8000 : 0;
    switch ((r >> 1) % 12) {
    case 0: v.m = 0; v.se = sign; break;                                          /* zero */
    case 1: v.m = next() >> 1; v.se = sign; break;                                /* denormal */
    case 2: v.m = 1ull << 63; v.se = sign | 0x7fff; break;                        /* infinity */
    case 3: v.m = (3ull << 62) | (next() >> 2); v.se = sign | 0x7fff; break;      /* QNaN */
    case 4: v.m = (1ull << 63) | (next() >> 2) | 1; v.se = sign | 0x7fff; break;  /* SNaN */
    case 5: v.m = (1ull << 63) | next(); v.se = sign | (0x7ffe - (next() % 4)); break; /* huge */
    case 6: v.m = (1ull << 63) | next(); v.se = sign | (1 + next() % 4); break;   /* tiny */
    case 7: v.m = (1ull << 63); v.se = sign | (0x3fff + (int)(next() % 9) - 4); break; /* powers of two */
    default: v.m = (1ull << 63) | next(); v.se = sign | (0x3fff + (int)(next() % 200) - 100); break;
    }
    return v;
}

static uint64_t edge64(void) {
    uint64_t r = next(), s = (r & 1) ? 1ull << 63 : 0, f = next() & ((1ull << 52) - 1);
    switch ((r >> 1) % 10) {
    case 0: return s;
    case 1: return s | (f ? f : 1);                                       /* denormal */
    case 2: return s | 0x7ff0000000000000ull;                              /* infinity */
    case 3: return s | 0x7ff8000000000000ull | (f >> 1);                   /* QNaN */
    case 4: return s | 0x7ff0000000000000ull | (f >> 1) | 1;               /* SNaN */
    case 5: return s | ((uint64_t)(0x7fe - next() % 4) << 52) | f;        /* huge */
    case 6: return s | ((uint64_t)(1 + next() % 4) << 52) | f;            /* tiny */
    default: return s | ((uint64_t)(0x3ff + (int)(next() % 120) - 60) << 52) | f;
    }
}

static uint32_t edge32(void) {
    uint32_t r = (uint32_t)next(), s = (r & 1) ? 1u << 31 : 0, f = (uint32_t)next() & ((1u << 23) - 1);
    switch ((r >> 1) % 10) {
    case 0: return s;
    case 1: return s | (f ? f : 1);
    case 2: return s | 0x7f800000u;
    case 3: return s | 0x7fc00000u | (f >> 1);
    case 4: return s | 0x7f800000u | (f >> 1) | 1;
    case 5: return s | ((uint32_t)(0xfe - next() % 4) << 23) | f;
    case 6: return s | ((uint32_t)(1 + next() % 4) << 23) | f;
    default: return s | ((uint32_t)(0x7f + (int)(next() % 60) - 30) << 23) | f;
    }
}

/* FCW: all exceptions masked, precision control pc (0 = 24, 2 = 53, 3 = 64 bits), rounding rc. */
static uint16_t fcw(int pc, int rc) { return (uint16_t)(0x007f | (pc << 8) | (rc << 10)); }
static const int PCS[3] = { 0, 2, 3 };

/* Two-operand x87 instructions: ST0 = a, ST1 = b; the result is ST0 after `insn`. */
#define X87_2(fn, insn)                                                                             \
    static void fn(const f80 *a, const f80 *b, uint16_t cw, f80 *r, uint16_t *sw) {                \
        __asm__ volatile("fninit\n\tfldcw %3\n\tfldt %2\n\tfldt %1\n\t" insn "\n\tfnstsw %0\n\t"  \
                         "fstpt %4\n\tfninit"                                                       \
                         : "=m"(*sw)                                                                \
                         : "m"(*a), "m"(*b), "m"(cw), "m"(*r)                                       \
                         : "memory", "rax", "rcx", "rdx");                                          \
    }
X87_2(x_add, "fadd %%st(1), %%st")
X87_2(x_sub, "fsub %%st(1), %%st")
X87_2(x_mul, "fmul %%st(1), %%st")
X87_2(x_div, "fdiv %%st(1), %%st")
X87_2(x_prem, "fprem")
X87_2(x_prem1, "fprem1")
X87_2(x_scale, "fscale")
X87_2(x_patan, "fpatan")
X87_2(x_yl2x, "fyl2x")
X87_2(x_yl2xp1, "fyl2xp1")
X87_2(x_com, "fcomi %%st(1), %%st\n\tpushf\n\tpop %%rax\n\tfldz\n\tand $0x45, %%eax\n\t"
             "mov %%eax, -8(%%rsp)\n\tfiaddl -8(%%rsp)")
X87_2(x_ucom, "fucom %%st(1)\n\tfld1")

/* One-operand x87 instructions on ST0 = a. */
#define X87_1(fn, insn) X87_2(fn, "fxch %%st(1)\n\tfstp %%st(0)\n\t" insn)
X87_1(x_sqrt, "fsqrt")
X87_1(x_sin, "fsin")
X87_1(x_cos, "fcos")
X87_1(x_tan, "fptan\n\tfstp %%st(0)")
X87_1(x_sincos, "fsincos\n\tfaddp")
X87_1(x_f2xm1, "f2xm1")
X87_1(x_rnd, "frndint")
X87_1(x_xtract, "fxtract\n\tfmulp")
X87_1(x_xam, "fxam\n\tfnstsw %%ax\n\tmovzwl %%ax, %%eax\n\tmov %%eax, -8(%%rsp)\n\tfiaddl -8(%%rsp)")
X87_1(x_fst32, "fstps -8(%%rsp)\n\tflds -8(%%rsp)")
X87_1(x_fst64, "fstpl -16(%%rsp)\n\tfldl -16(%%rsp)")
X87_1(x_fist16, "fistps -8(%%rsp)\n\tfilds -8(%%rsp)")
X87_1(x_fist32, "fistpl -8(%%rsp)\n\tfildl -8(%%rsp)")
X87_1(x_fist64, "fistpll -16(%%rsp)\n\tfildll -16(%%rsp)")
X87_1(x_fisttp, "fisttpll -16(%%rsp)\n\tfildll -16(%%rsp)")
X87_1(x_fbstp, "fbstp -16(%%rsp)\n\tfbld -16(%%rsp)")

typedef void (*x87op)(const f80 *, const f80 *, uint16_t, f80 *, uint16_t *);

static void run_x87(const char *name, const x87op *ops, unsigned nops, unsigned n, int domain) {
    unsigned count = 0;
    begin();
    for (unsigned i = 0; i < n; i++) {
        f80 a = edge80(), b = edge80();
        if (domain && (next() & 1)) {
            /* Keep some operands inside the transcendental instructions' ranges. */
            a.se = (a.se & 0x8000) | (uint16_t)(0x3ffe - next() % 3);
            a.m |= 1ull << 63;
        }
        for (unsigned o = 0; o < nops; o++)
            for (int p = 0; p < 3; p++)
                for (int rc = 0; rc < 4; rc++) {
                    f80 r = { 0, 0, { 0, 0, 0 } };
                    uint16_t sw = 0;
                    ops[o](&a, &b, fcw(PCS[p], rc), &r, &sw);
                    fold(&r, 10);
                    fold(&sw, 2);
                    count++;
                }
    }
    report(name, count);
}

/* SSE: `insn` with xmm0 = a, xmm1 = b under MXCSR m (exceptions masked); result xmm0 and the MXCSR after. */
#define SSE_2(fn, insn)                                                                             \
    static void fn(__m128i *a, __m128i b, uint32_t m, uint32_t *mo) {                              \
        uint32_t out;                                                                               \
        __asm__ volatile("ldmxcsr %3\n\tmovdqu %1, %%xmm0\n\tmovdqu %2, %%xmm1\n\t" insn "\n\t"   \
                         "movdqu %%xmm0, %0\n\tstmxcsr %4\n\tmovl $0x1f80, -4(%%rsp)\n\t"          \
                         "ldmxcsr -4(%%rsp)"                                                        \
                         : "=m"(*a)                                                                 \
                         : "m"(*a), "m"(b), "m"(m), "m"(out)                                        \
                         : "memory", "xmm0", "xmm1", "rax", "rcx", "rdx");                                  \
        *mo = out;                                                                                  \
    }
SSE_2(s_addsd, "addsd %%xmm1, %%xmm0")
SSE_2(s_subpd, "subpd %%xmm1, %%xmm0")
SSE_2(s_mulsd, "mulsd %%xmm1, %%xmm0")
SSE_2(s_divpd, "divpd %%xmm1, %%xmm0")
SSE_2(s_sqrtsd, "sqrtsd %%xmm1, %%xmm0")
SSE_2(s_minpd, "minpd %%xmm1, %%xmm0")
SSE_2(s_maxsd, "maxsd %%xmm1, %%xmm0")
SSE_2(s_addps, "addps %%xmm1, %%xmm0")
SSE_2(s_mulss, "mulss %%xmm1, %%xmm0")
SSE_2(s_divps, "divps %%xmm1, %%xmm0")
SSE_2(s_sqrtps, "sqrtps %%xmm1, %%xmm0")
SSE_2(s_rcpps, "rcpps %%xmm1, %%xmm0")
SSE_2(s_rsqrtss, "rsqrtss %%xmm1, %%xmm0")
SSE_2(s_cmppd, "cmpltpd %%xmm1, %%xmm0")
SSE_2(s_comisd, "comisd %%xmm1, %%xmm0\n\tpushf\n\tpop %%rax\n\tmovq %%rax, %%xmm1\n\tpaddq %%xmm1, %%xmm0")
SSE_2(s_cvtsd2ss, "cvtsd2ss %%xmm1, %%xmm0")
SSE_2(s_cvtss2sd, "cvtss2sd %%xmm1, %%xmm0")
SSE_2(s_cvtpd2dq, "cvtpd2dq %%xmm1, %%xmm0")
SSE_2(s_cvttps2dq, "cvttps2dq %%xmm1, %%xmm0")
SSE_2(s_cvtsd2si, "cvtsd2si %%xmm1, %%rax\n\tmovq %%rax, %%xmm0")
SSE_2(s_cvtdq2ps, "cvtdq2ps %%xmm1, %%xmm0")
SSE_2(s_haddpd, "haddpd %%xmm1, %%xmm0")
SSE_2(s_addsubps, "addsubps %%xmm1, %%xmm0")
SSE_2(s_roundsd, "roundsd $4, %%xmm1, %%xmm0")
SSE_2(s_roundps, "roundps $1, %%xmm1, %%xmm0")
SSE_2(s_dpps, "dpps $0xf1, %%xmm1, %%xmm0")
SSE_2(s_dppd, "dppd $0x33, %%xmm1, %%xmm0")
/* Integer SIMD, string compares, CRC32, AES and carry-less multiply (no MXCSR effect, but folded too). */
SSE_2(s_pshufb, "pshufb %%xmm1, %%xmm0")
SSE_2(s_pmaddubsw, "pmaddubsw %%xmm1, %%xmm0")
SSE_2(s_pmulld, "pmulld %%xmm1, %%xmm0")
SSE_2(s_pminsd, "pminsd %%xmm1, %%xmm0")
SSE_2(s_packusdw, "packusdw %%xmm1, %%xmm0")
SSE_2(s_mpsadbw, "mpsadbw $5, %%xmm1, %%xmm0")
SSE_2(s_pcmpistri, "pcmpistri $0x0c, %%xmm1, %%xmm0\n\tmovd %%ecx, %%xmm1\n\tpaddd %%xmm1, %%xmm0")
SSE_2(s_pcmpestrm, "mov $9, %%eax\n\tmov $13, %%edx\n\tpcmpestrm $0x44, %%xmm1, %%xmm0")
SSE_2(s_crc32, "movq %%xmm1, %%rax\n\tmovq %%xmm0, %%rcx\n\tcrc32q %%rax, %%rcx\n\tmovq %%rcx, %%xmm0")
SSE_2(s_aesenc, "aesenc %%xmm1, %%xmm0")
SSE_2(s_aesdeclast, "aesdeclast %%xmm1, %%xmm0")
SSE_2(s_pclmul, "pclmulqdq $0x11, %%xmm1, %%xmm0")

typedef void (*sseop)(__m128i *, __m128i, uint32_t, uint32_t *);

static __m128i edge128(int kind) {
    uint64_t q[2];
    if (kind == 2) {
        q[0] = edge64();
        q[1] = edge64();
    } else if (kind == 1) {
        uint32_t d[4] = { edge32(), edge32(), edge32(), edge32() };
        memcpy(q, d, 16);
    } else {
        q[0] = next();
        q[1] = next();
    }
    __m128i v;
    memcpy(&v, q, 16);
    return v;
}

static void run_sse(const char *name, const sseop *ops, unsigned nops, unsigned n, int kind) {
    unsigned count = 0;
    begin();
    for (unsigned i = 0; i < n; i++) {
        __m128i a0 = edge128(kind), b = edge128(kind);
        for (unsigned o = 0; o < nops; o++)
            for (int rc = 0; rc < 4; rc++)
                for (int dz = 0; dz < 4; dz++) {
                    /* rounding rc, FTZ (bit 15) and DAZ (bit 6) in all four combinations */
                    uint32_t m = 0x1f80 | ((uint32_t)rc << 13) | ((dz & 1) ? 0x8000 : 0) | ((dz & 2) ? 0x40 : 0);
                    __m128i a = a0;
                    uint32_t mo = 0;
                    ops[o](&a, b, m, &mo);
                    fold(&a, 16);
                    fold(&mo, 4);
                    count++;
                }
    }
    report(name, count);
}

/* Several processes keep live x87 registers, FCW and MXCSR across sched_yield: the kernel's state
 * save/restore must give each its own back. Each child checks its state after every yield. */
static int ctxsw_child(int id) {
    uint16_t cw = fcw(PCS[id % 3], id % 4), cw2 = 0;
    uint32_t mx = 0x1f80 | ((uint32_t)(id % 4) << 13) | (id & 1 ? 0x8040 : 0), mx2 = 0;
    for (int round = 0; round < 40; round++) {
        f80 v = edge80(), back = { 0, 0, { 0, 0, 0 } };
        __m128i x = edge128(0), y;
        __asm__ volatile("fninit\n\tfldcw %[cw]\n\tldmxcsr %[mx]\n\tfldt %[v]\n\tmovdqu %[x], %%xmm7\n\t"
                         "mov $24, %%eax\n\tsyscall\n\t" /* sched_yield */
                         "mov $24, %%eax\n\tsyscall\n\t"
                         "fstpt %[back]\n\tfnstcw %[cw2]\n\tstmxcsr %[mx2]\n\tmovdqu %%xmm7, %[y]\n\t"
                         "movl $0x1f80, -4(%%rsp)\n\tldmxcsr -4(%%rsp)\n\tfninit"
                         : [back] "=m"(back), [cw2] "=m"(cw2), [mx2] "=m"(mx2), [y] "=m"(y)
                         : [cw] "m"(cw), [mx] "m"(mx), [v] "m"(v), [x] "m"(x)
                         : "memory", "rax", "rcx", "r11", "xmm7");
        if (memcmp(&back, &v, 10) != 0 || cw2 != cw || mx2 != mx || memcmp(&x, &y, 16) != 0)
            return 1;
    }
    return 0;
}

static void run_ctxsw(void) {
    int bad = 0;
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            rng += (uint64_t)i * 0x9e3779b97f4a7c15ull;
            _exit(ctxsw_child(i));
        }
    }
    for (int i = 0; i < 4; i++) {
        int st = 0;
        if (pids[i] < 0 || waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad++;
    }
    printf("%-12s %s\n", "ctxsw", bad ? "FAILED" : "ok");
}

int main(int argc, char **argv) {
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 200;
    static const x87op arith[] = { x_add, x_sub, x_mul, x_div, x_prem, x_prem1, x_scale, x_com, x_ucom };
    static const x87op trans[] = { x_sqrt, x_sin, x_cos, x_tan, x_sincos, x_f2xm1, x_patan, x_yl2x, x_yl2xp1 };
    static const x87op conv[] = { x_rnd, x_xtract, x_xam, x_fst32, x_fst64, x_fist16, x_fist32, x_fist64,
                                  x_fisttp, x_fbstp };
    static const sseop pd[] = { s_addsd, s_subpd, s_mulsd, s_divpd, s_sqrtsd, s_minpd, s_maxsd, s_cmppd,
                                s_comisd, s_cvtsd2ss, s_cvtpd2dq, s_cvtsd2si, s_haddpd, s_roundsd, s_dppd };
    static const sseop ps[] = { s_addps, s_mulss, s_divps, s_sqrtps, s_rcpps, s_rsqrtss, s_cvtss2sd,
                                s_cvttps2dq, s_cvtdq2ps, s_addsubps, s_roundps, s_dpps };
    static const sseop in[] = { s_pshufb, s_pmaddubsw, s_pmulld, s_pminsd, s_packusdw, s_mpsadbw,
                                s_pcmpistri, s_pcmpestrm, s_crc32, s_aesenc, s_aesdeclast, s_pclmul };
    run_x87("x87-arith", arith, sizeof arith / sizeof *arith, n, 0);
    run_x87("x87-trans", trans, sizeof trans / sizeof *trans, n, 1);
    run_x87("x87-conv", conv, sizeof conv / sizeof *conv, n, 0);
    run_sse("sse-double", pd, sizeof pd / sizeof *pd, n, 2);
    run_sse("sse-single", ps, sizeof ps / sizeof *ps, n, 1);
    run_sse("sse-int", in, sizeof in / sizeof *in, n, 0);
    long double s;
    __asm__("fldpi\n\tfsin" : "=t"(s));
    printf("%-12s %La\n", "sin(pi)", s);
    run_ctxsw();
    return 0;
}
