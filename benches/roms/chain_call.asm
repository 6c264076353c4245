; chain_call: block transitions the way glibc's qsort makes them (docs/PERF.md, the per-block cost).
; Enters long mode, fills a buffer with an LCG, then runs ITER iterations (default 20,000,000) of a
; loop of small blocks: a block that sets up two pointers and calls a comparison function through a
; register (`call r15`, as glibc's msort does `call rax`), the comparison on another page (glibc's
; `cmp_u32` of benches/guest/cpubench.c: two loads, CMP/SETB/CMP/SBB, RET), then TEST/JG to one of
; two blocks and a DEC/JNZ block back. 18 instructions and 5 block transitions an iteration, so
; its time is mostly what a transition costs. Prints the checksum (R12) as 16 hex digits and exits
; with status 1, so its output can be compared between engines.
; Assemble: nasm -f bin -I test-roms/src/roms/ [-DITER=n] -o chain_call.bin benches/roms/chain_call.asm
%include "common.inc"
%include "longmode.inc"

%ifndef ITER
%define ITER 20000000
%endif
BUF      equ LM_FREE

rom_start:
        INIT16
        LM_ENTER bench64

        bits 64
bench64:
        mov rbx, BUF
        mov ecx, 1024
        mov eax, 12345
.fill:  imul eax, eax, 1103515245
        add eax, 12345
        mov [rbx + rcx*4 - 4], eax
        dec ecx
        jnz .fill
        mov r15, cmp_u32
        xor r12d, r12d
        mov ecx, ITER
.loop:  mov eax, ecx
        and eax, 1022
        lea rdi, [rbx + rax*4]
        lea rsi, [rdi + 4]
        call r15
        test eax, eax
        jg .greater
        add r12, rcx
        jmp .next
.greater:
        sub r12, rax
        rol r12, 3
.next:  dec ecx
        jnz .loop
        mov rax, r12
        call hex64
        mov al, 10
        out DBG_PORT, al
        call finish64

        align 4096
cmp_u32:
        mov r8d, [rdi]
        mov r9d, [rsi]
        xor eax, eax
        cmp r9d, r8d
        setb al
        cmp r8d, r9d
        sbb eax, 0
        ret

%include "reset.inc"
