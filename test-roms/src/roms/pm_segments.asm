; pm_segments: 32-bit protected-mode segment descriptor loads and checks.
;
; Covers segment-register loads with exact vectors and error codes (error code = selector & 0xFFFC):
; null selectors (allowed in DS/ES/FS/GS, #GP(0) in SS), selectors beyond the GDT/LDT limit and TI=1
; with a null LDTR (#GP(sel)), system descriptors and execute-only code in data registers (#GP(sel)),
; not-present data (#NP(sel)) vs not-present stack (#SS(sel)), SS type/DPL/RPL rules (#GP(sel)),
; data-register privilege rules (max(CPL,RPL) <= DPL for data and non-conforming code, none for
; conforming code); LDT loads (LLDT of a non-LDT descriptor -> #GP(sel)); far JMP/CALL checks (data
; segment, not present, DPL/RPL for conforming and non-conforming code, offset beyond the CS limit ->
; #GP(0)); the descriptor cache (base used until the register is reloaded), the accessed bit set on
; load, and LAR/LSL/VERR/VERW. Every fault handler records vector, error code and faulting EIP; the
; test resumes at a recovery label (sys.inc TRY).
;
; Limit/type/null-use checks on the *memory accesses themselves* (#GP(0)/#SS(0) for a data or stack
; limit violation, expand-down segments, writes to read-only segments, null selector use) are in
; pm_strict.asm, because QEMU TCG does not perform them (nor the #GP(0) of a far CALL beyond the
; target CS limit: QEMU reports #GP(selector)).
;
; Expectations from the Intel SDM Vol. 3A 3.4.2 (segment selectors, null selector), 3.4.5 (segment
; descriptors), 3.4.5.1 (code/data types, expand-down, conforming), 5.5-5.8 (privilege checks for data
; access, SS loads, control transfers, conforming code), 5.10 (LAR/LSL/VERR/VERW), 6.13 (error code
; format), 6.15 "#NP", "#SS", "#GP" (conditions), Vol. 2 "MOV—Move to/from segment registers"
; (Protected Mode Exceptions), "JMP"/"CALL" (far transfers), "LLDT".
%include "common.inc"
%include "sys.inc"

LDT_ADDR equ 0x8000

S_LIM    equ 0x40   ; data RW base 0x100000 limit 0xFFF
S_RO     equ 0x48   ; data read-only
S_XO     equ 0x50   ; code execute-only
S_XR     equ 0x58   ; code execute/read
S_NP     equ 0x60   ; data RW not present
S_LDT    equ 0x68   ; LDT descriptor
S_D3     equ 0x70   ; data RW DPL3
S_ED     equ 0x78   ; expand-down RW, base 0x200000, limit 0xFFF, B=1
S_CONF0  equ 0x80   ; conforming code DPL0 readable
S_STK    equ 0x88   ; data RW base 0 limit 0x7FFFF
S_C3     equ 0x90   ; non-conforming code DPL3
S_CONF3  equ 0x98   ; conforming code DPL3
S_NOA    equ 0xA0   ; data, accessed bit clear
S_CLIM   equ 0xA8   ; code base 0 limit 0xFFFFF (byte granular)
S_CNP    equ 0xB0   ; code not present
S_ED16   equ 0xB8   ; expand-down B=0
S_D1     equ 0xC0   ; data DPL1
S_BASE   equ 0xC8   ; data base 0x100000, 4 GiB
S_END    equ 0xD0   ; first selector beyond the GDT limit

xgdt:
        DESC 0x100000, 0xFFF, 0x93, 0x4        ; 0x40
        DESC 0, 0xFFFFF, 0x91, 0xC             ; 0x48
        DESC 0, 0xFFFFF, 0x99, 0xC             ; 0x50
        DESC 0, 0xFFFFF, 0x9B, 0xC             ; 0x58
        DESC 0, 0xFFFFF, 0x13, 0xC             ; 0x60 (P=0)
        DESC LDT_ADDR, 0x0F, 0x82, 0x0         ; 0x68
        DESC 0, 0xFFFFF, 0xF3, 0xC             ; 0x70
        DESC 0x200000, 0xFFF, 0x97, 0x4        ; 0x78
        DESC 0, 0xFFFFF, 0x9F, 0xC             ; 0x80
        DESC 0, 0x7FFFF, 0x93, 0x4             ; 0x88
        DESC 0, 0xFFFFF, 0xFB, 0xC             ; 0x90
        DESC 0, 0xFFFFF, 0xFF, 0xC             ; 0x98
        DESC 0, 0xFFFFF, 0x92, 0xC             ; 0xA0
        DESC 0, 0xFFFFF, 0x9B, 0x4             ; 0xA8
        DESC 0, 0xFFFFF, 0x1B, 0xC             ; 0xB0 (P=0)
        DESC 0x300000, 0xFFF, 0x97, 0x0        ; 0xB8
        DESC 0, 0xFFFFF, 0xB3, 0xC             ; 0xC0
        DESC 0x100000, 0xFFFFF, 0x93, 0xC      ; 0xC8
xgdt_end:
ldt_tmpl:
        DESC 0x123000, 0xFFF, 0x93, 0x4        ; LDT sel 0x04
        DESC 0, 0xFFFFF, 0x13, 0xC             ; LDT sel 0x0C (P=0)
ldt_tmpl_end:

rom_start:
        INIT16
        RESET_GUARD
        PM32_ENTER xgdt, xgdt_end, pm_main

        bits 32
; FAULT {insn}, vec, err, "name": run insn expecting the exception (checks vector, error, EIP).
%macro FAULT 4
        TRY %%r
%%f:    %1
%%r:    ENDTRY
        EXPECT_EXC %2, %3, %%f, %4
%endmacro
; NOFAULT {insn}, "name"
%macro NOFAULT 2
        TRY %%r
        %1
%%r:    ENDTRY
        EXPECT_NOEXC %2
%endmacro
; LOADDS sel, vec, err, "name" / LOADSS ... : load a selector, expect a fault.
%macro LOADF 5 ; segreg, sel, vec, err, name
        mov ax, %2
        FAULT {mov %1, ax}, %3, %4, %5
%endmacro
%macro LOADOK 3 ; segreg, sel, name
        mov ax, %2
        NOFAULT {mov %1, ax}, %3
%endmacro

pm_main:
        ; LDT and markers
        mov esi, ldt_tmpl
        mov edi, LDT_ADDR
        mov ecx, ldt_tmpl_end - ldt_tmpl
        rep movsb
        mov dword [0x123000], 0x4C445421        ; read through LDT sel 0x04
        mov dword [0x100010], 0xBA5E0001
        mov dword [0x110010], 0xBA5E0002

; ------------------------------------------------------------ null selectors
        LOADOK ds, 0, "mov ds,0 (null) allowed"
        LOADOK es, 3, "mov es,3 (null, rpl3) allowed"
        mov ax, 0
        mov fs, ax
        mov ax, fs
        movzx eax, ax
        mov bx, SEL_DATA0
        mov fs, bx
        CHECK32 eax, 0, "fs reads back null"
        LOADF ss, 0, 13, 0, "mov ss,0"
        LOADF ss, 3, 13, 0, "mov ss,3"
        FAULT {jmp 0:0}, 13, 0, "jmp far null"

; ------------------------------------------------------------ table limits, LDT
        LOADF ds, S_END, 13, S_END, "mov ds beyond gdt limit"
        LOADF es, 0xFFFB, 13, 0xFFF8, "mov es,fffb beyond gdt limit (rpl not in error code)"
        mov ax, S_LDT
        lldt ax
        mov ax, 0x04
        NOFAULT {mov ds, ax}, "mov ds,ldt sel 04"
        mov ax, 0x04
        mov ds, ax
        mov eax, [0]
        mov bx, SEL_DATA0
        mov ds, bx
        CHECK32 eax, 0x4C445421, "ldt segment base 0x123000"
        LOADF ds, 0x14, 13, 0x14, "mov ds beyond ldt limit"
        LOADF gs, 0x0C, 11, 0x0C, "mov gs,ldt not present"
        mov ax, S_LIM
        FAULT {lldt ax}, 13, S_LIM, "lldt data descriptor"
        xor eax, eax
        lldt ax
        LOADF ds, 0x04, 13, 0x04, "mov ds,ti=1 with null ldtr"
        sldt eax
        CHECK32 eax, 0, "sldt null"

; ------------------------------------------------------------ descriptor types
        LOADF ds, S_LDT, 13, S_LDT, "mov ds,ldt descriptor"
        LOADF es, SEL_TSS, 13, SEL_TSS, "mov es,tss descriptor"
        LOADF fs, S_XO, 13, S_XO, "mov fs,execute-only code"
        LOADOK gs, S_XR, "mov gs,execute/read code"
        mov ax, SEL_DATA0
        mov gs, ax
        LOADF ds, S_NP, 11, S_NP, "mov ds,not present"
        LOADF es, S_CNP, 11, S_CNP, "mov es,not present code"
        LOADOK ds, S_RO, "mov ds,read-only data"

; ------------------------------------------------------------ data-register privilege (CPL0)
        LOADF ds, SEL_DATA0 | 3, 13, SEL_DATA0, "mov ds,dpl0 rpl3"
        LOADF ds, S_D1 | 2, 13, S_D1, "mov ds,dpl1 rpl2"
        LOADOK ds, S_D1 | 1, "mov ds,dpl1 rpl1"
        LOADOK ds, S_D3 | 3, "mov ds,dpl3 rpl3"
        LOADOK ds, S_D3, "mov ds,dpl3 rpl0"
        LOADF es, S_XR | 1, 13, S_XR, "mov es,nonconforming code dpl0 rpl1"
        LOADOK es, S_CONF0 | 3, "mov es,conforming code dpl0 rpl3 (no check)"
        mov ax, S_D3 | 3
        mov ds, ax
        mov ax, ds
        movzx eax, ax
        mov bx, SEL_DATA0
        mov ds, bx
        CHECK32 eax, S_D3 | 3, "ds keeps rpl"

; ------------------------------------------------------------ SS rules
        LOADF ss, S_RO, 13, S_RO, "mov ss,read-only"
        LOADF ss, S_XR, 13, S_XR, "mov ss,code"
        LOADF ss, S_D3 | 3, 13, S_D3, "mov ss,dpl3 rpl3 at cpl0"
        LOADF ss, S_D3, 13, S_D3, "mov ss,dpl3 rpl0 at cpl0"
        LOADF ss, SEL_DATA0 | 3, 13, SEL_DATA0, "mov ss,rpl3 at cpl0"
        LOADF ss, S_NP, 12, S_NP, "mov ss,not present -> #SS"
        LOADF ss, S_LDT, 13, S_LDT, "mov ss,system"
        LOADF ss, S_END, 13, S_END, "mov ss,beyond limit"
        mov ax, S_STK
        NOFAULT {mov ss, ax}, "mov ss,writable dpl0"
        mov ax, ss
        movzx eax, ax
        mov bx, SEL_DATA0
        mov ss, bx
        CHECK32 eax, S_STK, "ss loaded"
        push dword S_NP
        FAULT {pop ss}, 12, S_NP, "pop ss not present"
        add esp, 4
        push dword S_RO
        FAULT {pop ss}, 13, S_RO, "pop ss read-only"
        add esp, 4

; ------------------------------------------------------------ far JMP / CALL
        FAULT {jmp SEL_DATA0:0}, 13, SEL_DATA0, "jmp far data segment"
        FAULT {jmp S_CNP:0}, 11, S_CNP, "jmp far not present"
        FAULT {jmp S_C3:0}, 13, S_C3, "jmp far nonconforming dpl3 from cpl0"
        FAULT {jmp S_CONF3:0}, 13, S_CONF3, "jmp far conforming dpl3 from cpl0"
        FAULT {jmp (SEL_CODE0 | 3):0}, 13, SEL_CODE0, "jmp far rpl3 nonconforming"
        FAULT {jmp S_LDT:0}, 13, S_LDT, "jmp far ldt descriptor"
        FAULT {jmp S_CLIM:0x100000}, 13, 0, "jmp far beyond cs limit"
        FAULT {jmp S_END:0}, 13, S_END, "jmp far beyond gdt limit"
        TRY .conf_r
        jmp S_CONF0:.conf
.conf:  mov ax, cs
        jmp SEL_CODE0:.conf_back
.conf_back:
        movzx eax, ax
.conf_r: ENDTRY
        EXPECT_NOEXC "jmp far conforming dpl0"
        CHECK32 eax, S_CONF0, "cs after jmp to conforming"
        TRY .conf2_r
        call (S_CONF0 | 3):.conf2       ; RPL ignored for conforming; CS.RPL = CPL
        jmp .conf2_r
.conf2: mov bx, cs
        retf
.conf2_r: ENDTRY
        EXPECT_NOEXC "call far conforming rpl3"
        movzx eax, bx
        CHECK32 eax, S_CONF0, "cs rpl = cpl after call to conforming"
        TRY .c16_r
        jmp SEL_CODE16:R(.c16)
        bits 16
.c16:   mov ax, cs
        jmp dword SEL_CODE0:.c16_back
        bits 32
.c16_back:
.c16_r: ENDTRY
        EXPECT_NOEXC "jmp to 16-bit code and back"
        movzx eax, ax
        CHECK32 eax, SEL_CODE16, "cs in 16-bit segment"

; ------------------------------------------------------------ descriptor cache, base, accessed bit
        mov ax, S_BASE
        mov fs, ax
        mov eax, [fs:0x10]
        CHECK32 eax, 0xBA5E0001, "fs base 0x100000"
        mov byte [GDT_ADDR + S_BASE + 4], 0x11  ; base 23:16 -> 0x110000
        mov eax, [fs:0x10]
        CHECK32 eax, 0xBA5E0001, "cached base until reload"
        mov ax, S_BASE
        mov fs, ax
        mov eax, [fs:0x10]
        CHECK32 eax, 0xBA5E0002, "new base after reload"
        mov ax, SEL_DATA0
        mov fs, ax
        movzx eax, byte [GDT_ADDR + S_NOA + 5]
        CHECK32 eax, 0x92, "accessed bit clear before load"
        mov ax, S_NOA
        mov es, ax
        mov ax, SEL_DATA0
        mov es, ax
        movzx eax, byte [GDT_ADDR + S_NOA + 5]
        CHECK32 eax, 0x93, "accessed bit set by load"

; ------------------------------------------------------------ LAR / LSL / VERR / VERW
        mov eax, 0x12345678
        mov bx, S_LIM
        lsl eax, bx
        CHECK32 eax, 0xFFF, "lsl byte granular"
        mov bx, SEL_DATA0
        lsl eax, bx
        CHECK32 eax, 0xFFFFFFFF, "lsl page granular"
        mov bx, S_LDT
        lsl eax, bx
        CHECK32 eax, 0x0F, "lsl ldt descriptor"
        mov eax, 0x5555
        mov bx, S_END
        lsl eax, bx
        pushfd
        and dword [esp], FL_ZF
        pop ecx
        CHECK32 ecx, 0, "lsl beyond limit zf=0"
        CHECK32 eax, 0x5555, "lsl beyond limit dest unchanged"
        mov bx, SEL_DATA0
        lar eax, bx
        and eax, 0x00F0FF00
        CHECK32 eax, 0x00C09300, "lar flat data"
        mov bx, S_NP
        lar eax, bx
        pushfd
        and dword [esp], FL_ZF
        pop ecx
        and eax, 0x00F0FF00
        CHECK32 ecx, FL_ZF, "lar not present zf=1"
        CHECK32 eax, 0x00C01300, "lar not present"
        mov bx, S_D1 | 2
        lar eax, bx
        pushfd
        and dword [esp], FL_ZF
        pop ecx
        CHECK32 ecx, 0, "lar rpl2 dpl1 zf=0"

%macro VERIFY 4 ; insn, sel, expected zf, name
        mov bx, %2
        %1 bx
        pushfd
        and dword [esp], FL_ZF
        pop ecx
        CHECK32 ecx, %3, %4
%endmacro
        VERIFY verr, S_XO, 0, "verr execute-only"
        VERIFY verr, S_XR, FL_ZF, "verr execute/read"
        VERIFY verr, S_RO, FL_ZF, "verr read-only data"
        VERIFY verw, S_RO, 0, "verw read-only data"
        VERIFY verw, SEL_DATA0, FL_ZF, "verw data"
        VERIFY verw, S_D3 | 3, FL_ZF, "verw dpl3 rpl3"
        VERIFY verr, S_D1 | 2, 0, "verr dpl1 rpl2"
        VERIFY verr, S_CONF0 | 3, FL_ZF, "verr conforming rpl3"
        VERIFY verw, S_XR, 0, "verw code"
        VERIFY verr, S_LDT, 0, "verr system"
        VERIFY verr, 0, 0, "verr null"
        VERIFY verw, S_NP, FL_ZF, "verw not present (P not checked)"

        jmp finish32

%include "reset.inc"
