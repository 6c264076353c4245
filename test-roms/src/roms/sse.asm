; sse: MMX and SSE..SSE4.2, AES-NI, PCLMULQDQ from 64-bit mode.
; qemu-args: -cpu max
;
; Enables SSE the way an OS does (CR0.EM = 0, CR0.MP = 1, CR0.TS = 0, CR4.OSFXSR and CR4.OSXMMEXCPT),
; then runs a floating-point workload (packed sum of 1..8 with ADDPS/HADDPS, SQRTSD, the integer
; indefinite of CVTTSD2SI, masked divide by zero: infinity and MXCSR.ZE, rounding control with
; CVTSD2SI, DAZ on a denormal) and an integer one (PADDUSB saturation, PMADDWD dot product, PSHUFB byte
; reversal, PCMPISTRI as strlen, MMX PADDW, PMOVZXBW, PTEST), AES (FIPS-197 C.1 first round) and
; PCLMULQDQ, and the exceptions: #XM for an unmasked divide by zero (destination unchanged), #UD for
; it when CR4.OSXMMEXCPT = 0, #GP for a misaligned MOVAPS, #GP for LDMXCSR with reserved bits, #UD with
; CR4.OSFXSR = 0, #NM with CR0.TS = 1.
; SDM Vol. 1 ch. 9-12 (MMX, SSE..SSE4), Vol. 3A 13.1.3-13.1.4 (CR0/CR4 setup for SSE), 6.15 (#XM).
%include "common.inc"
%include "longmode.inc"
        cpu any

MX_DEFAULT equ 0x1F80
BUF        equ LM_FREE

; CHECKX xmm, lo, hi, "name": compare both halves of an XMM register.
%macro CHECKX 4
        movq rax, %1
        CHECK64 rax, %2, {%4, " (low)"}
        pextrq rax, %1, 1
        CHECK64 rax, %3, {%4, " (high)"}
%endmacro

; CHECKVEC vec, "name": LM_EXC_VEC after a TRY.
%macro CHECKVEC 2
        mov rax, [LM_EXC_VEC]
        CHECK64 rax, %1, %2
%endmacro

        bits 16
rom_start:
        INIT16
        LM_ENTER main64

        bits 64
main64:
        ; CPUID: the features this ROM uses.
        mov eax, 1
        cpuid
        mov eax, edx
        and eax, (1 << 23) | (1 << 25) | (1 << 26)
        CHECK64 rax, (1 << 23) | (1 << 25) | (1 << 26), "CPUID.1:EDX MMX SSE SSE2"
        mov eax, ecx
        and eax, (1 << 0) | (1 << 1) | (1 << 9) | (1 << 19) | (1 << 20) | (1 << 25)
        CHECK64 rax, (1 << 0) | (1 << 1) | (1 << 9) | (1 << 19) | (1 << 20) | (1 << 25), "CPUID.1:ECX SSE3 PCLMUL SSSE3 SSE4.1 SSE4.2 AES"

        ; SSE off (CR4.OSFXSR = 0): #UD.
        TRY
        xorps xmm0, xmm0
        ENDTRY
        CHECKVEC 6, "SSE with CR4.OSFXSR=0: #UD"

        call sse_on

        ; ------------------------------------------------ floating point
        movaps xmm0, [f_1234]
        addps xmm0, [f_5678]
        haddps xmm0, xmm0
        haddps xmm0, xmm0
        movd eax, xmm0
        CHECK64 rax, 0x42100000, "addps+haddps: 1+..+8 = 36.0"
        movsd xmm1, [d_two]
        sqrtsd xmm1, xmm1
        movq rax, xmm1
        CHECK64 rax, 0x3FF6A09E667F3BCD, "sqrtsd 2.0"
        call mx_reset
        mov rax, 0x7FF0000000000000
        movq xmm2, rax
        cvttsd2si rax, xmm2
        CHECK64 rax, 0x8000000000000000, "cvttsd2si +inf: integer indefinite"
        stmxcsr [BUF]
        mov eax, [BUF]
        CHECK64 rax, MX_DEFAULT | 1, "cvttsd2si +inf: MXCSR.IE"
        call mx_reset
        movss xmm3, [f_1234]
        xorps xmm4, xmm4
        divss xmm3, xmm4
        movd eax, xmm3
        CHECK64 rax, 0x7F800000, "divss 1/0 masked: +inf"
        stmxcsr [BUF]
        mov eax, [BUF]
        CHECK64 rax, MX_DEFAULT | 4, "divss 1/0 masked: MXCSR.ZE"
        ; Rounding control: 2.5 -> 2 (nearest), 3 (up).
        movsd xmm5, [d_2p5]
        cvtsd2si eax, xmm5
        CHECK64 rax, 2, "cvtsd2si 2.5 round-to-nearest-even"
        mov dword [BUF], MX_DEFAULT | (2 << 13)
        ldmxcsr [BUF]
        cvtsd2si eax, xmm5
        CHECK64 rax, 3, "cvtsd2si 2.5 round up"
        ; DAZ: a denormal operand reads as zero.
        mov dword [BUF], MX_DEFAULT | 0x40
        ldmxcsr [BUF]
        mov eax, 1
        movd xmm6, eax
        xorps xmm7, xmm7
        addss xmm6, xmm7
        movd eax, xmm6
        CHECK64 rax, 0, "addss denormal with DAZ = +0"
        call mx_reset

%ifndef QEMU_QUIRKS
        ; (QEMU TCG never raises SIMD floating-point exceptions: it sets the flags and stores the masked
        ; result. SDM Vol. 1 11.5.1/11.5.3: an unmasked exception raises #XM (CR4.OSXMMEXCPT = 1) or #UD
        ; (= 0) and leaves the destination unchanged.)
        ; Unmasked ZE: #XM, destination unchanged, ZE set.
        mov dword [BUF], MX_DEFAULT & ~(1 << 9)
        ldmxcsr [BUF]
        movss xmm3, [f_1234]
        TRY
        divss xmm3, xmm4
        ENDTRY
        CHECKVEC 19, "divss 1/0 unmasked: #XM"
        movd eax, xmm3
        CHECK64 rax, 0x3F800000, "divss 1/0 unmasked: destination unchanged"
        stmxcsr [BUF]
        mov eax, [BUF]
        and eax, 0x3F
        CHECK64 rax, 4, "divss 1/0 unmasked: MXCSR.ZE"
        ; ... and #UD when CR4.OSXMMEXCPT = 0.
        mov rax, cr4
        btr rax, 10
        mov cr4, rax
        TRY
        divss xmm3, xmm4
        ENDTRY
        CHECKVEC 6, "divss 1/0 unmasked, OSXMMEXCPT=0: #UD"
%endif
        call sse_on
        call mx_reset

%ifndef QEMU_QUIRKS
        ; (QEMU TCG ignores reserved MXCSR bits; SDM Vol. 2A LDMXCSR: #GP(0) for reserved bits.)
        ; LDMXCSR reserved bit: #GP(0).
        mov dword [BUF], 0x10000 | MX_DEFAULT
        TRY
        ldmxcsr [BUF]
        ENDTRY
        CHECKVEC 13, "ldmxcsr reserved bit: #GP"
%endif
        ; Misaligned MOVAPS: #GP(0); MOVUPS is fine.
        TRY
        movaps xmm0, [BUF + 4]
        ENDTRY
        CHECKVEC 13, "movaps misaligned: #GP"
        TRY
        movups xmm0, [BUF + 4]
        ENDTRY
        CHECKVEC -1, "movups misaligned: no fault"

        ; ------------------------------------------------ integer SIMD
        movdqa xmm0, [i_sat_a]
        paddusb xmm0, [i_sat_b]
        CHECKX xmm0, 0xFFFFFFFFFFFFFF30, 0x0000000000000000, "paddusb saturates"
        movdqa xmm1, [i_words]
        pmaddwd xmm1, [i_words]
        movdqa xmm2, xmm1
        psrldq xmm2, 8
        paddd xmm1, xmm2
        pshufd xmm2, xmm1, 0x55
        paddd xmm1, xmm2
        movd eax, xmm1
        CHECK64 rax, 204, "pmaddwd dot product 1..8"
        movdqa xmm3, [i_bytes]
        pshufb xmm3, [i_rev]
        CHECKX xmm3, 0x08090A0B0C0D0E0F, 0x0001020304050607, "pshufb reverse"
        pxor xmm0, xmm0
        pcmpistri xmm0, [s_hello], 0x08
        CHECK64 rcx, 5, "pcmpistri strlen(hello)"
        pmovzxbw xmm4, [i_bytes]
        CHECKX xmm4, 0x0003000200010000, 0x0007000600050004, "pmovzxbw"
        ptest xmm4, [i_sat_a]
        setz al
        movzx eax, al
        CHECK64 rax, 0, "ptest: ZF clear"
        ; MMX
        mov rax, 0x0001000200037FFF
        movq mm0, rax
        paddw mm0, mm0
        movq rax, mm0
        CHECK64 rax, 0x000200040006FFFE, "mmx paddw"
        mov rax, 0x7FF0800000050001
        movq mm0, rax
        mov rax, 0x00208000FFFB0001
        movq mm1, rax
        paddsw mm0, mm1
        movq rax, mm0
        CHECK64 rax, 0x7FFF800000000002, "mmx paddsw saturates"

        ; ------------------------------------------------ AES, PCLMULQDQ
        movdqa xmm0, [aes_state]
        aesenc xmm0, [aes_key]
        CHECKX xmm0, 0x68CE5A85E810D889, 0xE48F12CBD843182D, "aesenc FIPS-197 round 1"
        mov rax, 3
        movq xmm1, rax
        pclmulqdq xmm1, xmm1, 0
        CHECKX xmm1, 5, 0, "pclmulqdq (x+1)^2"
        mov eax, 0xFFFFFFFF
        crc32 eax, byte [s_hello]
        mov ebx, eax
        CHECK64 rbx, 0x469D6703, "crc32 byte (CRC32C, no final xor)"

        ; CR0.TS: #NM.
        clts
        mov rax, cr0
        bts rax, 3
        mov cr0, rax
        TRY
        addps xmm0, xmm0
        ENDTRY
        CHECKVEC 7, "addps with CR0.TS: #NM"
        clts

        jmp finish64

; sse_on: CR0.EM = 0, MP = 1, TS = 0; CR4.OSFXSR = OSXMMEXCPT = 1.
sse_on:
        mov rax, cr0
        and rax, ~((1 << 2) | (1 << 3))
        or rax, 1 << 1
        mov cr0, rax
        mov rax, cr4
        or rax, (1 << 9) | (1 << 10)
        mov cr4, rax
        ret

mx_reset:
        mov dword [BUF], MX_DEFAULT
        ldmxcsr [BUF]
        ret

        align 16
f_1234:  dd 1.0, 2.0, 3.0, 4.0
f_5678:  dd 5.0, 6.0, 7.0, 8.0
d_two:   dq 2.0, 0
d_2p5:   dq 2.5, 0
i_sat_a: db 0x10, 0xF0, 0xFF, 0x80, 0x80, 0x80, 0x80, 0x80, 0, 0, 0, 0, 0, 0, 0, 0
i_sat_b: db 0x20, 0x20, 0x01, 0x80, 0x7F, 0x80, 0x80, 0x80, 0, 0, 0, 0, 0, 0, 0, 0
i_words: dw 1, 2, 3, 4, 5, 6, 7, 8
i_bytes: db 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
i_rev:   db 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0
s_hello: db "hello", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
aes_state: db 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0
aes_key:   db 0xd6, 0xaa, 0x74, 0xfd, 0xd2, 0xaf, 0x72, 0xfa, 0xda, 0xa6, 0x78, 0xf1, 0xd6, 0xab, 0x76, 0xfe

%include "reset.inc"
