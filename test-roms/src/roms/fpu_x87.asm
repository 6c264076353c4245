; fpu_x87: the x87 FPU and FP state management from 64-bit mode.
; qemu-args: -cpu max,vendor=GenuineIntel
;
; Covers: enabling the FPU (CR0.EM=0, MP=1, NE=1; CR4.OSFXSR/OSXSAVE), CPUID.1 FPU/FXSR/XSAVE and
; OSXSAVE following CR4; FNINIT defaults; FILD/FIST(P)/FISTTP, FLD/FST(P) m32/m64/m80, constants
; (FLD1/FLDZ/FLDPI), FADD/FSUB/FMUL/FDIV(P/R) and integer forms, FSQRT, FCHS/FABS, FXCH, rounding
; control (nearest/down/up/chop) on FRNDINT and FIST, precision control (PC=24 on 1/3), FBLD/FBSTP,
; FCOM/FUCOM condition codes with FNSTSW AX, FCOMI/FUCOMI and FCMOVcc, FXAM classes, FTST,
; exact transcendental cases (FSIN/FCOS of 0, FPATAN(0,1), F2XM1(0), FYL2X(8,1) = 3, FSCALE,
; FXTRACT) and FPREM's quotient bits, masked responses (1/0 = +inf with ZE, sqrt(-1) = indefinite,
; stack underflow with SF and C1 = 0, integer indefinite), #MF at the next waiting instruction with
; an unmasked zero divide, #NM with CR0.TS, FNSTENV/FLDENV, FNSAVE/FRSTOR, FXSAVE/FXRSTOR, XSETBV/
; XGETBV, XSAVE/XRSTOR (XSTATE_BV), EMMS.
; SDM Vol. 1 ch. 8 (x87 FPU), 10.5 (FXSAVE area), 13 (XSAVE); Vol. 2 instruction pages; Vol. 3 2.5
; (CR0/CR4), 9.2 (FPU initialisation).
%include "common.inc"
%include "longmode.inc"

BUF   equ LM_FREE               ; 0x20000: scratch data
XBUF  equ LM_FREE + 0x1000      ; 64-byte aligned XSAVE / FXSAVE area

; FSW_CC mask, expected, "name": FNSTSW AX, check (AX & mask).
%macro FSW_CC 3
        fnstsw ax
        and eax, %1
        CHECK64 rax, %2, %3
%endmacro

; ST0_Q expected, "name": ST(0) rounded to double, as a qword (pops).
%macro ST0_Q 2
        fstp qword [BUF]
        CHECK64 [BUF], %1, %2
%endmacro

; CHECKF_BIT bit, expected, "name": one RFLAGS bit right after an instruction; preserves all.
%macro CHECKF_BIT 3
        pushfq
        push rbx
        mov rbx, [rsp + 8]
        shr rbx, %1
        and rbx, 1
        CHECK64 rbx, %2, %3
        pop rbx
        popfq
%endmacro
%macro CHECKF_C 2
        CHECKF_BIT 0, %1, %2
%endmacro
%macro CHECKF_P 2
        CHECKF_BIT 2, %1, %2
%endmacro
%macro CHECKF_Z 2
        CHECKF_BIT 6, %1, %2
%endmacro

        cpu all                         ; XSETBV/XGETBV/XSAVE/XRSTOR

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
main64:
        ; ------------------------------------------------ enabling
        mov eax, 1
        cpuid
        mov eax, edx
        and eax, (1 << 0) | (1 << 24)
        CHECK64 rax, (1 << 0) | (1 << 24), "CPUID.1:EDX FPU and FXSR"
        mov eax, ecx
        and eax, 1 << 26
        CHECK64 rax, 1 << 26, "CPUID.1:ECX XSAVE"
        mov rax, cr0
        and rax, ~(1 << 2)              ; EM = 0
        or rax, (1 << 1) | (1 << 5)     ; MP, NE
        and rax, ~(1 << 3)              ; TS = 0
        mov cr0, rax
        mov rax, cr4
        or rax, (1 << 9) | (1 << 18)    ; OSFXSR, OSXSAVE
        mov cr4, rax
        mov eax, 1
        cpuid
        and ecx, 1 << 27
        CHECK64 rcx, 1 << 27, "CPUID.1:ECX.OSXSAVE follows CR4"

        fninit
        fnstcw [BUF]
        CHECK64 [BUF], 0x037F, "FNINIT: FCW"
        xor eax, eax
        fnstsw ax
        CHECK64 rax, 0, "FNINIT: FSW"

        ; ------------------------------------------------ integer and double arithmetic
        mov dword [BUF], 3
        mov dword [BUF + 4], 4
        fild dword [BUF]
        fild dword [BUF + 4]
        fmulp                           ; 12
        fiadd dword [BUF]               ; 15
        fistp dword [BUF + 8]
        CHECK64 [BUF + 8], 15, "fild/fmulp/fiadd/fistp"
        fld1
        fld1
        faddp                           ; 2
        fsqrt
        fmul st0, st0                   ; 2 (rounded)
        fld1
        fadd st0, st0
        fsubp st1, st0                  ; sqrt(2)^2 - 2 in 64-bit precision
        fabs
        ST0_Q 0x3C00000000000000, "sqrt(2)^2 - 2 = 2^-63"
        fldpi
        ST0_Q 0x400921FB54442D18, "fldpi as double"
        mov rax, 0x4004000000000000     ; 2.5
        mov [BUF], rax
        fld qword [BUF]
        fchs
        fdivr qword [BUF]               ; 2.5 / -2.5
        ST0_Q 0xBFF0000000000000, "fdivr m64: -1"
        fld1
        fldz
        fxch
        fsub st0, st1                   ; 1 - 0, ST1 = 0
        ST0_Q 0x3FF0000000000000, "fxch/fsub"
        fstp st0

        ; ------------------------------------------------ rounding and precision control
