; real_arith: real-mode integer arithmetic and flags.
;
; Covers ADD/ADC/SUB/SBB/CMP/NEG/INC/DEC/AND/OR/XOR/TEST (result + CF/PF/AF/ZF/SF/OF), MUL/IMUL/
; DIV/IDIV (incl. #DE through the IVT with the saved CS:IP pointing at the faulting instruction),
; SHL/SHR/SAR/ROL/ROR/RCL/RCR with counts 0, 1, > width and masking, DAA/DAS/AAA/AAS/AAM/AAD (only
; their defined flags), BT/BTS/BTR/BTC (register and memory bit strings incl. negative offsets),
; BSF/BSR, CBW/CWD/CWDE/CDQ, XCHG, XLAT, LEA with the 16-bit addressing forms (and 16-bit wrap), segment
; overrides and default segments, 32-bit operands/addresses in real mode (66/67 prefixes), unreal
; mode (4 GiB limit loaded in protected mode survives the return to real mode) and A20 (port 0x92).
;
; Expectations from the Intel SDM Vol. 1 3.4.3 (EFLAGS), Vol. 2 instruction pages (ADD ... XOR,
; MUL/IMUL/DIV/IDIV, SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR "Operation" and "Flags Affected",
; DAA/DAS/AAA/AAS/AAM/AAD, BT*, BSF/BSR, CBW/CWDE, CWD/CDQ, XLAT, LEA), Vol. 1 3.7.5 (specifying an
; offset; 16-bit addressing), Vol. 3A 20.1.1 (real-mode address translation, segment limits kept from
; the last protected-mode load), Vol. 3A 6.15 "Interrupt 0—Divide Error" (fault: CS:IP of the DIV),
; Vol. 3A 20.1.4 (real-mode interrupt handling) and 21.x/"A20M#" (address-line 20 masking).
%include "common.inc"
%include "sys.inc"

TFLAGS  equ 0x600               ; dword: captured flags
MEMW    equ 0x610               ; scratch words

; RF value, expected, expected arithmetic flags, "name": captures FLAGS first, masks with FL_ARITH.
%macro RF 4
        RFM %1, %2, %3, FL_ARITH, %4
%endmacro
; RFM value, expected, expected flags, mask, "name"
%macro RFM 5
        pushf
        pop word [ss:TFLAGS]
        and word [ss:TFLAGS], %4
        CHECK16 %1, %2, %5
        CHECK16 dword [ss:TFLAGS], %3, {%5, " flags"}
%endmacro
; FLAGSONLY expected, mask, "name"
%macro FLAGSONLY 3
        pushf
        pop word [ss:TFLAGS]
        and word [ss:TFLAGS], %2
        CHECK16 dword [ss:TFLAGS], %1, {%3, " flags"}
%endmacro
; SETF value: load FLAGS (IF stays 0)
%macro SETF 1
        push word (%1) | 2
        popf
%endmacro

LOGIC equ FL_CF|FL_PF|FL_ZF|FL_SF|FL_OF      ; AF undefined for AND/OR/XOR/TEST and shifts
CO    equ FL_CF|FL_OF                        ; MUL/IMUL, rotates by 1
SZP   equ FL_SF|FL_ZF|FL_PF

xtab:   db 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
unreal_gdtr:
        dw unreal_gdt_end - unreal_gdt - 1
        dd unreal_gdt
unreal_gdt:
        dq 0
        DESC 0, 0xFFFFF, 0x93, 0xC              ; 0x08: flat 4 GiB data
unreal_gdt_end:

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        xor ax, ax
        mov ds, ax
        mov es, ax
        mov dword [TFLAGS], 0

; ------------------------------------------------------------ ADD / ADC
        xor eax, eax
        mov al, 0xFF
        add al, 1
        RF eax, 0, FL_CF|FL_ZF|FL_AF|FL_PF, "add8 ff+1"
        mov eax, 0x7FFF
        add ax, 1
        RF eax, 0x8000, FL_OF|FL_SF|FL_AF|FL_PF, "add16 7fff+1"
        mov eax, 0x80000000
        add eax, 0x80000000
        RF eax, 0, FL_CF|FL_OF|FL_ZF|FL_PF, "add32 8..+8.."
        mov eax, 0x12
        add al, 0x34
        RF eax, 0x46, 0, "add8 12+34"
        mov eax, 0xFFFF
        stc
        adc ax, 0
        RF eax, 0, FL_CF|FL_ZF|FL_AF|FL_PF, "adc16 ffff+0+c"
        mov eax, 1
        clc
        adc ax, 1
        RF eax, 2, 0, "adc16 1+1"
        mov eax, 0x7F
        stc
        adc al, 0
        RF eax, 0x80, FL_OF|FL_SF|FL_AF, "adc8 7f+0+c"

; ------------------------------------------------------------ SUB / SBB / CMP / NEG
        xor eax, eax
        sub ax, 1
        RF eax, 0xFFFF, FL_CF|FL_SF|FL_AF|FL_PF, "sub16 0-1"
        mov eax, 0x80
        sub al, 1
        RF eax, 0x7F, FL_OF|FL_AF, "sub8 80-1"
        mov eax, 0x00010000
        sub eax, 1
        RF eax, 0xFFFF, FL_AF|FL_PF, "sub32 10000-1"
        mov eax, 5
        stc
        sbb ax, 5
        RF eax, 0xFFFF, FL_CF|FL_SF|FL_AF|FL_PF, "sbb16 5-5-c"
        mov eax, 0x8000
        clc
        sbb ax, 1
        RF eax, 0x7FFF, FL_OF|FL_AF|FL_PF, "sbb16 8000-1"
        mov eax, 0x1234
        cmp ax, 0x1234
        RF eax, 0x1234, FL_ZF|FL_PF, "cmp16 equal"
        mov eax, 1
        cmp al, 2
        RF eax, 1, FL_CF|FL_SF|FL_AF|FL_PF, "cmp8 1-2"
        mov eax, 0x80
        cmp al, 1
        RF eax, 0x80, FL_OF|FL_AF, "cmp8 80-1"
        xor eax, eax
        stc
        neg ax
        RF eax, 0, FL_ZF|FL_PF, "neg16 0"
        mov eax, 1
        neg ax
        RF eax, 0xFFFF, FL_CF|FL_SF|FL_AF|FL_PF, "neg16 1"
        mov eax, 0x80
        neg al
        RF eax, 0x80, FL_CF|FL_OF|FL_SF, "neg8 80"

; ------------------------------------------------------------ INC / DEC (CF preserved)
        mov eax, 0xFF
        stc
        inc al
        RF eax, 0, FL_CF|FL_ZF|FL_AF|FL_PF, "inc8 ff cf kept"
        mov eax, 0xFF
        clc
        inc al
        RF eax, 0, FL_ZF|FL_AF|FL_PF, "inc8 ff"
        mov eax, 0x7FFF
        clc
        inc ax
        RF eax, 0x8000, FL_OF|FL_SF|FL_AF|FL_PF, "inc16 7fff"
        mov eax, 0x8000
        stc
        dec ax
        RF eax, 0x7FFF, FL_CF|FL_OF|FL_AF|FL_PF, "dec16 8000"
        xor eax, eax
        clc
        dec eax
        RF eax, 0xFFFFFFFF, FL_SF|FL_AF|FL_PF, "dec32 0"

; ------------------------------------------------------------ AND / OR / XOR / TEST
        mov eax, 0xF0F0
        SETF FL_CF|FL_OF
        and ax, 0x0FF0
        RFM eax, 0xF0, FL_PF, LOGIC, "and16"
        mov eax, 0x8000
        stc
        or ax, 1
        RFM eax, 0x8001, FL_SF, LOGIC, "or16"
        mov eax, 0x12345678
        xor eax, eax
        RFM eax, 0, FL_ZF|FL_PF, LOGIC, "xor32 self"
        mov eax, 0xC3
        xor al, 0x81
        RFM eax, 0x42, FL_PF, LOGIC, "xor8"
        mov eax, 0x80
        test al, 0x80
        RFM eax, 0x80, FL_SF, LOGIC, "test8"
        mov eax, 0xFFFF
        SETF FL_CF|FL_OF|FL_SF
        test ax, 0
        RFM eax, 0xFFFF, FL_ZF|FL_PF, LOGIC, "test16 0"

; ------------------------------------------------------------ MUL / IMUL (only CF/OF defined)
        mov eax, 0x80
        mov bl, 2
        mul bl
        RFM eax, 0x0100, CO, CO, "mul8 80*2"
        mov eax, 3
        mov bl, 4
        mul bl
        RFM eax, 12, 0, CO, "mul8 3*4"
        mov eax, 0x1234
        mov bx, 0x100
        mov edx, 0xFFFFFFFF
        mul bx
        RFM eax, 0x3400, CO, CO, "mul16 lo"
        CHECK16 edx, 0xFFFF0012, "mul16 dx (upper edx kept)"
        mov eax, 0x10000
        mov ebx, 0x10000
        mul ebx
        RFM eax, 0, CO, CO, "mul32 lo"
        CHECK16 edx, 1, "mul32 edx"
        mov eax, 0xFF
        mov bl, 2
        imul bl
        RFM eax, 0xFFFE, 0, CO, "imul8 -1*2"
        mov eax, 0x40
        mov bl, 2
        imul bl
        RFM eax, 0x0080, CO, CO, "imul8 40*2 ovf"
        mov eax, 0xFFFF
        mov bx, 0xFFFF
        imul bx
        RFM eax, 1, 0, CO, "imul16 -1*-1"
        CHECK16 edx, 0, "imul16 dx"
        mov eax, 0x100
        mov bx, 0x100
        imul ax, bx
        RFM eax, 0, CO, CO, "imul16 2op ovf"
        mov ebx, 5
        mov ecx, 0xAAAA0000
        imul cx, bx, -3
        RFM ecx, 0xAAAAFFF1, 0, CO, "imul16 3op"
        mov eax, -7
        mov ebx, 3
        imul eax, ebx
        RFM eax, -21, 0, CO, "imul32 2op"

; ------------------------------------------------------------ DIV / IDIV
        mov eax, 1000
        mov bl, 7
        div bl
        CHECK16 eax, 0x068E, "div8 1000/7"
        mov edx, 1
        xor eax, eax
        mov bx, 3
        div bx
        CHECK16 eax, 0x5555, "div16 quot"
        CHECK16 edx, 1, "div16 rem"
        mov edx, 1
        mov eax, 0
        mov ebx, 0x10
        div ebx
        CHECK16 eax, 0x10000000, "div32 quot"
        CHECK16 edx, 0, "div32 rem"
        mov eax, 0xFFF9
        mov bl, 2
        idiv bl
        CHECK16 eax, 0xFFFD, "idiv8 -7/2"
        mov eax, 0xFFFF9C          ; ax = -100
        mov edx, 0xFFFF
        mov bx, 7
        idiv bx
        CHECK16 eax, 0xFFFFF2, "idiv16 -100/7 quot"
        CHECK16 edx, 0xFFFE, "idiv16 -100/7 rem"
        mov eax, 100
        cdq
        mov ebx, -7
        idiv ebx
        CHECK16 eax, -14, "idiv32 100/-7 quot"
        CHECK16 edx, 2, "idiv32 100/-7 rem"

        ; #DE: divide by zero, quotient overflow (DIV and IDIV), AAM 0. Fault: CS:IP = the instruction.
        mov eax, 0x1234
        mov bl, 0
        RM_TRY .de1
.de1f:  div bl
.de1:   RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 0, "#DE div8 by 0 vector"
        CHECK16 dword [ss:RM_IP], R(.de1f), "#DE div8 by 0 ip"
        CHECK16 dword [ss:RM_CS], 0xF000, "#DE div8 by 0 cs"
        mov eax, 0x1000
        mov bl, 2
        RM_TRY .de2
.de2f:  div bl
.de2:   RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 0, "#DE div8 overflow vector"
        CHECK16 dword [ss:RM_IP], R(.de2f), "#DE div8 overflow ip"
        mov eax, 0x8000
        mov bl, 0xFF
        RM_TRY .de3
.de3f:  idiv bl
.de3:   RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 0, "#DE idiv8 -32768/-1 vector"
        CHECK16 dword [ss:RM_IP], R(.de3f), "#DE idiv8 -32768/-1 ip"
        mov edx, 0x80000000
        xor eax, eax
        mov ecx, 0
        RM_TRY .de4
.de4f:  div ecx
.de4:   RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 0, "#DE div32 by 0 vector"
        CHECK16 dword [ss:RM_IP], R(.de4f), "#DE div32 by 0 ip (66 prefix)"
        mov eax, 0x33
        RM_TRY .de5
.de5f:  db 0xD4, 0x00           ; aam 0
.de5:   RM_ENDTRY
        CHECK16 dword [ss:RM_VEC], 0, "#DE aam 0 vector"
        CHECK16 dword [ss:RM_IP], R(.de5f), "#DE aam 0 ip"

; ------------------------------------------------------------ shifts (SF/ZF/PF defined; OF for count 1; AF undefined)
        mov eax, 0x81
        shl al, 1
        RFM eax, 0x02, FL_CF|FL_OF, LOGIC, "shl8 81,1"
        mov eax, 0x4000
        shl ax, 1
        RFM eax, 0x8000, FL_OF|FL_SF|FL_PF, LOGIC, "shl16 4000,1"
        mov eax, 0x81
        shr al, 1
        RFM eax, 0x40, FL_CF|FL_OF, LOGIC, "shr8 81,1"
        mov eax, 0x81
        sar al, 1
        RFM eax, 0xC0, FL_CF|FL_SF|FL_PF, LOGIC, "sar8 81,1"
        mov eax, 0x00F1
        mov cl, 4
        shl ax, cl
        RFM eax, 0x0F10, 0, FL_CF|SZP, "shl16 f1,4"
        mov eax, 0x8010
        mov cl, 5
        shr ax, cl
        RFM eax, 0x0400, FL_CF|FL_PF, FL_CF|SZP, "shr16 8010,5"
        mov eax, 0x8000
        mov cl, 15
        sar ax, cl
        RFM eax, 0xFFFF, FL_SF|FL_PF, FL_CF|SZP, "sar16 8000,15"
        mov eax, 0x1234
        mov cl, 0
        SETF FL_ARITH
        shl ax, cl
        RF eax, 0x1234, FL_ARITH, "shl16 count 0 keeps flags"
        mov eax, 0x1234
        mov cl, 32
        SETF 0
        shr ax, cl
        RF eax, 0x1234, 0, "shr16 count 32 masked to 0"
        mov eax, 1
        mov cl, 0x21
        shl ax, cl
        RFM eax, 2, 0, FL_CF|SZP, "shl16 count 33 masked to 1"
        mov eax, 0xFFFF
        mov cl, 17
        shl ax, cl
        RFM eax, 0, FL_ZF|FL_PF, SZP, "shl16 count 17 > width"
        mov eax, 0xFF
        mov cl, 9
        shr al, cl
        RFM eax, 0, FL_ZF|FL_PF, SZP, "shr8 count 9 > width"
        mov eax, 0x8000
        mov cl, 20
        sar ax, cl
        RFM eax, 0xFFFF, FL_SF|FL_PF, SZP, "sar16 count 20 > width"
        mov eax, 0x80000001
        mov cl, 33
        shl eax, cl
        RFM eax, 2, FL_CF|FL_OF, FL_CF|FL_OF|SZP, "shl32 count 33 -> 1"
        mov ebx, 0xABCD0000
        mov eax, 0x12345678
        shld eax, ebx, 8
        CHECK16 eax, 0x345678AB, "shld32 8"
        mov ebx, 0x000000CD
        mov eax, 0x12345678
        shrd eax, ebx, 8
        CHECK16 eax, 0xCD123456, "shrd32 8"

; ------------------------------------------------------------ rotates (CF; OF only for count 1)
        mov eax, 0x81
        rol al, 1
        RFM eax, 0x03, FL_CF|FL_OF, CO, "rol8 81,1"
        mov eax, 0x01
        ror al, 1
        RFM eax, 0x80, FL_CF|FL_OF, CO, "ror8 01,1"
        mov eax, 0x40
        clc
        rol al, 1
        RFM eax, 0x80, FL_OF, CO, "rol8 40,1"
        mov eax, 0x1234
        mov cl, 4
        rol ax, cl
        RFM eax, 0x2341, FL_CF, FL_CF, "rol16 1234,4"
        mov eax, 0x1234
        mov cl, 4
        ror ax, cl
        RFM eax, 0x4123, 0, FL_CF, "ror16 1234,4"
        mov eax, 0x1235
        mov cl, 16
        clc
        rol ax, cl
        RFM eax, 0x1235, FL_CF, FL_CF, "rol16 count 16: unchanged, CF=LSB"
        mov eax, 0x12345678
        mov cl, 36
        ror eax, cl
        RFM eax, 0x81234567, FL_CF, FL_CF, "ror32 count 36 masked to 4"
        mov eax, 0x80
        stc
        rcl al, 1
        RFM eax, 0x01, FL_CF|FL_OF, CO, "rcl8 80,1 c=1"
        mov eax, 0x01
        clc
        rcr al, 1
        RFM eax, 0x00, FL_CF, CO, "rcr8 01,1 c=0"
        mov eax, 0x80
        stc
        rcr al, 1
        RFM eax, 0xC0, 0, CO, "rcr8 80,1 c=1"
        mov eax, 0x0001
        mov cl, 4
        stc
        rcr ax, cl
        RFM eax, 0x3000, 0, FL_CF, "rcr16 0001,4 c=1"
        mov eax, 0x5A
        mov cl, 9
        stc
        rcl al, cl
        RFM eax, 0x5A, FL_CF, FL_CF, "rcl8 count 9 (mod 9 = 0)"
        mov eax, 0x8001
        mov cl, 17
        clc
        rcl ax, cl
        RFM eax, 0x8001, 0, FL_CF, "rcl16 count 17 (mod 17 = 0)"
        mov eax, 0x80000000
        mov cl, 1
        clc
        rcl eax, cl
        RFM eax, 0, FL_CF|FL_OF, CO, "rcl32 80000000,1"

; ------------------------------------------------------------ BCD
        mov eax, 0x79
        add al, 0x35
        daa
        RFM eax, 0x14, FL_CF|FL_AF|FL_PF, SZP|FL_CF|FL_AF, "daa 79+35"
        mov eax, 0x35
        sub al, 0x47
        das
        RFM eax, 0x88, FL_CF|FL_AF|FL_SF|FL_PF, SZP|FL_CF|FL_AF, "das 35-47"
        mov eax, 0x12
        add al, 0x34
        daa
        RFM eax, 0x46, 0, SZP|FL_CF|FL_AF, "daa 12+34"
        mov eax, 0x0009
        add al, 8
        aaa
        RFM eax, 0x0107, FL_AF|FL_CF, FL_AF|FL_CF, "aaa 9+8"
        mov eax, 0x0004
        add al, 3
        aaa
        RFM eax, 0x0007, 0, FL_AF|FL_CF, "aaa 4+3"
        mov eax, 0x0102
        sub al, 5
        aas
        RFM eax, 0x0007, FL_AF|FL_CF, FL_AF|FL_CF, "aas 12-5"
        mov eax, 0x3F
        aam
        RFM eax, 0x0603, FL_PF, SZP, "aam 63"
        mov eax, 0x3F
        aam 16
        RFM eax, 0x030F, FL_PF, SZP, "aam16 63"
        mov eax, 0x0607
        aad
        RFM eax, 0x0043, 0, SZP, "aad 67"
        mov eax, 0x0102
        aad 16
        RFM eax, 0x0012, FL_PF, SZP, "aad16 0102"

; ------------------------------------------------------------ BT / BTS / BTR / BTC / BSF / BSR
        mov eax, 0x0010
        bt ax, 4
        RFM eax, 0x10, FL_CF, FL_CF, "bt16 bit4"
        bts ax, 0
        RFM eax, 0x11, 0, FL_CF, "bts16 bit0"
        btr ax, 4
        RFM eax, 0x01, FL_CF, FL_CF, "btr16 bit4"
        btc ax, 0
        RFM eax, 0x00, FL_CF, FL_CF, "btc16 bit0"
        mov ebx, 0x80000000
        mov ecx, 63                 ; register operand: offset mod 32
        bt ebx, ecx
        FLAGSONLY FL_CF, FL_CF, "bt32 reg offset 63 mod 32"
        mov dword [MEMW], 0
        mov dword [MEMW + 4], 0x00000010
        mov cx, 36                  ; memory operand: bit string, word at MEMW+4 bit 4
        bt word [MEMW], cx
        FLAGSONLY FL_CF, FL_CF, "bt16 mem offset 36"
        mov cx, -1                  ; bit 15 of the word at MEMW-2
        mov dword [MEMW - 4], 0
        bts word [MEMW], cx
        FLAGSONLY 0, FL_CF, "bts16 mem offset -1"
        CHECK16 dword [MEMW - 4], 0x80000000, "bts16 mem offset -1 wrote MEMW-1 bit 7"
        mov ecx, 33                 ; bit 1 of the dword at MEMW+8
        mov dword [MEMW + 8], 0xF
        btr dword [MEMW + 4], ecx
        FLAGSONLY FL_CF, FL_CF, "btr32 mem offset 33"
        CHECK16 dword [MEMW + 8], 0xD, "btr32 mem offset 33 result"
        mov eax, 0x0100
        mov ebx, 0x5555
        bsf bx, ax
        RFM ebx, 8, 0, FL_ZF, "bsf16 100"
        mov eax, 0x0110
        bsr bx, ax
        RFM ebx, 8, 0, FL_ZF, "bsr16 110"
        mov eax, 0x80000001
        bsr ebx, eax
        RFM ebx, 31, 0, FL_ZF, "bsr32"
        bsf ebx, eax
        RFM ebx, 0, 0, FL_ZF, "bsf32"
        xor eax, eax
        bsf bx, ax
        FLAGSONLY FL_ZF, FL_ZF, "bsf16 zero source"

; ------------------------------------------------------------ sign extension, XCHG, XLAT
        mov eax, 0x12345680
        cbw
        CHECK16 eax, 0x1234FF80, "cbw"
        mov eax, 0x8000
        mov edx, 0x12345678
        cwd
        CHECK16 edx, 0x1234FFFF, "cwd"
        mov eax, 0x7000
        cwd
        CHECK16 edx, 0x12340000, "cwd positive"
        mov eax, 0x12348000
        cwde
        CHECK16 eax, 0xFFFF8000, "cwde"
        mov eax, 0x80000000
        cdq
        CHECK16 edx, 0xFFFFFFFF, "cdq"
        mov eax, 0x11112222
        mov ebx, 0x33334444
        xchg ax, bx
        CHECK16 eax, 0x11114444, "xchg16 ax"
        CHECK16 ebx, 0x33332222, "xchg16 bx"
        mov dword [MEMW], 0xAAAABBBB
        mov ecx, 0xCCCCDDDD
        xchg [MEMW], ecx
        CHECK16 ecx, 0xAAAABBBB, "xchg32 mem reg"
        CHECK16 dword [MEMW], 0xCCCCDDDD, "xchg32 mem"
        mov bx, R(xtab)
        mov eax, 0x12345605
        cs xlatb
        CHECK16 eax, 0x12345650, "xlat cs: override"
        mov dword [MEMW], 0x44332211
        mov bx, MEMW
        mov al, 2
        xlatb
        CHECK16 eax, 0x12345633, "xlat ds"

; ------------------------------------------------------------ LEA, 16-bit addressing forms
        mov bx, 0x1000
        mov si, 0x20
        mov di, 0x300
        mov bp, 0x4000
        mov eax, 0xFFFF0000
        lea ax, [bx + si]
        CHECK16 eax, 0xFFFF1020, "lea [bx+si]"
        xor eax, eax
        lea ax, [bx + di + 0x10]
        CHECK16 eax, 0x1310, "lea [bx+di+d8]"
        lea ax, [bp + si - 1]
        CHECK16 eax, 0x401F, "lea [bp+si-1]"
        lea ax, [bp + di + 0x1234]
        CHECK16 eax, 0x5534, "lea [bp+di+d16]"
        lea ax, [si + 7]
        CHECK16 eax, 0x27, "lea [si+d8]"
        lea ax, [di]
        CHECK16 eax, 0x300, "lea [di]"
        lea ax, [bp + 8]
        CHECK16 eax, 0x4008, "lea [bp+d8]"
        lea ax, [bx - 0x2000]
        CHECK16 eax, 0xF000, "lea [bx-d16] wraps"
        lea ax, [0x1234]
        CHECK16 eax, 0x1234, "lea [d16]"
        mov bx, 0xFFFF
        mov si, 2
        lea ax, [bx + si]
        CHECK16 eax, 1, "lea [bx+si] 16-bit wrap"
        mov eax, 0xFFFFFFFF
        lea eax, [bx + si]
        CHECK16 eax, 1, "lea eax,[bx+si] zero-extends"
        mov ebx, 0x12345678
        mov esi, 1
        mov eax, 0xAAAA0000
        lea ax, [ebx + esi * 4 + 0x10]
        CHECK16 eax, 0xAAAA568C, "lea ax,[ebx+esi*4+d8] (67) truncates"
        lea eax, [ebx + esi * 8 - 8]
        CHECK16 eax, 0x12345678, "lea eax,[ebx+esi*8-8]"

; ------------------------------------------------------------ segments: overrides and defaults
        mov word [0x600 + 0x20], 0x1111         ; 0000:0620
        mov ax, 0x1000
        mov es, ax
        mov word [es:0x620], 0x2222             ; 1000:0620 = 0x10620
        xor eax, eax
        mov ax, [es:0x620]
        CHECK16 eax, 0x2222, "es: override"
        mov ax, [0x620]
        CHECK16 eax, 0x1111, "ds default"
        mov bx, 0x1000
        mov ds, bx                              ; DS=0x1000, SS=0
        mov bp, 0x600
        mov ax, [bp + 0x20]
        CHECK16 eax, 0x1111, "bp default ss"
        mov ax, [ds:bp + 0x20]
        CHECK16 eax, 0x2222, "ds:[bp] override"
        mov bx, 0x600
        mov ax, [bx + 0x20]
        CHECK16 eax, 0x2222, "bx default ds"
        mov ax, [ss:bx + 0x20]
        CHECK16 eax, 0x1111, "ss:[bx] override"
        mov ax, 0x0FFF
        mov fs, ax
        mov ax, [fs:0x630]                      ; 0xFFF0 + 0x630 = 0x10620
        CHECK16 eax, 0x2222, "fs: seg*16+off"
        mov ax, 0x1062
        mov gs, ax
        mov ax, [gs:0]
        CHECK16 eax, 0x2222, "gs: seg*16"
        xor ax, ax
        mov ds, ax
        mov es, ax

; ------------------------------------------------------------ 32-bit operands / addresses in real mode
        mov eax, 0x12345678
        add eax, 0x11111111
        CHECK16 eax, 0x23456789, "66 add eax"
        mov bx, sp
        push eax
        mov cx, sp
        pop edx
        sub bx, cx
        movzx ebx, bx
        CHECK16 ebx, 4, "66 push eax: sp-4"
        CHECK16 edx, 0x23456789, "66 pop edx"
        push word 0x1234
        mov cx, sp
        pop ax
        mov bx, sp
        sub bx, cx
        movzx ebx, bx
        CHECK16 ebx, 2, "push16: sp-2"
        mov dword [0x640], 0xCAFEBABE
        mov esi, 0x600
        mov ebx, 0x10
        mov eax, [esi + ebx * 4]               ; 67 prefix
        CHECK16 eax, 0xCAFEBABE, "67 [esi+ebx*4]"
        mov ecx, 0x640
        mov eax, [ecx]
        CHECK16 eax, 0xCAFEBABE, "67 [ecx]"
        mov eax, 0
        mov ax, [0x642]
        CHECK16 eax, 0xCAFE, "16-bit load keeps upper eax"
        movzx eax, byte [0x643]
        CHECK16 eax, 0xCA, "movzx"
        movsx eax, byte [0x643]
        CHECK16 eax, 0xFFFFFFCA, "movsx"

; ------------------------------------------------------------ unreal mode
        ; Load FS and GS with a 4 GiB flat descriptor in protected mode, go back to real mode
        ; and reload FS from real mode: the base becomes seg*16 but the limit stays 4 GiB.
        cli
        mov bx, unreal_gdtr - 0xF0000
        o32 lgdt [cs:bx]
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp short .pm1
.pm1:   mov bx, 8
        mov fs, bx
        mov gs, bx
        and al, 0xFE
        mov cr0, eax
        jmp short .rm1
.rm1:   xor ax, ax
        mov fs, ax
        mov dword [fs:dword 0x100000], 0x600DF00D
        mov dword [fs:dword 0x100004], 0x12345678
        mov eax, [fs:dword 0x100000]
        CHECK16 eax, 0x600DF00D, "unreal fs: 1 MiB read back"
        mov eax, [gs:dword 0x100004]
        CHECK16 eax, 0x12345678, "unreal gs: base 0 from pmode"
        mov ax, 0x1000
        mov fs, ax
        mov eax, [fs:dword 0xF0000]            ; 0x10000 + 0xF0000
        CHECK16 eax, 0x600DF00D, "unreal fs reload: base=seg*16, limit kept"
        mov ax, fs
        movzx eax, ax
        CHECK16 eax, 0x1000, "unreal fs selector"
        mov esi, 0x100000
        mov eax, [gs:esi + 4]
        CHECK16 eax, 0x12345678, "unreal gs:[esi+4]"

; ------------------------------------------------------------ A20 (port 0x92 bit 1)
        xor ax, ax
        mov fs, ax
        mov dword [fs:dword 0x8000], 0x11112222
        mov dword [fs:dword 0x108000], 0xAAAA5555
        mov eax, [fs:dword 0x108000]
        CHECK16 eax, 0xAAAA5555, "a20 on: 0x108000 distinct"
        in al, 0x92
        and al, 0xFC                            ; bit 0 = fast reset: never write 1
        out 0x92, al
        in al, 0x92
        movzx eax, al
        and al, 2
        CHECK16 eax, 0, "a20 disabled readback"
        mov eax, [fs:dword 0x108000]
        CHECK16 eax, 0x11112222, "a20 off: 0x108000 aliases 0x8000"
        mov dword [fs:dword 0x108000], 0x33334444
        mov eax, [fs:dword 0x8000]
        CHECK16 eax, 0x33334444, "a20 off: write to 0x108000 lands at 0x8000"
        mov ax, 0xFFFF
        mov es, ax
        mov eax, [es:0x8010]                   ; FFFF0+8010 = 0x108000 -> wraps to 0x8000
        CHECK16 eax, 0x33334444, "a20 off: FFFF:8010 wraps"
        in al, 0x92
        and al, 0xFE
        or al, 2
        out 0x92, al
        in al, 0x92
        movzx eax, al
        and al, 2
        CHECK16 eax, 2, "a20 enabled readback"
        mov eax, [fs:dword 0x108000]
        CHECK16 eax, 0xAAAA5555, "a20 on again: 0x108000"
        mov eax, [es:0x8010]
        CHECK16 eax, 0xAAAA5555, "a20 on: FFFF:8010 = 0x108000"
        xor ax, ax
        mov es, ax

        jmp finish16

%include "reset.inc"
