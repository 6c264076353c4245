/* randio: random direct I/O on a block device, for the in-guest disk benchmark (benches/guest/disk_bench.py).
 *
 *   randio DEVICE r|w COUNT [BLOCK] [SEED]
 *
 * COUNT reads (r) or writes (w) of BLOCK bytes (default 4096) at block-aligned offsets drawn from a
 * xorshift64 sequence (SEED, default 1) over the whole device, with O_DIRECT, so every one reaches the
 * disk controller; no fsync. Prints "randio: COUNT x BLOCK bytes, r|w, ok" and exits 0, or a one-line
 * error and exits 1. Built static at bench time (gcc -O2 -static) and put in the initramfs. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4 || (argv[2][0] != 'r' && argv[2][0] != 'w')) {
        fprintf(stderr, "usage: randio DEVICE r|w COUNT [BLOCK] [SEED]\n");
        return 1;
    }
    int writing = argv[2][0] == 'w';
    long count = atol(argv[3]);
    long block = argc > 4 ? atol(argv[4]) : 4096;
    uint64_t x = argc > 5 ? strtoull(argv[5], NULL, 0) : 1;
    if (block <= 0 || block % 512 != 0 || count < 0 || x == 0) {
        fprintf(stderr, "randio: bad block size, count or seed\n");
        return 1;
    }
    int fd = open(argv[1], (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        perror("randio: open");
        return 1;
    }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size < (uint64_t)block) {
        fprintf(stderr, "randio: cannot get the device size\n");
        return 1;
    }
    uint64_t blocks = size / (uint64_t)block;
    void *buf;
    if (posix_memalign(&buf, 4096, (size_t)block) != 0) {
        fprintf(stderr, "randio: out of memory\n");
        return 1;
    }
    memset(buf, 0x5A, (size_t)block);
    for (long i = 0; i < count; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        off_t off = (off_t)((x % blocks) * (uint64_t)block);
        ssize_t n = writing ? pwrite(fd, buf, (size_t)block, off) : pread(fd, buf, (size_t)block, off);
        if (n != block) {
            fprintf(stderr, "randio: %s at %lld returned %zd\n", writing ? "pwrite" : "pread", (long long)off, n);
            return 1;
        }
    }
    printf("randio: %ld x %ld bytes, %s, ok\n", count, block, writing ? "w" : "r");
    return 0;
}