%macro RND 3
        fldcw [cw_rc + %1 * 2]
        fld qword [two_point_five]
        fchs
        frndint
        ST0_Q %2, %3
%endmacro
        RND 0, 0xC000000000000000, "RC nearest: round(-2.5) = -2"
        RND 1, 0xC008000000000000, "RC down: round(-2.5) = -3"
        RND 2, 0xC000000000000000, "RC up: round(-2.5) = -2"
        RND 3, 0xC000000000000000, "RC chop: round(-2.5) = -2"
        fldcw [cw_rc + 3 * 2]
        fld qword [two_point_seven]
        fistp dword [BUF]
        mov eax, [BUF]
        CHECK64 rax, 2, "RC chop: fistp 2.7 = 2"
        fldcw [cw_rc]
        fld qword [two_point_seven]
        fisttp dword [BUF]
        mov eax, [BUF]
        CHECK64 rax, 2, "fisttp truncates whatever RC says"
        fldcw [cw_pc24]
        fld1
        mov dword [BUF], 3
        fidiv dword [BUF]
        fstp tword [BUF]
        CHECK64 [BUF], 0xAAAAAB0000000000, "PC = 24 bits: 1/3 significand"
        fldcw [cw_rc]

        ; ------------------------------------------------ BCD
        mov qword [BUF], 12345
        fild qword [BUF]
        fchs
        fbstp tword [BUF + 16]
        CHECK64 [BUF + 16], 0x12345, "fbstp: digits"
        movzx eax, byte [BUF + 25]
        CHECK64 rax, 0x80, "fbstp: sign byte"
        fbld tword [BUF + 16]
        fistp qword [BUF]
        CHECK64 [BUF], -12345, "fbld"

        ; ------------------------------------------------ comparisons
        fld1
        fldz                            ; ST0 = 0, ST1 = 1
        fcom st1
        FSW_CC 0x4500, 0x0100, "fcom 0 < 1: C0"
        fucom st0
        FSW_CC 0x4500, 0x4000, "fucom 0 = 0: C3"
        fcomi st0, st1
        CHECKF_C 1, "fcomi 0 < 1: CF"
        fcmovb st0, st1                 ; CF = 1: ST0 = 1
        fucomip st0, st1
        CHECKF_Z 1, "fucomip 1 = 1: ZF"
        ftst
        FSW_CC 0x4500, 0x0000, "ftst 1 > 0"
        fstp st0
        fld qword [qnan]
        fld1
        fucomi st0, st1
        CHECKF_P 1, "fucomi with a QNaN: unordered (PF)"
        fcompp
        FSW_CC 0x4541, 0x4501, "fcompp with a QNaN: unordered, IE"
        fnclex

        ; ------------------------------------------------ FXAM
        fldz
        fxam
        FSW_CC 0x4700, 0x4000, "fxam +0: zero"
        fchs
        fxam
        FSW_CC 0x4700, 0x4200, "fxam -0: zero, C1 = sign"
        fstp st0
        fld qword [qnan]
        fxam
        FSW_CC 0x4700, 0x0100, "fxam NaN"
        fstp st0
        fxam
        FSW_CC 0x4500, 0x4100, "fxam empty"

        ; ------------------------------------------------ exact transcendental cases
        fldz
        fsin
        ST0_Q 0, "fsin 0"
        fldz
        fcos
        ST0_Q 0x3FF0000000000000, "fcos 0"
        fldz
        fld1
        fpatan                          ; atan(0 / 1)
        ST0_Q 0, "fpatan(0, 1)"
        fldz
        f2xm1
        ST0_Q 0, "f2xm1 0"
        fld1
        mov dword [BUF], 8
        fild dword [BUF]
        fyl2x                           ; 1 * log2(8)
        ST0_Q 0x4008000000000000, "fyl2x: log2 8 = 3"
        mov dword [BUF], 10
        fild dword [BUF]
        fld1
        fscale                          ; 1 * 2^10
        ST0_Q 0x4090000000000000, "fscale 1, 10 = 1024"
        fstp st0
        mov dword [BUF], 48
        fild dword [BUF]
        fxtract                         ; ST0 = 1.5, ST1 = 5
        ST0_Q 0x3FF8000000000000, "fxtract: significand"
        ST0_Q 0x4014000000000000, "fxtract: exponent"
        mov dword [BUF], 3
        fild dword [BUF]
        mov dword [BUF], 10
        fild dword [BUF]
        fprem                           ; 10 rem 3 = 1, q = 3
        FSW_CC 0x4700, 0x4200, "fprem: complete, quotient bits Q1 (C3) Q0 (C1)"
        ST0_Q 0x3FF0000000000000, "fprem: 10 rem 3"
        fstp st0

        ; ------------------------------------------------ masked responses
        fnclex                          ; the flags are sticky: start clean
        fld1
        fldz
        fdivp st1, st0
        FSW_CC 0x3F, 0x04, "1/0: ZE"
        ST0_Q 0x7FF0000000000000, "1/0 = +inf"
        fnclex
        fld1
        fchs
        fsqrt
        FSW_CC 0x3F, 0x01, "sqrt(-1): IE"
        ST0_Q 0xFFF8000000000000, "sqrt(-1) = indefinite"
        fnclex
