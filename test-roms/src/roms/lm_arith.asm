; lm_arith: 64-bit integer instructions, flags and addressing in 64-bit mode.
;
; Covers: ADD/SUB/ADC/SBB/NEG/CMP/INC/DEC on 64-bit operands with OF/SF/ZF/AF/PF/CF, imm32 sign
; extension; MUL/IMUL (1-operand 128-bit results, 2- and 3-operand forms), DIV/IDIV 128/64 and #DE
; (divide by zero, quotient overflow, -2^63 / -1); SHL/SHR/SAR/ROL/ROR/RCL/RCR with the count masked
; to 6 bits (5 bits for 32-bit operands), SHLD/SHRD; BSWAP; BSF/BSR; BT/BTS/BTR/BTC with register
; bit offsets reaching far (and backwards) from the memory operand and immediate offsets masked;
; CMPXCHG, CMPXCHG16B (incl. #GP on a misaligned operand), XADD, XCHG; MOVSX/MOVZX/MOVSXD,
; CBW-family (CDQE/CQO); CMOVcc (32-bit form zero-extends even when the condition is false), SETcc;
; 32-bit results zero-extend to 64 bits while 8/16-bit results merge, NOP (90h) vs XCHG EAX,EAX;
; byte registers with REX (SPL/BPL/SIL/DIL/R8B) vs AH/CH/DH/BH without; RIP-relative addressing
; (displacement relative to the end of the instruction, including a trailing immediate), SIB with every
; scale, no-base SIB, RBP/R13/RSP/R12 bases, negative displacements, MOV moffs64, 32-bit address
; size (67h) wrapping at 4 GiB and ignoring the upper register halves; string instructions with 64-bit
; RSI/RDI/RCX, REP MOVSQ/STOSQ/CMPSB/SCASB, DF=1, REP with a 64-bit RCX count interrupted by #PF,
; 67h REP using ECX; LOOP/JRCXZ/JECXZ.
; SDM Vol. 1 3.4.1.1 (64-bit GPRs, zero extension), 3.7.5 (addressing, RIP-relative), 7.3; Vol. 2
; instruction pages (ADD ... XADD), 2.2.1 (REX, byte registers), Table 2-5 (RIP-relative).
; QEMU: default CPU (qemu64). BMI/POPCNT/LZCNT/TZCNT/MOVBE/ADX are in lm_ext.asm (-cpu max).
%include "common.inc"
%include "longmode.inc"

OSZAPC equ 0x8D5
F_CF equ 0x001
F_PF equ 0x004
F_AF equ 0x010
F_ZF equ 0x040
F_SF equ 0x080
F_OF equ 0x800

BUF  equ LM_FREE                ; 0x20000: scratch data (64 KiB)
PT1  equ 0x70000                ; page table replacing PD[1] (0x200000-0x3FFFFF), 0x201000 not present

; CHECKF expected, mask, "name": check (RFLAGS & mask) right after an instruction; preserves all.
%macro CHECKF 3
        pushfq
        push rbx
        mov rbx, [rsp + 8]
        and rbx, %2
        CHECK64 rbx, %1, %3
        pop rbx
        popfq
%endmacro

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
main64:
        ; ------------------------------------------------ ADD / SUB / ADC / SBB / NEG / CMP
        mov rax, 0x7FFFFFFFFFFFFFFF
        add rax, 1
        CHECK64 rax, 0x8000000000000000, "add: 7fff..+1"
        CHECKF F_OF|F_SF|F_AF|F_PF, OSZAPC, "add: 7fff..+1 flags OF SF AF PF"
        mov rax, -1
        mov rbx, 1
        add rax, rbx
        CHECK64 rax, 0, "add: ffff..+1"
        CHECKF F_CF|F_ZF|F_AF|F_PF, OSZAPC, "add: ffff..+1 flags CF ZF AF PF"
        xor eax, eax
        sub rax, 1
        CHECK64 rax, -1, "sub: 0-1"
        CHECKF F_CF|F_SF|F_AF|F_PF, OSZAPC, "sub: 0-1 flags CF SF AF PF"
        mov rax, 0x8000000000000000
        sub rax, 1
        CHECK64 rax, 0x7FFFFFFFFFFFFFFF, "sub: 8000..-1"
        CHECKF F_OF|F_AF|F_PF, OSZAPC, "sub: 8000..-1 flags OF AF PF"
        mov rax, 0x100000000
        add rax, -1                     ; imm8 sign-extended to 64 bits
        CHECK64 rax, 0xFFFFFFFF, "add r64, imm8 (sign-extended)"
        mov rax, 0x100000000
        add rax, -0x10000000            ; imm32 sign-extended
        CHECK64 rax, 0xF0000000, "add r64, imm32 (sign-extended)"
        ; 128-bit add / subtract with ADC / SBB
        mov rax, -1
        mov rdx, 1
        add rax, 1
        adc rdx, 2
        CHECK64 rax, 0, "add/adc 128: low"
        CHECK64 rdx, 4, "add/adc 128: high"
        xor eax, eax
        mov rdx, 5
        sub rax, 1
        sbb rdx, 2
        CHECK64 rax, -1, "sub/sbb 128: low"
        CHECK64 rdx, 2, "sub/sbb 128: high"
        stc
        mov rax, -1
        adc rax, 0
        CHECK64 rax, 0, "adc: ffff..+0+CF"
        CHECKF F_CF|F_ZF|F_AF|F_PF, OSZAPC, "adc: flags CF ZF AF PF"
        stc
        mov rax, 0x8000000000000000
        sbb rax, 0
        CHECK64 rax, 0x7FFFFFFFFFFFFFFF, "sbb: 8000..-0-CF"
        CHECKF F_OF|F_AF|F_PF, OSZAPC, "sbb: flags OF AF PF"
        mov rax, 0x8000000000000000
        neg rax
        CHECK64 rax, 0x8000000000000000, "neg: 8000.."
        CHECKF F_OF|F_SF|F_PF|F_CF, OSZAPC, "neg: 8000.. flags OF SF PF CF"
        xor eax, eax
        neg rax
        CHECKF F_ZF|F_PF, OSZAPC, "neg 0: ZF PF, CF clear"
        mov rax, 5
        neg rax
        CHECK64 rax, -5, "neg 5"
        CHECKF F_CF|F_SF|F_AF, OSZAPC, "neg 5: flags CF SF AF"
        mov rax, 0xFFFFFFFF80000000
        cmp rax, -0x80000000            ; imm32 sign-extended
        CHECKF F_ZF|F_PF, OSZAPC, "cmp r64, imm32 sign-extended: equal"
        mov rax, 1
        mov rbx, 0x8000000000000000
        cmp rax, rbx                    ; 1 - (-2^63) overflows
        CHECKF F_OF|F_SF|F_CF, OSZAPC, "cmp 1, 8000..: OF SF CF"
        mov rax, 0x7FFFFFFFFFFFFFFF
        stc
        inc rax
        CHECKF F_OF|F_SF|F_AF|F_PF|F_CF, OSZAPC, "inc 7fff..: OF SF AF PF, CF kept"
        xor eax, eax
        clc
        dec rax
        CHECK64 rax, -1, "dec 0"
        CHECKF F_SF|F_AF|F_PF, OSZAPC, "dec 0: SF AF PF, CF kept clear"

        ; ------------------------------------------------ operand-size results
        mov rax, -1
        add eax, 1
        CHECK64 rax, 0, "add eax: 32-bit result zero-extends"
        CHECKF F_CF|F_ZF|F_AF|F_PF, OSZAPC, "add eax: 32-bit flags"
        mov rax, -1
        mov eax, 0x80000000
        CHECK64 rax, 0x80000000, "mov r32: zero-extends"
        mov rax, -1
        mov ax, 0x1234
        CHECK64 rax, 0xFFFFFFFFFFFF1234, "mov r16: merges"
        mov rax, -1
        mov al, 0
        CHECK64 rax, 0xFFFFFFFFFFFFFF00, "mov r8: merges"
        mov rax, -1
        add ax, 1
        CHECK64 rax, 0xFFFFFFFFFFFF0000, "add r16: merges"
        mov rax, 0xFFFFFFFF12345678
        db 0x90                         ; NOP, not XCHG EAX,EAX: no zero extension
        CHECK64 rax, 0xFFFFFFFF12345678, "90h is NOP (no zero-extension)"
        db 0x87, 0xC0                   ; XCHG EAX,EAX (87 /r): zero-extends
        CHECK64 rax, 0x12345678, "87 C0 xchg eax,eax zero-extends"
        mov rbx, -1
        mov rax, 0xFFFFFFFF00000001
        xchg ebx, eax
        CHECK64 rax, 0xFFFFFFFF, "xchg r32: rax zero-extended"
        CHECK64 rbx, 1, "xchg r32: rbx zero-extended"
        mov rax, -1
        lea eax, [rax + 2]
        CHECK64 rax, 1, "lea r32: truncated and zero-extended"
        mov rax, 0x80000000
        cdqe
        CHECK64 rax, 0xFFFFFFFF80000000, "cdqe"
        mov rax, 0x8000000000000000
        mov rdx, 5
        cqo
        CHECK64 rdx, -1, "cqo"
        mov rdx, -1
        mov eax, 0x80000000
        cdq
        CHECK64 rdx, 0xFFFFFFFF, "cdq: edx written, zero-extended"
        mov rax, 0x1234567880
        cbw
        CHECK64 rax, 0x123456FF80, "cbw"

        ; ------------------------------------------------ MUL / IMUL
        mov rax, -1
        mov rbx, -1
        mul rbx
        CHECK64 rax, 1, "mul r64: low"
        CHECK64 rdx, 0xFFFFFFFFFFFFFFFE, "mul r64: high"
        CHECKF F_OF|F_CF, F_OF|F_CF, "mul r64: OF CF (high nonzero)"
        mov rax, 0x0123456789ABCDEF
        mov qword [BUF], 0
        mov rbx, 0xFEDCBA9876543210
        mov [BUF], rbx
        mul qword [BUF]
        CHECK64 rax, 0x2236D88FE5618CF0, "mul m64: low"
        CHECK64 rdx, 0x0121FA00AD77D742, "mul m64: high"
        mov rax, 3
        mov rdx, -1
        mov rbx, 7
        mul rbx
        CHECK64 rax, 21, "mul small: low"
        CHECK64 rdx, 0, "mul small: high cleared"
        CHECKF 0, F_OF|F_CF, "mul small: OF CF clear"
        mov rax, -2
        mov rbx, 3
        imul rbx
        CHECK64 rax, -6, "imul r64 (1-op): low"
        CHECK64 rdx, -1, "imul r64 (1-op): high = sign"
        CHECKF 0, F_OF|F_CF, "imul 1-op: fits, OF CF clear"
        mov rax, 0x4000000000000000
        mov rbx, 4
        imul rbx
        CHECK64 rax, 0, "imul 1-op 2^64: low"
        CHECK64 rdx, 1, "imul 1-op 2^64: high"
        CHECKF F_OF|F_CF, F_OF|F_CF, "imul 1-op overflow: OF CF"
        mov rax, 0x100000000
        mov rbx, 0x100000000
        imul rax, rbx
        CHECK64 rax, 0, "imul r64, r64: truncated"
        CHECKF F_OF|F_CF, F_OF|F_CF, "imul 2-op overflow: OF CF"
        mov rax, -5
        mov qword [BUF], 7
        imul rax, [BUF]
        CHECK64 rax, -35, "imul r64, m64"
        CHECKF 0, F_OF|F_CF, "imul 2-op fits: OF CF clear"
        mov rbx, -3
        imul rax, rbx, 0x7FFFFFFF
        CHECK64 rax, 0xFFFFFFFE80000003, "imul r64, r64, imm32"
        mov rbx, 0x123456789
        imul rcx, rbx, -1
        CHECK64 rcx, -0x123456789, "imul r64, r64, imm8 (sign-extended)"
        mov rax, -1
        mov rdx, -1
        mov ebx, 2
        mul ebx
        CHECK64 rax, 0xFFFFFFFE, "mul r32: eax zero-extended"
        CHECK64 rdx, 1, "mul r32: edx zero-extended"

        ; ------------------------------------------------ DIV / IDIV
        mov rdx, 1
        xor eax, eax
        mov rbx, 2
        div rbx
        CHECK64 rax, 0x8000000000000000, "div 2^64 / 2: quotient"
        CHECK64 rdx, 0, "div 2^64 / 2: remainder"
        mov rdx, 0x123
        mov rax, 0x456789ABCDEF0123
        mov rbx, 0x1000
        div rbx
        CHECK64 rax, 0x123456789ABCDEF0, "div 128/64: quotient"
        CHECK64 rdx, 0x123, "div 128/64: remainder"
        mov rdx, -1
        mov rax, -7
        mov rbx, 2
        idiv rbx
        CHECK64 rax, -3, "idiv -7/2: quotient (truncates)"
        CHECK64 rdx, -1, "idiv -7/2: remainder (sign of dividend)"
        mov rdx, 0
        mov rax, 100
        mov qword [BUF], -7
        idiv qword [BUF]
        CHECK64 rax, -14, "idiv m64 100/-7: quotient"
        CHECK64 rdx, 2, "idiv m64 100/-7: remainder"
        mov rdx, -1
        mov rax, 0x8000000000000000
        mov rbx, 1
        idiv rbx
        CHECK64 rax, 0x8000000000000000, "idiv -2^63 / 1"
        ; #DE cases: fault, RIP = the divide, registers unchanged
        mov rdx, 0
        mov rax, 1234
        xor ebx, ebx
        TRY
de1:    div rbx
        ENDTRY
        CHECK64 [LM_EXC_VEC], 0, "div by 0: #DE"
        mov rbx, de1
        CHECK64 [LM_EXC_RIP], rbx, "div by 0: RIP = faulting instruction"
        CHECK64 rax, 1234, "div by 0: RAX unchanged"
        mov rdx, 2
        xor eax, eax
        mov rbx, 2
        TRY
        div rbx
        ENDTRY
        CHECK64 [LM_EXC_VEC], 0, "div quotient >= 2^64: #DE"
        CHECK64 rdx, 2, "div overflow: RDX unchanged"
        mov rdx, -1
        mov rax, 0x8000000000000000
        mov rbx, -1
        TRY
        idiv rbx
        ENDTRY
        CHECK64 [LM_EXC_VEC], 0, "idiv -2^63 / -1: #DE"
        mov rdx, 0x7FFFFFFF
        mov rax, 0
        mov rbx, 0x80000000
        TRY
        idiv rbx                        ; 2^95-ish / 2^31 = 2^64-ish > 2^63-1
        ENDTRY
        CHECK64 [LM_EXC_VEC], 0, "idiv positive quotient overflow: #DE"
        mov rdx, -1
        mov rax, -1
        mov ebx, 0x10
        xor edx, edx
        div ebx
        CHECK64 rax, 0x0FFFFFFF, "div r32: zero-extended quotient"
        CHECK64 rdx, 0xF, "div r32: zero-extended remainder"

        ; ------------------------------------------------ shifts and rotates
        mov rax, 0x8000000000000001
        mov cl, 64                      ; masked to 0: no change, flags untouched
        stc
        shl rax, cl
        CHECK64 rax, 0x8000000000000001, "shl count 64 -> 0: unchanged"
        CHECKF F_CF, F_CF, "shl count 0: CF untouched"
        mov cl, 65
        shl rax, cl
        CHECK64 rax, 2, "shl count 65 -> 1"
        CHECKF F_CF|F_OF, F_CF|F_OF, "shl 1: CF = old bit 63, OF = CF ^ new bit 63"
        mov rax, 0x8000000000000000
        shr rax, 63
        CHECK64 rax, 1, "shr 63"
        mov rax, -2
        mov cl, 127
        sar rax, cl
        CHECK64 rax, -1, "sar count 127 -> 63"
        mov rax, 0x8000000000000000
        sar rax, 1
        CHECK64 rax, 0xC000000000000000, "sar 1"
        CHECKF 0, F_OF|F_CF, "sar 1: OF = 0, CF = 0"
        mov rax, 0x0123456789ABCDEF
        mov cl, 68
        rol rax, cl
        CHECK64 rax, 0x123456789ABCDEF0, "rol count 68 -> 4"
        ror rax, 8
        CHECK64 rax, 0xF0123456789ABCDE, "ror 8"
        mov rax, 1
        ror rax, 1
        CHECK64 rax, 0x8000000000000000, "ror 1"
        CHECKF F_CF|F_OF, F_CF|F_OF, "ror 1: CF = bit 63, OF = bit63 ^ bit62"
        mov rax, 0x8000000000000000
        stc
        rcl rax, 1
        CHECK64 rax, 1, "rcl 1 through CF"
        CHECKF F_CF, F_CF, "rcl 1: CF = old bit 63"
        mov rax, 1
        clc
        mov cl, 65                      ; masked to 1 (64-bit RCR counts are mod 64, not mod 65)
        rcr rax, cl
        CHECK64 rax, 0, "rcr count 65 -> 1"
        CHECKF F_CF, F_CF, "rcr: CF = old bit 0"
        mov eax, 1
        mov rdx, -1
        mov cl, 33                      ; 32-bit operand: count masked to 5 bits
        shl eax, cl
        CHECK64 rax, 2, "shl r32 count 33 -> 1"
        mov rax, 0xFFFFFFFF80000000
        shr eax, 4
        CHECK64 rax, 0x08000000, "shr r32 zero-extends"
        mov rax, 0x123456789ABCDEF0
        mov rbx, 0xFEDCBA9876543210
        mov cl, 4
        shld rax, rbx, cl
        CHECK64 rax, 0x23456789ABCDEF0F, "shld r64, r64, cl=4"
        mov rax, 0x123456789ABCDEF0
        shrd rax, rbx, 8
        CHECK64 rax, 0x10123456789ABCDE, "shrd r64, r64, 8"
        mov rax, 0x123456789ABCDEF0
        mov cl, 64
        shld rax, rbx, cl
        CHECK64 rax, 0x123456789ABCDEF0, "shld count 64 -> 0: unchanged"
        mov cl, 68
        shld rax, rbx, cl
        CHECK64 rax, 0x23456789ABCDEF0F, "shld count 68 -> 4"
        mov qword [BUF], 0x00000000000000FF
        mov rbx, 0xA000000000000000
        shrd qword [BUF], rbx, 4
        CHECK64 [BUF], 0x000000000000000F, "shrd m64 (bits from rbx low end)"
        mov rbx, 0x5
        shrd qword [BUF], rbx, 60
        CHECK64 [BUF], 0x50, "shrd m64, 60"

        ; ------------------------------------------------ BSWAP / BSF / BSR
        mov rax, 0x0102030405060708
        bswap rax
        CHECK64 rax, 0x0807060504030201, "bswap r64"
        mov r9, 0x1122334455667788
        bswap r9
        CHECK64 r9, 0x8877665544332211, "bswap r9"
        mov rax, 0xFFFFFFFF11223344
        bswap eax
        CHECK64 rax, 0x44332211, "bswap r32 zero-extends"
        mov rbx, 0x8000000000000000
        bsf rax, rbx
        CHECK64 rax, 63, "bsf r64"
        mov rbx, 0x0000010000000100
        bsr rax, rbx
        CHECK64 rax, 40, "bsr r64"
        CHECKF 0, F_ZF, "bsr nonzero: ZF clear"
        xor ebx, ebx
        bsf rax, rbx
        CHECKF F_ZF, F_ZF, "bsf 0: ZF set"

        ; ------------------------------------------------ BT family
        mov rdi, BUF + 0x100
        xor eax, eax
        mov ecx, 0x400 / 8
        push rdi
        sub rdi, 0x200
        rep stosq                       ; clear BUF-0x100 .. BUF+0x300
        pop rdi
        mov qword [rdi + 80], 1 << 5
        mov rcx, 64 * 10 + 5
        bt qword [rdi], rcx
        CHECKF F_CF, F_CF, "bt m64, r64: offset 645 -> qword +80 bit 5"
        mov rcx, -1                     ; bit 63 of the qword at -8
        bts qword [rdi], rcx
        CHECKF 0, F_CF, "bts m64, -1: old bit clear"
        mov rax, [rdi - 8]
        CHECK64 rax, 0x8000000000000000, "bts m64, -1: sets bit 63 at -8"
        mov rcx, -64 * 3 + 2            ; qword at -24, bit 2
        btc qword [rdi], rcx
        btc qword [rdi], rcx
        btc qword [rdi], rcx
        CHECKF 0, F_CF, "btc m64 three times: old bit clear"
        mov rax, [rdi - 24]
        CHECK64 rax, 4, "btc m64, negative offset: bit toggled"
        mov rcx, 64 * 10 + 5
        btr qword [rdi], rcx
        CHECKF F_CF, F_CF, "btr m64: old bit set"
        mov rax, [rdi + 80]
        CHECK64 rax, 0, "btr m64: bit cleared"
        mov ecx, 8 * 0x200 + 7          ; 32-bit form: dword at +0x200, bit 7
        bts dword [rdi], ecx
        mov eax, [rdi + 0x200]
        CHECK64 rax, 0x80, "bts m32, r32: dword offset"
        mov rcx, 0x10000 * 8 + 3        ; far offset: 64 KiB further
        mov rdx, BUF + 0x100 - 0x10000
        bts qword [rdx], rcx
        mov rax, [BUF + 0x100]
        CHECK64 rax, 8, "bts m64: offset 64 KiB away"
        mov qword [rdi], 0
        bts qword [rdi], 65             ; immediate offsets are masked (mod 64)
        mov rax, [rdi]
        CHECK64 rax, 2, "bts m64, imm 65 -> bit 1 of the operand itself"
        mov rax, 2
        mov rcx, 65
        bt rax, rcx
        CHECKF F_CF, F_CF, "bt r64, r64: offset mod 64"

        ; ------------------------------------------------ CMPXCHG / CMPXCHG16B / XADD
        mov qword [BUF], 0x1111
        mov rax, 0x1111
        mov rbx, 0x123456789
        lock cmpxchg [BUF], rbx
        CHECKF F_ZF, F_ZF, "cmpxchg equal: ZF"
        CHECK64 [BUF], 0x123456789, "cmpxchg equal: stored"
        mov rax, 5
        cmpxchg [BUF], rbx
        CHECKF 0, F_ZF, "cmpxchg different: ZF clear"
        CHECK64 rax, 0x123456789, "cmpxchg different: RAX loaded"
        mov rax, -1
        mov dword [BUF], 0x77
        cmpxchg [BUF], ebx
        CHECK64 rax, 0x77, "cmpxchg m32 different: EAX loaded, zero-extended"
        mov rdi, BUF + 0x40             ; 16-byte aligned
        mov qword [rdi], 0xAAAA
        mov qword [rdi + 8], 0xBBBB
        mov rax, 0xAAAA
        mov rdx, 0xBBBB
        mov rbx, 0x1111111111111111
        mov rcx, 0x2222222222222222
        lock cmpxchg16b [rdi]
        CHECKF F_ZF, F_ZF, "cmpxchg16b equal: ZF"
        CHECK64 [rdi], 0x1111111111111111, "cmpxchg16b equal: low stored"
        CHECK64 [rdi + 8], 0x2222222222222222, "cmpxchg16b equal: high stored"
        xor eax, eax
        xor edx, edx
        cmpxchg16b [rdi]
        CHECKF 0, F_ZF, "cmpxchg16b different: ZF clear"
        CHECK64 rax, 0x1111111111111111, "cmpxchg16b different: RAX loaded"
        CHECK64 rdx, 0x2222222222222222, "cmpxchg16b different: RDX loaded"
        TRY
        cmpxchg16b [rdi + 8]
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "cmpxchg16b misaligned: #GP"
        CHECK64 [LM_EXC_ERR], 0, "cmpxchg16b misaligned: error code 0"
        mov rbx, 0x7FFFFFFFFFFFFFFF
        mov [BUF], rbx
        mov rbx, 1
        lock xadd [BUF], rbx
        CHECK64 rbx, 0x7FFFFFFFFFFFFFFF, "xadd m64: old value returned"
        CHECK64 [BUF], 0x8000000000000000, "xadd m64: sum stored"
        CHECKF F_OF|F_SF|F_AF|F_PF, OSZAPC, "xadd m64: flags of the add"
        mov rax, 10
        mov rcx, 20
        xadd rax, rcx
        CHECK64 rax, 30, "xadd r64: sum"
        CHECK64 rcx, 10, "xadd r64: old"
        mov qword [BUF], 0x55
        mov rax, 0x66
        xchg [BUF], rax
        CHECK64 rax, 0x55, "xchg m64, r64"

        ; ------------------------------------------------ MOVSX / MOVZX / MOVSXD
        mov dword [BUF], 0x80008080
        mov rax, 0
        movsx rax, byte [BUF]
        CHECK64 rax, 0xFFFFFFFFFFFFFF80, "movsx r64, m8"
        movsx rax, word [BUF]
        CHECK64 rax, 0xFFFFFFFFFFFF8080, "movsx r64, m16"
        movsxd rax, dword [BUF]
        CHECK64 rax, 0xFFFFFFFF80008080, "movsxd r64, m32"
        mov rbx, 0x12345678FFFFFFFF
        movsxd rax, ebx
        CHECK64 rax, -1, "movsxd r64, r32"
        mov rax, -1
        movzx rax, byte [BUF]
        CHECK64 rax, 0x80, "movzx r64, m8"
        mov rax, -1
        movzx eax, word [BUF]
        CHECK64 rax, 0x8080, "movzx r32, m16 zero-extends to 64"
        mov rax, -1
        movsx eax, byte [BUF]
        CHECK64 rax, 0xFFFFFF80, "movsx r32, m8: upper half zero"
        mov rax, -1
        movsx ax, byte [BUF]
        CHECK64 rax, 0xFFFFFFFFFFFFFF80, "movsx r16, m8: upper bits kept"

        ; ------------------------------------------------ CMOVcc / SETcc
        mov rax, 1
        mov rbx, 2
        cmp rax, rax
        cmovz rax, rbx
        CHECK64 rax, 2, "cmovz taken"
        mov rcx, 3
        cmovnz rax, rcx
        CHECK64 rax, 2, "cmovnz not taken"
        mov rax, 0xFFFFFFFF00000001
        mov ecx, 7
        cmp ecx, ecx
        cmovnz eax, ecx                 ; false, but the 32-bit destination is still zero-extended
        CHECK64 rax, 1, "cmov r32 false: upper half cleared (SDM CMOVcc)"
        mov rax, -1
        mov rbx, 1
        cmp rax, rbx
        setl al
        CHECK64 rax, 0xFFFFFFFFFFFFFF01, "setl (-1 < 1 signed)"
        setb al
        CHECK64 rax, 0xFFFFFFFFFFFFFF00, "setb (-1 !< 1 unsigned)"
        mov rsi, -1
        cmp rbx, rbx
        sete sil
        CHECK64 rsi, 0xFFFFFFFFFFFFFF01, "sete sil"
        mov r10, -1
        mov rax, 0x8000000000000000
        cmp rax, 1                      ; OF set
        seto r10b
        CHECK64 r10, 0xFFFFFFFFFFFFFF01, "seto r10b"
        mov rax, 0x7FFFFFFFFFFFFFFF
        mov rbx, -1
        cmp rax, rbx
        setg cl
        setle dl
        movzx eax, cl
        movzx ebx, dl
        shl eax, 8
        or eax, ebx
        CHECK64 rax, 0x100, "setg/setle on 64-bit signed compare"

        ; ------------------------------------------------ byte registers and REX
        mov rdx, 0xAA00
        mov rsi, 0x55
        xor eax, eax
        db 0x88, 0xF0                   ; mov al, dh
        CHECK64 rax, 0xAA, "88 F0 without REX: mov al, dh"
        xor eax, eax
        db 0x40, 0x88, 0xF0             ; mov al, sil
        CHECK64 rax, 0x55, "40 88 F0 with REX: mov al, sil"
        mov rdi, 0x1234567890ABCDEF
        mov dil, 0x11
        CHECK64 rdi, 0x1234567890ABCD11, "mov dil"
        mov rbp, 0x1234
        mov bpl, 0x56
        CHECK64 rbp, 0x1256, "mov bpl"
        mov rcx, rsp
        mov rbx, rsp
        mov bl, spl
        CHECK64 rbx, rcx, "mov bl, spl"
        mov rax, 0x1122334455667788
        mov ah, 0x99
        CHECK64 rax, 0x1122334455669988, "mov ah"
        mov rbx, 0xFF00
        db 0x88, 0xFB                   ; mov bl, bh
        CHECK64 rbx, 0xFFFF, "88 FB without REX: mov bl, bh"
        mov rbx, 0xFF00
        mov rdi, 0x77
        db 0x40, 0x88, 0xFB             ; mov bl, dil
        CHECK64 rbx, 0xFF77, "40 88 FB with REX: mov bl, dil"
        mov r8, -1
        mov r8b, 0
        CHECK64 r8, 0xFFFFFFFFFFFFFF00, "mov r8b"
        mov r15, 0x0F
        add r15b, 0xF1
        CHECK64 r15, 0, "add r15b wraps in 8 bits"
        mov r12, 0x100
        mov r12w, 0xFFFF
        add r12w, 1
        CHECK64 r12, 0, "add r12w wraps in 16 bits"
        mov r13d, -1
        CHECK64 r13, 0xFFFFFFFF, "mov r13d zero-extends"

        ; ------------------------------------------------ addressing
        lea rax, [rel rip_here]
rip_here:
        CHECK64 rax, rip_here, "lea rip-relative"
        mov rax, [rel rom_qword]
        CHECK64 rax, 0x0F1E2D3C4B5A6978, "mov rip-relative load"
        mov dword [rel $$ + LM_USER - 0xF0000], 0xCAFEF00D     ; disp relative to the end incl. the imm32
        mov eax, [LM_USER]
        CHECK64 rax, 0xCAFEF00D, "mov [rip+d], imm32: disp from end of instruction"
        mov qword [LM_USER], 0x10
        cmp byte [rel $$ + LM_USER - 0xF0000], 0x10            ; imm8 after the disp
        CHECKF F_ZF, F_ZF, "cmp [rip+d], imm8"
        mov rbx, BUF
        mov rcx, 8
        mov qword [BUF + 8], 0x13
        mov qword [BUF + 16], 0x26
        mov qword [BUF + 32], 0x412
        mov qword [BUF + 64], 0x824
        mov rax, [rbx + rcx]
        mov rdx, [rbx + rcx * 2]
        add rax, rdx
        mov rdx, [rbx + rcx * 4]
        add rax, rdx
        mov rdx, [rbx + rcx * 8]
        add rax, rdx
        CHECK64 rax, 0x13 + 0x26 + 0x412 + 0x824, "SIB scales 1/2/4/8"
        mov qword [BUF + 0x100 + 40], 0x5150
        mov rcx, 5
        mov rax, [rcx * 8 + BUF + 0x100]        ; SIB without base, disp32
        CHECK64 rax, 0x5150, "SIB no base: [index*8 + disp32]"
        mov rbx, BUF + 0x200
        mov qword [BUF + 0x200 - 8], 0x88
        mov qword [BUF + 0x200 - 0x1000], 0x1000
        mov rax, [rbx - 8]
        add rax, [rbx - 0x1000]
        CHECK64 rax, 0x1088, "negative disp8 and disp32"
        mov rcx, -2
        mov rax, [rbx + rcx * 4]                ; negative index
        CHECK64 rax, 0x88, "negative index register"
        mov r13, BUF + 0x200
        mov qword [BUF + 0x200], 0x1313
        mov rax, [r13]                          ; encoded as [r13 + disp8 0]
        CHECK64 rax, 0x1313, "[r13] base"
        mov r12, BUF + 0x200
        mov rax, [r12]                          ; needs a SIB byte
        CHECK64 rax, 0x1313, "[r12] base"
        mov rbp, BUF + 0x100
        mov rax, [rbp + 0x100]
        CHECK64 rax, 0x1313, "[rbp + disp] base"
        mov r11, 0x40
        mov rax, [r13 + r11 * 8 - 0x200]
        CHECK64 rax, 0x1313, "[r13 + r11*8 - disp] (REX.X, REX.B)"
        mov qword [rsp - 16], 0x5555
        mov rax, [rsp - 16]
        CHECK64 rax, 0x5555, "[rsp - disp] base"
        mov rax, [abs qword LM_USER]            ; A1 moffs64
        CHECK64 rax, 0x10, "mov rax, moffs64"
        mov rax, 0x99
        mov [abs qword LM_USER + 8], rax        ; A3 moffs64
        CHECK64 [LM_USER + 8], 0x99, "mov moffs64, rax"
        ; 67h: 32-bit effective address, wraps at 4 GiB, ignores the upper register halves
        mov qword [LM_USER], 0x6767
        mov rbx, 0x1234567800000000 + LM_USER
        mov eax, [ebx]
        CHECK64 rax, 0x6767, "67h: upper half of base ignored"
        mov rbx, 0xFFFFFFF0
        mov eax, [ebx + LM_USER + 0x10]
        CHECK64 rax, 0x6767, "67h: base + disp wraps at 4 GiB"
        mov rbx, 0x80000000
        mov rcx, 0x40000000
        mov eax, [ebx + ecx * 2 + LM_USER]
        CHECK64 rax, 0x6767, "67h: base + index*2 wraps at 4 GiB"
        mov rax, 0xFFFFFFFF
        lea rdx, [eax + 2]                      ; 67h LEA: 32-bit address, zero-extended
        CHECK64 rdx, 1, "67h lea: result truncated to 32 bits"
        mov rax, 0xFFFFFFFF
        lea rdx, [rax + 2]
        CHECK64 rdx, 0x100000001, "lea r64: full 64-bit"

        ; ------------------------------------------------ string instructions
        cld
        mov rsi, src_qwords
        mov rdi, BUF + 0x1000
        mov rcx, 3
        rep movsq
        CHECK64 rcx, 0, "rep movsq: RCX = 0"
        mov rdx, src_qwords + 24
        CHECK64 rsi, rdx, "rep movsq: RSI advanced 24"
        CHECK64 rdi, BUF + 0x1018, "rep movsq: RDI advanced 24"
        CHECK64 [BUF + 0x1010], 0x3333333333333333, "rep movsq: data"
        std
        mov rsi, BUF + 0x1010
        mov rdi, BUF + 0x1030
        mov rcx, 3
        rep movsq                               ; backwards
        cld
        CHECK64 rdi, BUF + 0x1018, "std rep movsq: RDI decremented"
        CHECK64 [BUF + 0x1028], 0x2222222222222222, "std rep movsq: data"
        mov rdi, BUF + 0x1100
        mov rax, 0xABABABABABABABAB
        mov rcx, 4
        rep stosq
        CHECK64 [BUF + 0x1118], 0xABABABABABABABAB, "rep stosq"
        mov rdi, rom_string
        mov al, 'z'
        mov rcx, 100
        repne scasb
        CHECK64 rcx, 100 - 6, "repne scasb: RCX count"
        mov rdx, rom_string + 6
        CHECK64 rdi, rdx, "repne scasb: RDI after match"
        mov rsi, rom_string
        mov rdi, rom_string2
        mov rcx, 20
        repe cmpsb
        CHECK64 rcx, 20 - 4, "repe cmpsb: stops after mismatch"
        CHECKF F_CF, F_CF|F_ZF, "repe cmpsb: flags of 'd' - 'x'"
        mov rsi, src_qwords + 8
        lodsq
        CHECK64 rax, 0x2222222222222222, "lodsq"
        ; REP with a 64-bit count: RCX = 2^32 + 16 stops at a #PF after 16 bytes; registers are
        ; left exactly at the faulting iteration (SDM Vol. 2 REP: interruptible, restartable)
        call map_pt1
        mov rdi, 0x201000 - 16
        mov rcx, 0x100000010
        mov al, 0xEE
        TRY
        rep stosb
        ENDTRY
        CHECK64 [LM_EXC_VEC], 14, "rep stosb into a non-present page: #PF"
        CHECK64 [LM_EXC_CR2], 0x201000, "rep stosb #PF: CR2"
        CHECK64 rcx, 0x100000000, "rep stosb #PF: RCX is a 64-bit count (2^32 left)"
        CHECK64 rdi, 0x201000, "rep stosb #PF: RDI at the faulting byte"
        CHECK64 [0x200FF8], 0xEEEEEEEEEEEEEEEE, "rep stosb #PF: earlier bytes stored"
        ; 67h REP: count in ECX (upper half ignored), addresses in EDI
        mov rdi, 0xFFFFFFFF00000000 + 0x201000 - 16
        mov rcx, 0xFFFFFFFF00000004
        mov al, 0x33
        a32 rep stosb
        mov eax, edi
        CHECK64 rax, 0x201000 - 12, "67h rep stosb: ECX count, EDI advanced by 4"
        CHECK64 [0x201000 - 16], 0xEEEEEEEE33333333, "67h rep stosb: data"
        ; LOOP / JRCXZ
        mov rcx, 0x100000000
        xor eax, eax
        jrcxz .z1
        inc eax
.z1:    CHECK64 rax, 1, "jrcxz: RCX = 2^32 is not zero"
        xor eax, eax
        jecxz .z2
        inc eax
.z2:    CHECK64 rax, 0, "67h jecxz: ECX = 0 taken"
        mov rcx, 0x100000002
        xor eax, eax
.lp:    inc eax
        cmp eax, 10
        je .lpx
        loop .lp
.lpx:   CHECK64 rax, 10, "loop decrements the 64-bit RCX (2^32 + 2 is not 2)"
        CHECK64 rcx, 0xFFFFFFF9, "loop: RCX after"

        call finish64

; map_pt1: PD[1] (0x200000-0x3FFFFF) -> 4 KiB page table with 0x201000 not present.
map_pt1:
        mov rdi, PT1
        mov rax, 0x200000 | 7
        mov ecx, 512
.l:     mov [rdi], rax
        add rax, 0x1000
        add rdi, 8
        loop .l
        mov qword [PT1 + 8], 0
        mov qword [LM_PD + 8], PT1 | 7
        mov rax, cr3
        mov cr3, rax
        ret

        align 8
rom_qword:  dq 0x0F1E2D3C4B5A6978
src_qwords: dq 0x1111111111111111, 0x2222222222222222, 0x3333333333333333
rom_string:  db "abcdezyz", 0
rom_string2: db "abcxezyz", 0

%include "reset.inc"
