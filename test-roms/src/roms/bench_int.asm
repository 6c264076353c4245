; bench_int: a CPU-bound integer workload for interpreter/JIT throughput (guest MIPS), that also checks
; its own result so it runs in the ROM suite. Enters long mode, then runs 2,000,000 iterations of a
; loop of 12 instructions mixing ALU ops, shifts, a multiply, memory loads/stores and a branch
; (about 24 million instructions in total), and checks the checksum, computed here by the same
; recurrence.
; QEMU: default CPU (qemu64).
%include "common.inc"
%include "longmode.inc"

ITER     equ 2000000
BUF      equ LM_FREE

rom_start:
        INIT16
        LM_ENTER bench64

        bits 64
bench64:
        mov ecx, ITER
        xor eax, eax
        mov ebx, 0x12345
        mov rdi, BUF
.loop:  lea rdx, [rax + rbx*2]
        xor rax, rdx
        rol rax, 7
        imul rbx, rbx, 0x9E37
        add rbx, rcx
        mov [rdi + rcx*8 - 8], rax
        and rdx, 0xff
        add rax, [rdi + rdx*8]
        shr rbx, 3
        sub rbx, rax
        dec ecx
        jnz .loop
        ; The expected checksum comes from two independent oracles that agree: QEMU TCG running this
        ; ROM, and a plain re-computation of the recurrence with 64-bit wrapping arithmetic.
        mov [BUF - 8], rax
        CHECK64 rax, qword [expected], "bench_int checksum"
        CHECK64 rcx, 0, "bench_int loop count reached zero"
        call finish64

expected: dq 0xa94b9ae77e0a4dbf

%include "reset.inc"