%ifndef QEMU_QUIRKS
        ; QEMU TCG does not detect stack faults in arithmetic instructions.
        fadd st0, st1                   ; empty stack
        FSW_CC 0x0241, 0x0041, "stack underflow: IE, SF, C1 = 0"
        ST0_Q 0xFFF8000000000000, "stack underflow: ST0 = indefinite"
%endif
        fnclex
        fld qword [big]
        fistp word [BUF]
        movzx eax, word [BUF]
        CHECK64 rax, 0x8000, "fistp m16 out of range: integer indefinite"
        fnclex

        ; ------------------------------------------------ #MF and #NM
        fldcw [cw_ze]                   ; zero divide unmasked
        fld1
        fldz
        fdivp st1, st0                  ; no store, no pop, ES
        FSW_CC 0x80, 0x80, "unmasked ZE: ES"
        TRY
        fwait
        ENDTRY
        CHECK64 [LM_EXC_VEC], 16, "#MF at the next waiting instruction"
        fnclex
        fldcw [cw_rc]
%ifndef QEMU_QUIRKS
        ; QEMU TCG stores the masked result even when the exception is unmasked.
        ST0_Q 0, "unmasked ZE: operands untouched (ST0 = 0)"
        ST0_Q 0x3FF0000000000000, "unmasked ZE: operands untouched (ST1 = 1)"
%endif
        fninit
        mov rax, cr0
        or rax, 1 << 3
        mov cr0, rax
        TRY
        fld1
        ENDTRY
        CHECK64 [LM_EXC_VEC], 7, "#NM with CR0.TS"
        clts

        ; ------------------------------------------------ environment and state images
        fninit
        fld1
        fnstenv [BUF]
        fnstcw [BUF + 64]
        CHECK64 [BUF + 64], 0x037F, "fnstenv masks exceptions (already masked)"
        movzx eax, word [BUF + 8]
        CHECK64 rax, 0x3FFF, "fnstenv: tag word (ST0 valid)"
        fninit
        fldenv [BUF]
        fnstsw ax
        and eax, 0x3800
        CHECK64 rax, 0x3800, "fldenv: TOP = 7"
        fnsave [BUF]
        fnstcw [BUF + 200]
        CHECK64 [BUF + 200], 0x037F, "fnsave reinitialises"
        frstor [BUF]
        ST0_Q 0x3FF0000000000000, "frstor: ST0 = 1"

        fninit
        fldpi
        fxsave [XBUF]
        movzx eax, byte [XBUF + 4]
        CHECK64 rax, 0x80, "fxsave: abridged tag (R7)"
        mov eax, [XBUF + 24]
        CHECK64 rax, 0x1F80, "fxsave: MXCSR"
        fninit
        fxrstor [XBUF]
        ST0_Q 0x400921FB54442D18, "fxrstor: ST0 = pi"

        xor ecx, ecx
        xor edx, edx
        mov eax, 3
        xsetbv
        xor ecx, ecx
        xgetbv
        CHECK64 rax, 3, "xgetbv: XCR0 = x87 | SSE"
        fninit
        fld1
        mov rdi, XBUF
        mov ecx, 576 / 8
        xor eax, eax
        rep stosq
        mov eax, 3
        xor edx, edx
        xsave [XBUF]
        mov rax, [XBUF + 512]
        and eax, 1
        CHECK64 rax, 1, "xsave: XSTATE_BV[0] (x87 in use)"
        fninit
        mov eax, 3
        xor edx, edx
        xrstor [XBUF]
        ST0_Q 0x3FF0000000000000, "xrstor: ST0 = 1"
        fld1
        emms
        fxam
        FSW_CC 0x4500, 0x4100, "emms: ST0 empty"

        call finish64


        align 8
two_point_five:  dq 0x4004000000000000
two_point_seven: dq 0x400599999999999A
qnan:            dq 0x7FF8000000000000
big:             dq 0x40F86A0000000000     ; 100000.0
cw_rc:           dw 0x037F, 0x077F, 0x0B7F, 0x0F7F
cw_pc24:         dw 0x007F
cw_ze:           dw 0x037B

%include "reset.inc"
