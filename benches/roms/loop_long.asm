; loop_long: the CPU-bound long-mode loop the JIT is measured on beside QEMU TCG (docs/PERF.md).
; Enters long mode, then runs ITER iterations (default 125,000,000) of a 14-instruction loop: integer
; ALU, a rotate and two shifts, IMUL, a load and a store into a 64 KiB buffer, and a conditional
; branch; about 1.75 billion instructions. Prints the checksum (RAX) as 16 hex digits and exits with
; status 1 (no failures), so its output can be compared between engines and QEMU.
; Assemble: nasm -f bin -I test-roms/src/roms/ [-DITER=n] -o loop_long.bin benches/roms/loop_long.asm
%include "common.inc"
%include "longmode.inc"

%ifndef ITER
%define ITER 125000000
%endif
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
        mov esi, ecx
        and esi, 0x1fff
        mov [rdi + rsi*8], rax
        and rdx, 0xff
        add rax, [rdi + rdx*8]
        shr rbx, 3
        sub rbx, rax
        dec ecx
        jnz .loop
        call hex64
        mov al, 10
        out DBG_PORT, al
        call finish64

%include "reset.inc"
